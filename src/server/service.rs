//! What the front ends share: request decoding, admission and running an
//! answer, and streaming it as server-sent events.
//!
//! The JSON API ([`super::api`]), the OpenAI endpoint ([`super::openai`])
//! and Slack ([`super::slack`]) differ only in their wire formats; each
//! decodes a request, parses its question once, then goes through the same
//! [`admit`] → [`run_answer`] → [`finished`] / [`event_stream`] path. This
//! module imports none of them (nor `mod.rs`), so they depend on it and
//! never on each other.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::pool::{deadline_in, Cancel, Slot, Stopped};
use super::state::{Engine, State};
use crate::answer::Progress as Step;
use crate::answer::{Answer, AskOptions, Question};

/// The model name clients use for the default knowledge base: retrieval
/// plus the chat model, as one. `kbqa:NAME` is knowledge base NAME.
pub const MODEL: &str = "kbqa";

/// The OpenAI model id of knowledge base `name` (`default` is [`MODEL`]).
pub fn model_id(state: &State, name: &str) -> String {
    if name == state.config().kb {
        MODEL.to_string()
    } else {
        format!("{MODEL}:{name}")
    }
}

/// The knowledge base an OpenAI model id names, or 404 listing the ids.
pub fn kb_of_model<'a>(state: &State, model: &'a str) -> Result<Option<&'a str>, ApiError> {
    let kb = match model.strip_prefix(MODEL) {
        Some("") => return Ok(None),
        Some(rest) => rest.strip_prefix(':'),
        None => None,
    };
    match kb {
        Some(name) if state.kb_names().contains(&name) => Ok(Some(name)),
        _ => {
            let ids: Vec<String> = state
                .kb_names()
                .iter()
                .map(|n| model_id(state, n))
                .collect();
            Err(ApiError::UnknownKb(format!(
                "no model {model:?}: this server's models are {} (one per knowledge base)",
                ids.join(", ")
            )))
        }
    }
}

/// How often an idle event stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The request body as JSON of type `T`: 413 when too large, 400 with the
/// decoder's message when malformed or of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<State>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(state.config().server.max_body_bytes)
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        decode(&bytes).map(ApiJson)
    }
}

/// Decodes a JSON request body (public for the fuzz target).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::BadRequest(format!("invalid request: {e}")),
            _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
        }
    })
}

/// One event of an answer in progress, from its worker to its request.
pub(crate) enum Progress {
    /// How far it has got (no text: text is sent once checked, in `Done`).
    Step(Step),
    /// The checked answer.
    Done(Box<Answer>),
    /// It failed (or was stopped by the deadline or shutdown).
    Failed(ApiError),
}

/// What an answer request needs before it can run: a worker slot (or
/// 429), a ready engine and a deadline.
pub(crate) struct Admitted {
    engine: Engine,
    slot: Slot,
    cancel: Cancel,
}

impl Admitted {
    /// The answer's cancellation handle (for a guard that stops it when
    /// the client goes away).
    pub(crate) fn cancel(&self) -> Cancel {
        self.cancel.clone()
    }
}

/// Admits one answer (see [`Admitted`]). Call it once the request is
/// validated: a bad request must get its 4xx, not wait for a worker.
///
/// The engine is taken once a worker is free, so an answer that waited in
/// the queue uses the knowledge base live when it starts. `kb` names the
/// knowledge base (the default if `None`); one not yet open opens now.
pub(crate) async fn admit(state: &State, kb: Option<&str>) -> Result<Admitted, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let deadline = deadline_in(state.config().server.deadline_secs);
    let slot = state.pool().admit(deadline).await.inspect_err(|e| {
        if let ApiError::Busy { .. } = e {
            state.metrics().rejected();
        }
    })?;
    let engine = state.engine_for(kb).await?;
    Ok(Admitted {
        engine,
        slot,
        cancel: state.pool().cancel_handle(deadline),
    })
}

/// Runs an admitted answer on a blocking thread, sending its progress to
/// the returned channel. Dropping the receiver stops the answer at its next
/// token, and frees the worker.
pub(crate) fn run_answer(
    state: &Arc<State>,
    admitted: Admitted,
    question: Question,
    opts: AskOptions,
) -> mpsc::Receiver<Progress> {
    let (tx, rx) = mpsc::channel(64);
    let state = state.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let Admitted {
            engine,
            slot,
            cancel,
        } = admitted;
        let mut stopped = None;
        let result = crate::answer::ask(
            &engine.kb,
            engine.llm.as_ref(),
            &question,
            &opts,
            &mut |step| match forward(&tx, step, &cancel) {
                Ok(()) => true,
                Err(why) => {
                    stopped = Some(why);
                    false
                }
            },
        );
        drop(slot);
        let event = outcome(&state, result, stopped);
        let _ = send_until_stopped(&tx, event, &cancel);
    });
    rx
}

