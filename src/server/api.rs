//! kbqa's own API: `/v1/search`, `/v1/ask` (JSON or server-sent events)
//! and `/v1/models`. Bodies are the CLI's `--json` output.
//!
//! Each handler validates the whole request (options, then the question,
//! parsed once) before it asks for the engine or a worker, so a bad
//! request gets its 4xx even while the models load or the queue is full.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::service::{admit, event_stream, finished, model_id, run_answer, ApiJson, Progress};
use super::state::State;
use crate::answer::{AskOptions, AskOverrides, Question};
use crate::retrieve::{Query, SearchMode, MAX_K};

/// `POST /v1/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query.
    pub query: String,
    /// The knowledge base (default: the server's default one).
    #[serde(default)]
    pub kb: Option<String>,
    /// How many passages (default `search.k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// `hybrid` (default), `bm25` or `vector`.
    #[serde(default)]
    pub mode: Option<SearchMode>,
}

/// `POST /v1/ask`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// The knowledge base (default: the server's default one).
    #[serde(default)]
    pub kb: Option<String>,
    /// Passages given to the model (default `answer.k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Retriever.
    #[serde(default)]
    pub mode: Option<SearchMode>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// The user's earlier questions in this conversation, oldest first: a
    /// follow-up ("它和SFT有什么区别？") is made self-contained from them.
    #[serde(default)]
    pub history: Vec<String>,
    /// Most answer tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl AskRequest {
    /// The settings this request overrides (checked by
    /// [`AskOptions::resolve`], like the CLI's flags).
    pub fn overrides(&self) -> AskOverrides {
        AskOverrides {
            k: self.k,
            mode: self.mode,
            max_new_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            ..AskOverrides::default()
        }
    }
}

/// `POST /v1/search` → `{"results": [...]}`, as `kbqa search --json`.
pub async fn search(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let kb = req.kb.as_deref();
    state.authorize(&headers, kb)?;
    let config = state.kb_config(kb)?;
    let k = req.k.unwrap_or(config.search.k);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::InvalidQuery(format!(
            "k must be between 1 and {MAX_K}, not {k}"
        )));
    }
    let query = Query::parse(&req.query, k)?;
    let mode = req.mode.unwrap_or(config.search.mode);
    let engine = state.engine_for(kb).await?;
    let hits = tokio::task::spawn_blocking(move || engine.kb.search(&query, mode))
        .await
        .map_err(|e| ApiError::Internal(format!("search failed: {e}")))??;
    Ok(Json(serde_json::json!({ "results": hits })).into_response())
}

/// `POST /v1/ask` → the answer JSON of `kbqa ask --json`, or with
/// `"stream": true` the events `progress` (`{"stage", "tokens"}`, while it
/// works), then, once checked, `answer` (`{"text", "status"}`),
/// `citations` and `done` (the answer JSON); or `error`. No text is sent
/// before the checks have passed it.
pub async fn ask(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let kb = req.kb.as_deref();
    state.authorize(&headers, kb)?;
    let opts = AskOptions::resolve(state.kb_config(kb)?, &req.overrides())?;
    // Parsed once, after the rewrite. An empty question never refers back,
    // so it stays empty and is refused here like any other.
    let text = crate::chat::standalone_question(&req.history, &req.question);
    let question = Question::parse(&text, opts.k)?;
    let admitted = admit(&state, kb).await?;
    let cancel = admitted.cancel();
    let rx = run_answer(&state, admitted, question, opts);
    if !req.stream {
        // Dropped with this future when the client goes away: stops the answer.
        let guard = cancel.on_drop();
        let answer = finished(rx).await?;
        guard.disarm();
        return Ok(Json(answer).into_response());
    }
    Ok(event_stream(rx, Vec::new(), |p| match p {
        Progress::Step(s) => vec![Event::default()
            .event("progress")
            .json_data(s)
            .unwrap_or_default()],
        Progress::Done(a) => vec![
            Event::default()
                .event("answer")
                .json_data(serde_json::json!({ "text": a.answer, "status": a.status }))
                .unwrap_or_default(),
            Event::default()
                .event("citations")
                .json_data(serde_json::json!({ "citations": a.citations }))
                .unwrap_or_default(),
            Event::default()
                .event("done")
                .json_data(&a)
                .unwrap_or_default(),
        ],
        Progress::Failed(e) => vec![Event::default()
            .event("error")
            .json_data(e.to_json())
            .unwrap_or_default()],
    }))
}

/// `GET /v1/models`: one model per knowledge base (retrieval over it plus
/// the local LLM), which is how OpenAI clients choose one: `kbqa` for the
/// default, `kbqa:NAME` for the others; those the request's key may use.
pub async fn models(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    // A key limited to some knowledge bases sees only those.
    let data: Vec<serde_json::Value> = state
        .usable_kbs(&headers)
        .into_iter()
        .map(|name| {
            let description = state.config().kbs.get(name).map(|k| k.description.as_str());
            serde_json::json!({
                "id": model_id(&state, name),
                "object": "model",
                "created": 0,
                "owned_by": "kbqa",
                "kb": name,
                "description": description.unwrap_or(""),
                "generator": state.generator_name(),
                "embedding": state.config().models.embedding,
            })
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data }))
}
