//! `POST /v1/chat/completions`, compatible with OpenAI's Chat Completions
//! API, so existing chat front ends and the `openai` client libraries can
//! talk to kbqa.
//!
//! The model names the knowledge base: `kbqa` is the default one,
//! `kbqa:NAME` another (`/v1/models` lists them); each is retrieval over
//! that knowledge base plus the local LLM. The last user
//! message is the question; earlier user messages make a follow-up
//! self-contained (see [`crate::chat`]); system messages are ignored (the
//! grounding rules are not negotiable). Answers carry `[n]` markers in the
//! text and, in the extra field `kbqa` of the final message or chunk, the
//! citations, the self-contained question and whether the answer is
//! grounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::pool::Cancel;
use super::service::{admit, event_stream, finished, kb_of_model, run_answer, ApiJson, Progress};
use super::state::State;
use crate::answer::{Answer, AskOptions, AskOverrides, Question};
use crate::engine::Finish;

/// The request; fields OpenAI defines and kbqa does not use are accepted
/// and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// `kbqa` (the default knowledge base) or `kbqa:NAME` (see `/v1/models`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Stream `chat.completion.chunk`s.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most answer tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// The newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (default: the configured one, greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Strings that end the answer.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<usize>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Up to four.
    Many(Vec<String>),
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or a list of content parts (only text parts are read).
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// `text`, `image_url`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl Message {
    fn text(&self) -> String {
        match &self.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        }
    }
}

/// The text of the question to answer: the last message (the user's),
/// made self-contained from the user's earlier messages. The caller parses
/// it ([`Question::parse`]); this checks only the conversation's shape.
pub fn question_of(messages: &[Message]) -> Result<String, ApiError> {
    let last = messages
        .last()
        .ok_or_else(|| ApiError::BadRequest("messages must not be empty".into()))?;
    if last.role != "user" {
        return Err(ApiError::BadRequest(format!(
            "the last message must be from the user, not {:?}",
            last.role
        )));
    }
    let earlier: Vec<String> = messages[..messages.len() - 1]
        .iter()
        .filter(|m| m.role == "user")
        .map(Message::text)
        .collect();
    Ok(crate::chat::standalone_question(&earlier, &last.text()))
}

fn finish_reason(a: &Answer) -> &'static str {
    match a.finish {
        Some(Finish::Length) => "length",
        _ => "stop",
    }
}

/// The extra field with what the OpenAI format has no place for.
fn extension(a: &Answer) -> Value {
    json!({
        "question": a.question,
        "grounded": a.grounded,
        "status": a.status,
        "confidence": a.confidence,
        "refusal": a.refusal,
        "citations": a.citations,
        "passages": a.passages,
        "timings": a.timings,
    })
}

fn usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.usage.prompt_tokens,
        "completion_tokens": a.usage.completion_tokens,
        "total_tokens": a.usage.prompt_tokens + a.usage.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": a.usage.cached_prompt_tokens },
    })
}

impl ChatRequest {
    /// The settings this request overrides (checked by
    /// [`AskOptions::resolve`], like the CLI's flags).
    pub fn overrides(&self) -> AskOverrides {
        AskOverrides {
            max_new_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            ..AskOverrides::default()
        }
    }

    /// The stop strings: at most four; empty ones are dropped.
    fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        let mut stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) if v.len() <= 4 => v.clone(),
            Some(Stop::Many(_)) => {
                return Err(ApiError::BadRequest("at most 4 stop strings".into()))
            }
        };
        stop.retain(|s| !s.is_empty());
        Ok(stop)
    }
}

/// `POST /v1/chat/completions`. The whole request is checked before the
/// engine or a worker is asked for.
pub async fn chat_completions(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let kb = kb_of_model(&state, &req.model)?;
    state.authorize(&headers, kb)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::BadRequest("only n = 1 is supported".into()));
    }
    let text = question_of(&req.messages)?;
    let mut opts = AskOptions::resolve(state.kb_config(kb)?, &req.overrides())?;
    opts.sampling.stop = req.stop_strings()?;
    let question = Question::parse(&text, opts.k)?;
    let admitted = admit(&state, kb).await?;
    let cancel = admitted.cancel();
    let rx = run_answer(&state, admitted, question, opts);
    let completion = Completion {
        id: completion_id(),
        model: req.model.clone(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
    };
    if req.stream {
        Ok(stream(rx, completion))
    } else {
        complete(rx, cancel, &completion).await
    }
}