/// Passes a step on to the request, or says why the answer must stop.
/// Every step is a chance to stop; only some are sent: each stage once,
/// and the token count every [`WRITING_EVERY`] tokens.
fn forward(tx: &mpsc::Sender<Progress>, step: Step, cancel: &Cancel) -> Result<(), Stopped> {
    if let Some(why) = cancel.stopped() {
        return Err(why);
    }
    let sent = match step {
        Step::Waiting => false,
        Step::Writing { tokens } => tokens == 1 || tokens % WRITING_EVERY == 0,
        Step::Retrieving | Step::Checking => true,
    };
    if !sent {
        return if tx.is_closed() {
            Err(Stopped::Client)
        } else {
            Ok(())
        };
    }
    send_until_stopped(tx, Progress::Step(step), cancel)
}

/// How often (in tokens) a stream is told how far the model has written.
const WRITING_EVERY: usize = 8;

/// The last event of an answer, counted and logged.
fn outcome(state: &State, result: crate::Result<Answer>, stopped: Option<Stopped>) -> Progress {
    match (result, stopped) {
        (Ok(a), None) => {
            state.metrics().answer(&a);
            tracing::info!(
                grounded = a.grounded,
                retrieve_ms = tenths(a.timings.retrieve_ms),
                prefill_ms = tenths(a.timings.prefill_ms),
                decode_ms = tenths(a.timings.decode_ms),
                prompt_tokens = a.usage.prompt_tokens,
                completion_tokens = a.usage.completion_tokens,
                "answered"
            );
            Progress::Done(Box::new(a))
        }
        (Ok(a), Some(why)) => {
            state.metrics().answer(&a);
            state.metrics().cancelled();
            tracing::info!(
                reason = ?why,
                completion_tokens = a.usage.completion_tokens,
                "answer stopped"
            );
            Progress::Failed(match why {
                Stopped::Deadline => ApiError::Timeout(state.config().server.deadline_secs),
                Stopped::Client | Stopped::Shutdown => {
                    ApiError::Unavailable("the answer was stopped".into())
                }
            })
        }
        (Err(e), _) => Progress::Failed(e.into()),
    }
}

/// Milliseconds to a tenth, for logs.
pub(crate) fn tenths(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Waits for the end of an answer whose text nobody streams.
pub(crate) async fn finished(mut rx: mpsc::Receiver<Progress>) -> Result<Box<Answer>, ApiError> {
    while let Some(p) = rx.recv().await {
        match p {
            Progress::Step(_) => {}
            Progress::Done(a) => return Ok(a),
            Progress::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::Internal("the answer worker ended early".into()))
}

/// Sends `p` from a blocking worker, waiting while the channel is full (a
/// slow reader) but not past the answer's deadline, shutdown, or the
/// client going away: a client that stops reading cannot hold a worker.
fn send_until_stopped(
    tx: &mpsc::Sender<Progress>,
    mut p: Progress,
    cancel: &Cancel,
) -> Result<(), Stopped> {
    loop {
        match tx.try_send(p) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopped::Client),
            Err(mpsc::error::TrySendError::Full(back)) => {
                if let Some(why) = cancel.stopped() {
                    return Err(why);
                }
                p = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Turns an answer's progress into server-sent events with `convert`
/// (after `first`). When the client goes away the stream is dropped, the
/// next send fails, and dropping `progress` stops the answer. A failure
/// is logged here (the response status, 200, was sent long before).
pub(crate) fn event_stream(
    mut progress: mpsc::Receiver<Progress>,
    first: Vec<Event>,
    mut convert: impl FnMut(Progress) -> Vec<Event> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        for e in first {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        while let Some(p) = progress.recv().await {
            if let Progress::Failed(e) = &p {
                e.log();
            }
            for e in convert(p) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_say_what_is_wrong() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Q {
            question: String,
        }
        let e = decode::<Q>(b"{\"question\": 5}").unwrap_err();
        assert!(e.message().contains("invalid type"), "{}", e.message());
        let e = decode::<Q>(b"{\"question\": ").unwrap_err();
        assert!(e.message().starts_with("malformed JSON"), "{}", e.message());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
