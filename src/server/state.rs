//! What every request shares: the configuration, the knowledge bases
//! and the chat model, admission, metrics and the keys.
//!
//! One chat model and one query embedder serve every knowledge base; each
//! knowledge base adds only its index. The one `--kb` names (the server's
//! default) opens at start; the others open on their first request, and
//! each is reloaded on its own.
//!
//! A leaf of the server: it imports no handler module, so every front end
//! (the JSON API, the OpenAI endpoint, Slack) can use it without an import
//! loop. It has no Slack field on purpose: Slack is one front end among
//! others and keeps its own state in its own router.

use std::collections::BTreeMap;
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

/// What a reload did.
pub(crate) struct Reloaded {
    /// The generation now live.
    pub generation: String,
    /// The one it replaced, if the knowledge base was open.
    pub previous: Option<String>,
    /// Chunks in the new generation.
    pub chunks: usize,
}

/// One knowledge base of the server.
struct KbSlot {
    /// The configuration for it ([`Config::for_kb`]).
    config: Config,
    /// Its live index, once opened (replaced whole by a reload).
    live: Arc<RwLock<Option<Arc<Kb>>>>,
    /// Held while it opens, so concurrent first requests open it once; the
    /// opening task holds it, so a request that goes away loses nothing.
    opening: Arc<tokio::sync::Mutex<()>>,
    /// SHA-256 of the keys limited to the knowledge bases that list them.
    keys: Vec<[u8; 32]>,
}

impl KbSlot {
    fn live(&self) -> Option<Arc<Kb>> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Shared by every request.
pub struct State {
    config: Config,
    /// Every knowledge base, by name.
    kbs: BTreeMap<String, KbSlot>,
    llm: OnceLock<Arc<dyn Generator>>,
    /// SHA-256 of each API key that may use every knowledge base
    /// (compared in constant time).
    api_keys: Vec<[u8; 32]>,
    /// SHA-256 of every key limited to some knowledge bases.
    limited_keys: Vec<[u8; 32]>,
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
        let kbs: BTreeMap<String, KbSlot> = config
            .kb_names()
            .into_iter()
            .filter_map(|name| {
                let slot = KbSlot {
                    config: config.for_kb(name).ok()?,
                    live: Arc::default(),
                    opening: Arc::default(),
                    keys: digests(config.kbs.get(name).map_or(&[][..], |k| &k.api_keys)),
                };
                Some((name.to_string(), slot))
            })
            .collect();
        Arc::new(State {
            pool: Pool::new(config.server.workers, config.server.queue),
            limited_keys: kbs.values().flat_map(|s| s.keys.clone()).collect(),
            kbs,
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

    /// Makes the server ready: `kb` is the default knowledge base's index.
    pub fn set_engine(&self, kb: Kb, llm: Arc<dyn Generator>) {
        let _ = self.replace_kb(&self.config.kb, kb);
        let _ = self.llm.set(llm);
    }

    /// Makes `kb` the live index of knowledge base `name`; requests already
    /// running keep the one they started with. Returns the one it replaces.
    pub fn replace_kb(&self, name: &str, kb: Kb) -> Result<Option<Arc<Kb>>, ApiError> {
        Ok(self
            .slot(Some(name))?
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Arc::new(kb)))
    }

    /// The resolved configuration (its `kb` is the server's default
    /// knowledge base).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The names of the knowledge bases, the server's default one first.
    pub fn kb_names(&self) -> Vec<&str> {
        let mut names = self.config.kb_names();
        names.sort_by_key(|n| *n != self.config.kb);
        names
    }

    /// The configuration of knowledge base `name` (the default if `None`),
    /// or 404 listing the known ones.
    pub(crate) fn kb_config(&self, name: Option<&str>) -> Result<&Config, ApiError> {
        Ok(&self.slot(name)?.config)
    }

    fn slot(&self, name: Option<&str>) -> Result<&KbSlot, ApiError> {
        let name = name.unwrap_or(&self.config.kb);
        self.kbs
            .get(name)
            .ok_or_else(|| ApiError::from(self.config.unknown_kb(name)))
    }

    /// The default knowledge base and the chat model, or 503 while they load.
    pub(crate) fn engine(&self) -> Result<Engine, ApiError> {
        let kb = self.slot(None)?.live();
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

    /// Knowledge base `name` (the default if `None`) and the chat model;
    /// a knowledge base not yet open is opened now (its index built first
    /// if it has none), sharing the default's query embedder.
    pub(crate) async fn engine_for(&self, name: Option<&str>) -> Result<Engine, ApiError> {
        let slot = self.slot(name)?;
        let default = self.engine()?;
        if let Some(kb) = slot.live() {
            return Ok(Engine { kb, ..default });
        }
        let one_at_a_time = slot.opening.clone().lock_owned().await;
        if let Some(kb) = slot.live() {
            return Ok(Engine { kb, ..default });
        }
        let (config, shared, live) = (slot.config.clone(), default.kb.clone(), slot.live.clone());
        // The task finishes and keeps what it opened even if this request
        // is dropped meanwhile (its client gone, its deadline passed).
        let kb = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = one_at_a_time;
            let kb = Kb::open(&config, &mut |_| {})?;
            kb.share_embedder(&shared);
            tracing::info!(
                kb = %config.kb,
                index = %kb.generation().manifest.generation,
                "knowledge base opened"
            );
            // A reload that finished meanwhile installed a newer one: keep it.
            let mut live = live.write().unwrap_or_else(|e| e.into_inner());
            Ok::<_, crate::Error>(live.get_or_insert_with(|| Arc::new(kb)).clone())
        })
        .await
        .map_err(|e| ApiError::Internal(format!("opening the knowledge base failed: {e}")))??;
        Ok(Engine { kb, ..default })
    }

