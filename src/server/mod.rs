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
//! Routes: `/v1/search`, `/v1/ask` ([`api`]), `/v1/chat/completions`
//! ([`openai`]), `/v1/models`, `/healthz`, `/readyz`, `/metrics`, the
//! chat page at `/`, and the Slack bot's `/slack/events` and
//! `/slack/commands` ([`crate::bot::slack`]).

pub mod api;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod pool;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State as AxumState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::answer::{Answer, AskOptions};
use crate::llm::Generator;
use crate::{Config, Kb};
use error::ApiError;
use metrics::Metrics;
use pool::{Cancel, Pool, Slot, Stopped};

/// What a request answers with: the knowledge base live when it started
/// (a reload does not change it under the request) and the chat model.
#[derive(Clone)]
pub struct Engine {
    /// The open index.
    pub kb: Arc<Kb>,
    /// The chat model.
    pub llm: Arc<dyn Generator>,
}

/// Shared by every request.
pub struct State {
    config: Config,
    /// The live knowledge base (replaced whole by a reload).
    kb: RwLock<Option<Arc<Kb>>>,
    llm: OnceLock<Arc<dyn Generator>>,
    /// SHA-256 of each admin key (for `/admin/reload`).
    admin_keys: Vec<[u8; 32]>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    pool: Pool,
    metrics: Metrics,
    /// SHA-256 of each API key (compared in constant time).
    keys: Vec<[u8; 32]>,
    /// Set once shutdown began: no new answers.
    draining: AtomicBool,
    next_request: AtomicU64,
    /// The Slack routes' state, when a signing secret is configured.
    slack: Option<Arc<crate::bot::slack::Slack>>,
}

impl State {
    /// A server for `config`, not yet ready (see [`State::set_engine`]).
    pub fn new(config: Config) -> Arc<State> {
        let keys = digests(&config.server.api_keys);
        Arc::new(State {
            pool: Pool::new(config.server.workers, config.server.queue),
            kb: RwLock::new(None),
            llm: OnceLock::new(),
            admin_keys: digests(&config.server.admin_keys),
            reloading: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            keys,
            draining: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            slack: crate::bot::slack::Slack::from_config(&config.slack),
            config,
        })
    }

    /// Makes the server ready.
    pub fn set_engine(&self, kb: Kb, llm: Arc<dyn Generator>) {
        *self.kb.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(kb));
        let _ = self.llm.set(llm);
    }

    /// Makes `kb` the live knowledge base; requests already running keep
    /// the one they started with. Returns the one it replaces.
    pub fn replace_kb(&self, kb: Kb) -> Option<Arc<Kb>> {
        self.kb
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Arc::new(kb))
    }

    fn live_kb(&self) -> Option<Arc<Kb>> {
        self.kb.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The resolved configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The Slack routes' state (`None`: the routes answer 404).
    pub(crate) fn slack(&self) -> Option<Arc<crate::bot::slack::Slack>> {
        self.slack.clone()
    }

    fn engine(&self) -> Result<Engine, ApiError> {
        match (self.live_kb(), self.llm.get()) {
            (Some(kb), Some(llm)) => Ok(Engine {
                kb,
                llm: llm.clone(),
            }),
            _ => Err(ApiError::Unavailable(
                "the index and models are still loading".into(),
            )),
        }
    }

    /// Whether `presented` is one of the API keys.
    fn key_ok(&self, presented: &str) -> bool {
        key_matches(&self.keys, presented)
    }
}

fn digests(keys: &[String]) -> Vec<[u8; 32]> {
    keys.iter()
        .map(|k| Sha256::digest(k.as_bytes()).into())
        .collect()
}

/// Whether `presented` is one of `keys` (digests). Every key is compared,
/// over fixed-length digests, so timing reveals neither which key nor how
/// much of one matched.
fn key_matches(keys: &[[u8; 32]], presented: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut ok = 0u8;
    for k in keys {
        let diff = k.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        ok |= u8::from(diff == 0);
    }
    ok == 1
}

/// The bearer token of a request, if any.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The application: every route, with its middleware.
pub fn router(state: Arc<State>) -> Router {
    let v1 = Router::new()
        .route("/v1/search", post(api::search))
        .route("/v1/ask", post(api::ask))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(api::models))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/admin/reload", post(reload))
        .merge(v1)
        // Signed by Slack, not by API key.
        .route("/slack/events", post(crate::bot::slack::events))
        .route("/slack/commands", post(crate::bot::slack::commands))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = std::time::Duration::from_secs(state.config.server.shutdown_grace_secs);
    let app = router(state.clone());
    let draining = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                "shutting down: finishing running answers (at most {} s)",
                grace.as_secs()
            );
            draining.draining.store(true, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!("grace period over: cutting running answers");
                draining.pool.stop_all();
            });
        })
        .await
}

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
                    ApiError::TooLarge(state.config.server.max_body_bytes)
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
    /// A piece of answer text.
    Text(String),
    /// The checked answer.
    Done(Box<Answer>),
    /// It failed (or was stopped by the deadline or shutdown).
    Failed(ApiError),
}

/// What an answer request needs before it can run: a ready engine, a
/// worker slot (or 429) and a deadline.
pub(crate) struct Admitted {
    engine: Engine,
    slot: Slot,
    cancel: Cancel,
}

