//! What wraps every route: request ids, the request log line and metrics
//! ([`observe`]), and the API-key check of the `/v1` routes
//! ([`require_key`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use super::service::tenths;
use super::state::State;

/// Gives each request an id (the client's `x-request-id` when sane), a
/// span its logs carry, one log line with status and latency, and its
/// count in the metrics; the id is echoed in the response.
pub(crate) async fn observe(
    AxumState(state): AxumState<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| state.next_request_id());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, %method, route = %route);
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let seconds = start.elapsed().as_secs_f64();
    state.metrics().request(&route, status.as_u16(), seconds);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = tenths(seconds * 1e3),
            "responded"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// 401 unless the request bears an API key (when any is set). Checked
/// before readiness: a client learns its key is wrong while models load.
pub(crate) async fn require_key(
    AxumState(state): AxumState<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    if !state.needs_api_key() || state.api_key_ok(req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}
