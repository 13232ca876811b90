//! kbqa's own API: `/v1/search`, `/v1/ask` (JSON or server-sent events)
//! and `/v1/models`. Bodies are the CLI's `--json` output.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::{admit, event_stream, finished, run_answer, ApiJson, Progress, State};
use crate::answer::AskOptions;
use crate::retrieve::{check_query, SearchMode};

/// Most passages a request may ask for.
pub const MAX_K: usize = 50;

/// How often an idle event stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// `POST /v1/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query.
    pub query: String,
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

pub(crate) fn check_k(k: usize) -> Result<usize, ApiError> {
    if k == 0 || k > MAX_K {
        return Err(ApiError::InvalidQuery(format!(
            "k must be between 1 and {MAX_K}, not {k}"
        )));
    }
    Ok(k)
}

/// Generation settings from the config, overridden per request.
pub(crate) fn ask_options(
    state: &State,
    k: Option<usize>,
    mode: Option<SearchMode>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
) -> Result<AskOptions, ApiError> {
    let mut opts = AskOptions::from_config(&state.config);
    let context = state.config.answer.context;
    let s = &mut opts.sampling;
    s.max_new_tokens = max_tokens.unwrap_or(s.max_new_tokens);
    if s.max_new_tokens == 0 || s.max_new_tokens > context {
        return Err(ApiError::BadRequest(format!(
            "max_tokens must be between 1 and {context}"
        )));
    }
    s.temperature = temperature.unwrap_or(s.temperature);
    if !(0.0..=2.0).contains(&s.temperature) {
        return Err(ApiError::BadRequest(
            "temperature must be between 0 and 2".into(),
        ));
    }
    s.top_p = top_p.unwrap_or(s.top_p);
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(ApiError::BadRequest("top_p must be in (0, 1]".into()));
    }
    s.seed = seed.unwrap_or(s.seed);
    opts.k = check_k(k.unwrap_or(opts.k))?;
    opts.mode = mode.unwrap_or(opts.mode);
    Ok(opts)
}

/// `POST /v1/search` → `{"results": [...]}`, as `kbqa search --json`.
pub async fn search(
    AxumState(state): AxumState<Arc<State>>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let k = check_k(req.k.unwrap_or(state.config.search.k))?;
    check_query(&req.query, k)?;
    let engine = state.engine()?;
    let mode = req.mode.unwrap_or(state.config.search.mode);
    let hits = tokio::task::spawn_blocking(move || engine.kb.search(&req.query, k, mode))
        .await
        .map_err(|e| ApiError::Internal(format!("search failed: {e}")))??;
    Ok(Json(serde_json::json!({ "results": hits })).into_response())
}

/// `POST /v1/ask` → the answer JSON of `kbqa ask --json`, or with
/// `"stream": true` the events `token` (`{"text"}`), `citations`, `done`
/// (the answer JSON, authoritative: when it says `grounded: false` the
/// streamed text was withdrawn and `answer` replaces it) and `error`.
pub async fn ask(
    AxumState(state): AxumState<Arc<State>>,
    ApiJson(req): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let opts = ask_options(
        &state,
        req.k,
        req.mode,
        req.max_tokens,
        req.temperature,
        req.top_p,
        req.seed,
    )?;
    check_query(&req.question, opts.k)?;
    let question = crate::chat::standalone_question(&req.history, &req.question);
    check_query(&question, opts.k)?;
    let admitted = admit(&state).await?;
    let cancel = admitted.cancel.clone();
    let rx = run_answer(&state, admitted, question, opts);
    if !req.stream {
        // Dropped with this future when the client goes away: stops the answer.
        let guard = cancel.on_drop();
        let answer = finished(rx).await?;
        guard.disarm();
        return Ok(Json(answer).into_response());
    }
    Ok(event_stream(rx, Vec::new(), |p| match p {
        Progress::Text(t) => vec![Event::default()
            .event("token")
            .json_data(serde_json::json!({ "text": t }))
            .unwrap_or_default()],
        Progress::Done(a) => vec![
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

/// `GET /v1/models`: the one model, `kbqa` (retrieval + the local LLM).
pub async fn models(AxumState(state): AxumState<Arc<State>>) -> Json<serde_json::Value> {
    let generator = state.llm.get().map(|llm| llm.name());
    Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": super::openai::MODEL,
            "object": "model",
            "created": 0,
            "owned_by": "kbqa",
            "generator": generator,
            "embedding": state.config.models.embedding,
        }],
    }))
}
