//! The generate stage: the model writes its reply, streamed to the caller
//! as it comes, except text that may still turn out to be the `NOT_IN_KB`
//! marker (held back until it is clearly not), and nothing once it is.

use std::time::Instant;

use super::options::AskOptions;
use super::types::NOT_IN_KB;
use crate::engine::{ChatPrompt, Finish, Generation, Generator, RefusalGate};
use crate::error::Result;

/// What the model wrote, and how the stream went.
pub(super) struct Generated {
    /// The generation as the engine reports it.
    pub generation: Generation,
    /// When the first answer text was passed on, in ms since `start`.
    pub first_token_ms: Option<f64>,
    /// Why it ended, from the caller's side: cancelled by the caller, or
    /// stopped by us once the marker was certain (that is a `Stop`).
    pub finish: Finish,
}

/// Generates the reply to `prompt`, passing answer text to `on_text` (see
/// [`super::ask`]); `start` is when the question arrived.
pub(super) fn generate(
    generator: &dyn Generator,
    prompt: &ChatPrompt,
    opts: &AskOptions,
    start: Instant,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated> {
    let mut raw = String::new();
    let mut decided: Option<bool> = None; // Some(true) = an answer, Some(false) = a refusal
    let mut first_token_ms = None;
    let mut cancelled_by_client = false;
    let gate = RefusalGate {
        marker: NOT_IN_KB,
        threshold: opts.refusal_threshold,
    };
    let generation = generator.generate(prompt, &opts.sampling, Some(&gate), &mut |piece| {
        if piece.is_empty() {
            // A heartbeat: the caller may cancel while nothing arrives.
            if on_text("") {
                return true;
            }
            cancelled_by_client = true;
            return false;
        }
        raw.push_str(piece);
        if decided.is_none() {
            let head = raw.trim_start();
            if head.len() >= NOT_IN_KB.len() || !NOT_IN_KB.starts_with(head) {
                decided = Some(!head.starts_with(NOT_IN_KB));
                if decided == Some(true) {
                    first_token_ms = Some(ms(start));
                    if !on_text(head) {
                        cancelled_by_client = true;
                        return false;
                    }
                }
            }
            return decided != Some(false);
        }
        if decided == Some(true) && !on_text(piece) {
            cancelled_by_client = true;
            return false;
        }
        decided == Some(true)
    })?;
    // A short answer may still be held back as a possible marker prefix.
    if decided.is_none() {
        let head = generation.text.trim_start();
        if !head.is_empty() && !head.starts_with(NOT_IN_KB) {
            first_token_ms = Some(ms(start));
            on_text(head);
        }
    }
    let finish = if cancelled_by_client {
        Finish::Cancelled
    } else if generation.finish == Finish::Cancelled {
        Finish::Stop // we stopped it: the marker was enough
    } else {
        generation.finish
    };
    tracing::debug!(raw = %generation.text, finish = ?generation.finish, "generated");
    Ok(Generated {
        generation,
        first_token_ms,
        finish,
    })
}

/// Milliseconds since `since`.
pub(super) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
