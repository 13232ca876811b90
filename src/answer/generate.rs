//! The generate stage: the model writes its reply. The caller hears only
//! how far it has got ([`Progress::Writing`]), never the text: the text is
//! shown once checked. Generation stops as soon as the reply is certain to
//! be the `NOT_IN_KB` marker.

use std::time::Instant;

use super::options::AskOptions;
use super::types::{Progress, NOT_IN_KB};
use crate::engine::{ChatPrompt, Finish, Generation, Generator, RefusalGate, SamplingParams};
use crate::error::Result;

/// What the model wrote, and how it went.
pub(super) struct Generated {
    /// The generation as the engine reports it.
    pub generation: Generation,
    /// When the model's first answer text came, in ms since `start`.
    pub first_token_ms: Option<f64>,
    /// Why it ended, from the caller's side: cancelled by the caller, or
    /// stopped by us once the marker was certain (that is a `Stop`).
    pub finish: Finish,
}

/// Generates a reply to each prompt (one per reading, decoded as one
/// batch), telling `on_progress` how far they have got (see
/// [`super::ask`]); `start` is when the question arrived.
pub(super) fn generate(
    generator: &dyn Generator,
    prompts: &[ChatPrompt],
    sampling: &[SamplingParams],
    opts: &AskOptions,
    start: Instant,
    on_progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Vec<Generated>> {
    let mut raw = vec![String::new(); prompts.len()];
    let mut pieces = 0usize;
    let mut first_token_ms = None;
    let mut cancelled_by_client = false;
    let gate = RefusalGate {
        marker: NOT_IN_KB,
        threshold: opts.refusal_threshold,
    };
    let alone = prompts.len() == 1;
    let generations =
        generator.generate_many(prompts, sampling, Some(&gate), &mut |row, piece| {
            let step = if piece.is_empty() {
                Progress::Waiting
            } else {
                raw[row].push_str(piece);
                pieces += 1;
                first_token_ms.get_or_insert_with(|| ms(start));
                Progress::Writing { tokens: pieces }
            };
            if !on_progress(step) {
                cancelled_by_client = true;
                return false;
            }
            // Once a lone reply is certainly the marker, the rest is not
            // needed (a batch runs on: the marker is short, and stopping
            // one row would stop all).
            let head = raw[row].trim_start();
            !(alone && head.len() >= NOT_IN_KB.len() && head.starts_with(NOT_IN_KB))
        })?;
    Ok(generations
        .into_iter()
        .map(|generation| {
            let finish = if cancelled_by_client {
                Finish::Cancelled
            } else if generation.finish == Finish::Cancelled {
                Finish::Stop // we stopped it: the marker was enough
            } else {
                generation.finish
            };
            tracing::debug!(raw = %generation.text, finish = ?generation.finish, "generated");
            Generated {
                generation,
                first_token_ms,
                finish,
            }
        })
        .collect())
}

/// Milliseconds since `since`.
pub(super) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