    /// Opens the generation `kbqa index` last made live for knowledge base
    /// `name` and makes it the one new requests use. Requests running keep
    /// the generation they started with; other knowledge bases are not
    /// touched. On error the live generation stays. One reload at a time.
    pub(crate) async fn reload(&self, name: &str) -> Result<Reloaded, ApiError> {
        let config = self.kb_config(Some(name))?.clone();
        let _one_at_a_time = self.reloading.lock().await;
        // Its query embedder is the default knowledge base's.
        let shared = self.engine()?.kb;
        let opened = tokio::task::spawn_blocking(move || {
            let kb = Kb::open_current(&config, &mut |_| {})?;
            kb.share_embedder(&shared);
            if kb.generation().manifest.vector.is_some() {
                kb.embedder()?; // loaded before it goes live, not by a request
            }
            Ok::<_, crate::Error>(kb)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reload failed: {e}")))?
        .map_err(|e| match e {
            // The database is down: retry later, the live generation stays.
            e @ crate::Error::DatabaseUnreachable { .. } => ApiError::from(e),
            // Whatever else failed, the server keeps serving the live
            // index: it is the new one that is unavailable.
            e => ApiError::IndexUnavailable(format!(
                "the new index cannot be opened, the live one stays: {e}"
            )),
        })?;
        let generation = opened.generation().manifest.generation.clone();
        let chunks = opened.generation().manifest.chunk_count;
        let previous = self
            .replace_kb(name, opened)?
            .map(|kb| kb.generation().manifest.generation.clone());
        tracing::info!(
            kb = %name,
            from = previous.as_deref().unwrap_or("none"),
            to = %generation,
            chunks,
            "index reloaded"
        );
        Ok(Reloaded {
            generation,
            previous,
            chunks,
        })
    }

    /// The generation knowledge base `name` serves, if it is open.
    pub(crate) fn serving(&self, name: &str) -> Option<String> {
        let kb = self.kbs.get(name)?.live()?;
        let generation = kb.generation().manifest.generation.clone();
        Some(generation)
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

    /// Whether the `/v1` routes need an API key.
    pub(crate) fn needs_api_key(&self) -> bool {
        !self.api_keys.is_empty() || !self.limited_keys.is_empty()
    }

    /// Whether the request bears one of the API keys (for every knowledge
    /// base or for some).
    pub(crate) fn api_key_ok(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|k| self.key_ok(k) || key_matches(&self.limited_keys, k))
    }

    /// Whether the request's key may use knowledge base `name` (the
    /// default if `None`): 403 for a key limited to other ones. (A missing
    /// or unknown key was turned away before, with 401.)
    ///
    /// Only a key for every knowledge base learns which names exist (an
    /// unknown one is a 404 listing them); a limited key gets 403 for any
    /// name it may not use, known or not.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let key = bearer(headers).unwrap_or_default();
        if !self.needs_api_key() || self.key_ok(key) {
            return self.slot(name).map(|_| ());
        }
        match self.slot(name) {
            Ok(slot) if key_matches(&slot.keys, key) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this API key may not use knowledge base {:?}",
                name.unwrap_or(&self.config.kb)
            ))),
        }
    }

    /// The knowledge bases the request's key may use, the default first.
    pub(crate) fn usable_kbs(&self, headers: &HeaderMap) -> Vec<&str> {
        self.kb_names()
            .into_iter()
            .filter(|n| self.authorize(headers, Some(n)).is_ok())
            .collect()
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
