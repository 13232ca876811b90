//! The routes for operators and browsers rather than API clients:
//! `/healthz`, `/readyz`, `/metrics`, `/admin/reload`, the chat page at
//! `/`, and the JSON 404 for every unknown route.

use std::sync::Arc;

use axum::extract::{RawQuery, State as AxumState};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::metrics::CONTENT_TYPE;
use super::state::{Reloaded, State};

/// `GET /healthz`: the process is up (models may still be loading).
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once the index is open and the models are loaded,
/// 503 before that and once shutdown began.
pub(crate) async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let engine = state.engine()?;
    let m = &engine.kb.generation().manifest;
    Ok(Json(json!({
        "status": "ready",
        "index": m.generation,
        "chunks": m.chunk_count,
        "model": engine.llm.name(),
        "auth": state.needs_api_key(),
        "kbs": state.kb_names().len(),
    }))
    .into_response())
}

/// `GET /metrics`, in Prometheus' text format.
pub(crate) async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let pool = state.pool();
    let body = state.metrics().render(pool.queued(), pool.running());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// The query of `/admin/reload`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadQuery {
    /// The knowledge base to reload (default: the server's default one).
    kb: Option<String>,
}

/// `POST /admin/reload[?kb=NAME]` (admin key): makes the index generation
/// that `kbqa index` last built for that knowledge base live, without a
/// restart. Requests running keep the generation they started with; new
/// ones use the new one; other knowledge bases are not touched. On error
/// the live generation stays.
pub(crate) async fn reload(
    AxumState(state): AxumState<Arc<State>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.admin_enabled() {
        return Err(ApiError::NotFound(
            "/admin/reload (set KBQA_ADMIN_KEYS to enable it)".into(),
        ));
    }
    if !state.admin_key_ok(&headers) {
        return Err(ApiError::Unauthorized);
    }
    let query: ReloadQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let name = query.kb.unwrap_or_else(|| state.config().kb.clone());
    let Reloaded {
        generation,
        previous,
        chunks,
    } = state.reload(&name).await?;
    Ok(Json(json!({
        "kb": name,
        "reloaded": previous.as_deref() != Some(generation.as_str()),
        "index": generation,
        "previous": previous,
        "chunks": chunks,
    }))
    .into_response())
}

/// Every unknown route: a JSON 404 like every other error.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

/// `GET /`: the chat page.
pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
