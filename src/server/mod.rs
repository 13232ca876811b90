//! `kbqa serve`: the HTTP layer over [`crate::Kb`] and [`crate::answer`].
//!
//! Thin on purpose: handlers decode a request, call the library, encode
//! the result. What the layer itself owns is what only a server needs:
//! - readiness: the port opens at once, `/readyz` turns ready once the
//!   index is open and the models are loaded;
//! - admission ([`pool`]): answers run on a few blocking workers behind a
//!   bounded queue (429 when full), each with a deadline, and stop when
//!   their client goes away; searches bypass the queue;
//! - one error type ([`error::ApiError`]) mapped to statuses in one place;
//! - API keys, request ids, logs with stage timings, Prometheus metrics;
//! - graceful shutdown: on SIGTERM/Ctrl-C no new answers are admitted,
//!   running ones get `shutdown_grace_secs` to finish, then are cut.
//!
//! Routes: `/v1/search`, `/v1/ask`, `/v1/models` ([`api`]),
//! `/v1/chat/completions` ([`openai`]), the Slack bot's `/slack/events`
//! and `/slack/commands` ([`slack`]), and `/healthz`, `/readyz`,
//! `/metrics`, `/admin/reload` and the chat page at `/`.
//!
//! Imports run one way: this file → the front ends ([`api`], [`openai`],
//! [`slack`], the operator routes) → [`service`] (what they share) →
//! [`state`], [`pool`], [`metrics`] → [`error`]. No front end imports
//! another or this file; Slack is reached only through [`slack::routes`],
//! which brings its own state.

pub mod api;
pub mod error;
pub mod metrics;
mod middleware;
pub mod openai;
mod ops;
pub mod pool;
pub mod service;
pub mod slack;
pub mod state;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

use error::ApiError;
pub use state::State;

/// The application: every route, with its middleware. Tests drive it with
/// `app(state).oneshot(request)`; [`serve`] puts it on a socket.
pub fn app(state: Arc<State>) -> Router {
    let v1 = Router::new()
        .route("/v1/search", post(api::search))
        .route("/v1/ask", post(api::ask))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(api::models))
        .route_layer(from_fn_with_state(state.clone(), middleware::require_key));
    Router::new()
        .route("/", get(ops::page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/reload", post(ops::reload))
        .merge(v1)
        .with_state::<()>(state.clone())
        // Signed by Slack, not by API key; with its own state.
        .merge(slack::routes(state.clone()))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config().server.max_body_bytes))
        .layer(from_fn_with_state(state, middleware::observe))
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains:
/// no new answers, running ones get `server.shutdown_grace_secs`.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config().server.shutdown_grace_secs);
    watch::spawn(state.clone());
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                "shutting down: finishing running answers (at most {} s)",
                grace.as_secs()
            );
            state.start_draining();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!("grace period over: cutting running answers");
                state.pool().stop_all();
            });
        })
        .await
}