/// Admits one answer (see [`Admitted`]).
pub(crate) async fn admit(state: &Arc<State>) -> Result<Admitted, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let engine = state.engine()?;
    let deadline = pool::deadline_in(state.config.server.deadline_secs);
    let slot = match state.pool.admit(deadline).await {
        Ok(s) => s,
        Err(e) => {
            if let ApiError::Busy { .. } = e {
                state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
    };
    Ok(Admitted {
        engine,
        slot,
        cancel: state.pool.cancel_handle(deadline),
    })
}

/// Runs an admitted answer on a blocking thread, sending its progress to
/// the returned channel. Dropping the receiver stops the answer at its next
/// token, and frees the worker.
pub(crate) fn run_answer(
    state: &Arc<State>,
    admitted: Admitted,
    question: String,
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
            &mut |t| {
                if let Some(why) = cancel.stopped() {
                    stopped = Some(why);
                    return false;
                }
                // A heartbeat while a model server is silent: only the checks.
                if t.is_empty() {
                    if tx.is_closed() {
                        stopped = Some(Stopped::Client);
                        return false;
                    }
                    return true;
                }
                match send_until_stopped(&tx, Progress::Text(t.to_string()), &cancel) {
                    Ok(()) => true,
                    Err(why) => {
                        stopped = Some(why);
                        false
                    }
                }
            },
        );
        drop(slot);
        let event = match (result, stopped) {
            (Ok(a), None) => {
                state.metrics.answer(&a);
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
                state.metrics.answer(&a);
                state.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    reason = ?why,
                    completion_tokens = a.usage.completion_tokens,
                    "answer stopped"
                );
                Progress::Failed(match why {
                    Stopped::Deadline => ApiError::Timeout(state.config.server.deadline_secs),
                    _ => ApiError::Unavailable("the answer was stopped".into()),
                })
            }
            (Err(e), _) => Progress::Failed(e.into()),
        };
        let _ = send_until_stopped(&tx, event, &cancel);
    });
    rx
}

/// Milliseconds to a tenth, for logs.
fn tenths(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Waits for the end of an answer whose text nobody streams.
pub(crate) async fn finished(mut rx: mpsc::Receiver<Progress>) -> Result<Box<Answer>, ApiError> {
    while let Some(p) = rx.recv().await {
        match p {
            Progress::Text(_) => {}
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
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// Turns an answer's progress into server-sent events with `convert`
/// (after `first`). When the client goes away the stream is dropped, the
/// next send fails, and dropping `progress` stops the answer.
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
            for e in convert(p) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(api::KEEP_ALIVE))
        .into_response()
}

/// Request ids, logs, metrics, and a JSON body for axum's own rejections.
async fn observe(AxumState(state): AxumState<Arc<State>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| {
            format!(
                "req-{:06x}",
                state.next_request.fetch_add(1, Ordering::Relaxed)
            )
        });
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, %method, route = %route);
    let mut response = {
        use tracing::Instrument;
        next.run(req).instrument(span.clone()).await
    };
    let status = response.status();
    let seconds = start.elapsed().as_secs_f64();
    state.metrics.request(&route, status.as_u16(), seconds);
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

async fn require_key(
    AxumState(state): AxumState<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    if state.keys.is_empty() {
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        Some(k) if state.key_ok(k) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// `POST /admin/reload` (admin key): makes the index generation that
/// `kbqa index` last built live, without a restart. Requests running keep
/// the generation they started with; new ones use the new one. On error
/// the live generation stays.
async fn reload(
    AxumState(state): AxumState<Arc<State>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if state.admin_keys.is_empty() {
        return Err(ApiError::NotFound(
            "/admin/reload (set KBQA_ADMIN_KEYS to enable it)".into(),
        ));
    }
    if !bearer(&headers).is_some_and(|k| key_matches(&state.admin_keys, k)) {
        return Err(ApiError::Unauthorized);
    }
    let _one_at_a_time = state.reloading.lock().await;
    let live = state.engine()?.kb;
    let config = state.config.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let kb = Kb::open_current(&config, &mut |_| {})?;
        kb.share_embedder(&live);
        if kb.generation().manifest.vector.is_some() {
            kb.embedder()?; // loaded before it goes live, not by a request
        }
        Ok::<_, crate::Error>(kb)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload failed: {e}")))?
    .map_err(|e| {
        ApiError::Unavailable(format!(
            "the new index cannot be opened, the live one stays: {e}"
        ))
    })?;
    let generation = opened.generation().manifest.generation.clone();
    let chunks = opened.generation().manifest.chunk_count;
    let previous = state
        .replace_kb(opened)
        .map(|kb| kb.generation().manifest.generation.clone());
    tracing::info!(
        from = previous.as_deref().unwrap_or("none"),
        to = %generation,
        chunks,
        "index reloaded"
    );
    Ok(Json(serde_json::json!({
        "reloaded": previous.as_deref() != Some(generation.as_str()),
        "index": generation,
        "previous": previous,
        "chunks": chunks,
    }))
    .into_response())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Result<Response, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let engine = state.engine()?;
    let m = &engine.kb.generation().manifest;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "index": m.generation,
        "chunks": m.chunk_count,
        "model": engine.llm.name(),
        "auth": !state.keys.is_empty(),
    }))
    .into_response())
}

async fn metrics_text(AxumState(state): AxumState<Arc<State>>) -> Response {
    let body = state
        .metrics
        .render(state.pool.queued(), state.pool.running());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let mut config = Config::default();
        config.server.api_keys = vec!["alpha".into(), "beta-key".into()];
        let state = State::new(config);
        assert!(state.key_ok("alpha"));
        assert!(state.key_ok("beta-key"));
        assert!(!state.key_ok("alph"));
        assert!(!state.key_ok("beta-key "));
        assert!(!state.key_ok(""));
    }

    proptest::proptest! {
        #[test]
        fn decoders_reject_garbage_with_400(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for e in [
                decode::<api::AskRequest>(&bytes).err(),
                decode::<api::SearchRequest>(&bytes).err(),
                decode::<openai::ChatRequest>(&bytes).err(),
            ].into_iter().flatten() {
                proptest::prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            }
        }
    }

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