/// Waits for the answer and sends it as one `chat.completion`.
async fn complete(
    rx: mpsc::Receiver<Progress>,
    cancel: Cancel,
    completion: &Completion,
) -> Result<Response, ApiError> {
    // Dropped with this future when the client goes away: stops the answer.
    let guard = cancel.on_drop();
    let a = finished(rx).await?;
    guard.disarm();
    Ok(Json(json!({
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": a.answer },
            "finish_reason": finish_reason(&a),
        }],
        "usage": usage(&a),
        "kbqa": extension(&a),
    }))
    .into_response())
}

/// One completion's id and creation time, which each of its chunks
/// repeats, and whether its stream ends with a usage chunk.
struct Completion {
    id: String,
    /// The model asked for (it names the knowledge base).
    model: String,
    created: u64,
    include_usage: bool,
}

impl Completion {
    /// One `chat.completion.chunk`.
    fn chunk(&self, delta: Value, finish: Option<&str>, extra: Option<Value>) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if let Some(x) = extra {
            c["kbqa"] = x;
        }
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

/// Streams the answer as `chat.completion.chunk`s, then `[DONE]`: while it
/// works, SSE comments saying how far it is; once checked, its whole text
/// in one chunk (never text the checks could still withdraw).
fn stream(rx: mpsc::Receiver<Progress>, completion: Completion) -> Response {
    let first = completion.chunk(json!({ "role": "assistant", "content": "" }), None, None);
    event_stream(
        rx,
        vec![Event::default().data(first.to_string())],
        move |p| {
            let mut out: Vec<Value> = Vec::new();
            let mut done = false;
            match p {
                // Clients skip comments; a person watching the raw stream
                // sees the answer is under way.
                Progress::Step(s) => return vec![Event::default().comment(format!("kbqa: {s}"))],
                Progress::Done(a) => {
                    out.push(completion.chunk(json!({ "content": a.answer }), None, None));
                    out.push(completion.chunk(
                        json!({}),
                        Some(finish_reason(&a)),
                        Some(extension(&a)),
                    ));
                    if completion.include_usage {
                        let mut u = completion.chunk(json!({}), None, None);
                        u["choices"] = json!([]);
                        u["usage"] = usage(&a);
                        out.push(u);
                    }
                    done = true;
                }
                Progress::Failed(e) => out.push(e.to_json()),
            }
            let mut events: Vec<Event> = out
                .iter()
                .map(|v| Event::default().data(v.to_string()))
                .collect();
            if done {
                events.push(Event::default().data("[DONE]"));
            }
            events
        },
    )
}

/// A `chatcmpl-…` id: a process-wide counter, mixed with the time the
/// process made its first id so that ids differ across restarts. Unique
/// within a process: multiplying by an odd number and XOR-ing with a
/// constant are both one-to-one on `u64`.
fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "chatcmpl-{:016x}",
        start ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: &[(&str, &str)]) -> Vec<Message> {
        v.iter()
            .map(|(r, c)| Message {
                role: r.to_string(),
                content: Some(Content::Text(c.to_string())),
            })
            .collect()
    }

    #[test]
    fn follow_ups_use_earlier_user_turns() {
        let m = msgs(&[
            ("system", "ignored"),
            ("user", "什么是RLHF？"),
            ("assistant", "RLHF是基于人类反馈的强化学习[1]。"),
            ("user", "它和SFT有什么区别？"),
        ]);
        assert_eq!(question_of(&m).unwrap(), "RLHF和SFT有什么区别？");
        assert!(question_of(&msgs(&[("user", "hi"), ("assistant", "x")])).is_err());
        assert!(question_of(&[]).is_err());
    }

    #[test]
    fn content_parts_are_read() {
        let m: Vec<Message> = serde_json::from_str(
            r#"[{"role":"user","content":[{"type":"text","text":"What is SFT?"},{"type":"image_url","image_url":{"url":"x"}}]}]"#,
        )
        .unwrap();
        assert_eq!(question_of(&m).unwrap(), "What is SFT?");
    }

    #[test]
    fn completion_ids_differ() {
        let (a, b) = (completion_id(), completion_id());
        assert_ne!(a, b);
        assert!(
            a.starts_with("chatcmpl-") && a.len() == "chatcmpl-".len() + 16,
            "{a}"
        );
    }
}
