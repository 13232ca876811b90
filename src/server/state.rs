//! What every request shares: the configuration, the live knowledge base
//! and chat model, admission, metrics and the keys.
//!
//! A leaf of the server: it imports no handler module, so every front end
//! (the JSON API, the OpenAI endpoint, Slack) can use it without an import
//! loop. It has no Slack field on purpose: Slack is one front end among
//! others and keeps its own state in its own router.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::metrics::Metrics;
use super::pool::Pool;
use crate::engine::Generator;
use crate::{Config, Kb};

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
    /// SHA-256 of each API key (compared in constant time).
    api_keys: Vec<[u8; 32]>,
    /// SHA-256 of each admin key (for `/admin/reload`).
    admin_keys: Vec<[u8; 32]>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    pool: Pool,
    metrics: Metrics,
    /// Set once shutdown began: no new answers.
    draining: AtomicBool,
    next_request: AtomicU64,
}

impl State {
    /// A server for `config`, not yet ready (see [`State::set_engine`]).
    pub fn new(config: Config) -> Arc<State> {
        Arc::new(State {
            pool: Pool::new(config.server.workers, config.server.queue),
            kb: RwLock::new(None),
            llm: OnceLock::new(),
            api_keys: digests(&config.server.api_keys),
            admin_keys: digests(&config.server.admin_keys),
            reloading: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
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

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live knowledge base and the chat model, or 503 while they load.
    pub(crate) fn engine(&self) -> Result<Engine, ApiError> {
        let kb = self.kb.read().unwrap_or_else(|e| e.into_inner()).clone();
        match (kb, self.llm.get()) {
            (Some(kb), Some(llm)) => Ok(Engine {
                kb,
                llm: llm.clone(),
            }),
            _ => Err(ApiError::Unavailable(
                "the index and models are still loading".into(),
            )),
        }
    }

    /// The chat model's name, once it is loaded.
    pub(crate) fn generator_name(&self) -> Option<String> {
        self.llm.get().map(|llm| llm.name())
    }

    /// The answer workers and their queue.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The Prometheus counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether shutdown began (no new answers are admitted).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Begins shutdown: no new answers are admitted from now on.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// A fresh id for a request that brought none.
    pub(crate) fn next_request_id(&self) -> String {
        format!(
            "req-{:06x}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Held while a reload runs: reloads happen one at a time.
    pub(crate) async fn reload_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reloading.lock().await
    }

    /// Whether the `/v1` routes need an API key.
    pub(crate) fn needs_api_key(&self) -> bool {
        !self.api_keys.is_empty()
    }

    /// Whether the request bears one of the API keys.
    pub(crate) fn api_key_ok(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|k| self.key_ok(k))
    }

    /// Whether `/admin` routes are on (some admin key is set).
    pub(crate) fn admin_enabled(&self) -> bool {
        !self.admin_keys.is_empty()
    }

    /// Whether the request bears one of the admin keys.
    pub(crate) fn admin_key_ok(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|k| key_matches(&self.admin_keys, k))
    }

    /// Whether `presented` is one of the API keys.
    fn key_ok(&self, presented: &str) -> bool {
        key_matches(&self.api_keys, presented)
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
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
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
        let mut headers = HeaderMap::new();
        assert!(!state.api_key_ok(&headers));
        headers.insert(header::AUTHORIZATION, "Bearer alpha".parse().unwrap());
        assert!(state.api_key_ok(&headers));
        assert!(
            !state.admin_key_ok(&headers),
            "an API key is not an admin key"
        );
    }
}
