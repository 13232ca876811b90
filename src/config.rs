//! One `Config` for the whole program.
//!
//! Layers, weakest first: built-in defaults < `kbqa.toml` (or `--config FILE`)
//! < `KBQA_*` environment variables < command-line flags. The library only
//! ever sees the resolved struct; `main.rs` applies the flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkConfig;
use crate::error::{Error, IoContext, Result};
use crate::index::tokenizer::TokenizerKind;

/// Everything kbqa can be told, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The folder of documents (the source of truth).
    pub corpus: PathBuf,
    /// Where index generations live; everything in it can be rebuilt from `corpus`.
    pub index_dir: PathBuf,
    /// Rebuild the index automatically when the corpus or settings changed
    /// (instead of failing with a "stale index" error).
    pub auto_index: bool,
    /// Index the good files and warn about bad ones, instead of refusing.
    pub skip_bad: bool,
    /// How documents are cut into passages.
    pub chunk: ChunkConfig,
    /// BM25 settings.
    pub bm25: Bm25Config,
    /// Retrieval settings.
    pub search: SearchConfig,
    /// kbqa's own folder: the model cache lives in `<home>/models`.
    pub home: PathBuf,
    /// The Python used to run pip when fetching models.
    pub python: String,
    /// Threads for inference (0: one per available core).
    pub threads: usize,
    /// Which models to use.
    pub models: ModelsConfig,
    /// The HNSW vector index.
    pub vector: VectorConfig,
    /// Answer generation.
    pub answer: AnswerConfig,
    /// The HTTP service (`kbqa serve`).
    pub server: ServerConfig,
    /// The Slack bot routes of the HTTP service.
    pub slack: SlackConfig,
    /// Where answers are generated: in process, or by a model server.
    pub generator: GeneratorConfig,
    /// Where passages and queries are embedded: in process, or by a model server.
    pub embedder: EmbedderConfig,
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this process, with candle (`models.*` names the model).
    #[default]
    Local,
    /// An OpenAI-compatible HTTP endpoint (llama.cpp's server, vLLM,
    /// Ollama, TGI, a text-embeddings server).
    Openai,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Backend::Local),
            "openai" => Ok(Backend::Openai),
            other => Err(format!("unknown backend {other:?} (local or openai)")),
        }
    }
}

/// An OpenAI-compatible endpoint.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL, up to and including `/v1` (`http://10.0.0.5:8081/v1`).
    pub url: String,
    /// The model name sent in requests (what the server calls its model).
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Longest wait for a connection or for the next piece of a response.
    pub timeout_secs: u64,
    /// Retries of a request refused with 429/5xx or not connected (with
    /// backoff); a request that has started streaming is never retried.
    pub retries: u32,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            url: String::new(),
            model: String::new(),
            api_key: None,
            timeout_secs: 60,
            retries: 2,
        }
    }
}

/// Keys stay out of logs and error messages.
impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout_secs", &self.timeout_secs)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The answer generator's engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `local` (candle, `models.generator`) or `openai`.
    pub backend: Backend,
    /// The endpoint, for `openai`.
    pub openai: OpenAiConfig,
    /// For `openai`: a known model name or GGUF path with the server
    /// model's tokenizer, so prompts are budgeted exactly (the same prompt
    /// as in process). Empty: token counts are estimated, on the high side.
    pub tokenizer: String,
}

/// The embedding model's engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// `local` (candle, `models.embedding`) or `openai`.
    pub backend: Backend,
    /// The endpoint, for `openai`.
    pub openai: OpenAiConfig,
    /// Put before a query (models such as e5 want `"query: "`).
    pub query_prefix: String,
    /// Put before a passage (`"passage: "` for e5).
    pub passage_prefix: String,
}

/// The Slack (or Slack-compatible) bot.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    /// The app's signing secret; without it the `/slack` routes are off.
    pub signing_secret: Option<String>,
    /// The bot token (`xoxb-…`) used to post answers.
    pub bot_token: Option<String>,
    /// Slack's Web API (a Slack-compatible server's, or a test's).
    pub api_base: String,
    /// Slash-command answers visible to the channel (else only to the asker).
    pub in_channel: bool,
    /// A Redis (`redis://[:password@]host[:port][/db]`) the replicas share
    /// to answer each Slack event once; without it each replica remembers
    /// only its own deliveries.
    #[serde(with = "redis_url")]
    pub dedupe_redis: Option<crate::bot::redis::Redis>,
}

/// `slack.dedupe_redis` as its URL in TOML, parsed (and checked) on load.
mod redis_url {
    use crate::bot::redis::Redis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Option<Redis>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_some(&format!("redis://{}", r.addr())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Redis>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(url) if !url.trim().is_empty() => Redis::from_url(&url)
                .map(Some)
                .map_err(serde::de::Error::custom),
            _ => Ok(None),
        }
    }
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            signing_secret: None,
            bot_token: None,
            api_base: "https://slack.com/api".to_string(),
            in_channel: false,
            dedupe_redis: None,
        }
    }
}

/// Secrets stay out of logs and error messages.
impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<set>");
        f.debug_struct("SlackConfig")
            .field("signing_secret", &hidden(&self.signing_secret))
            .field("bot_token", &hidden(&self.bot_token))
            .field("api_base", &self.api_base)
            .field("in_channel", &self.in_channel)
            .field("dedupe_redis", &self.dedupe_redis)
            .finish()
    }
}

/// The HTTP service's limits and access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: String,
    /// Answers generated at once. Generation uses every core, so more than
    /// one mostly adds latency; searches never wait for these.
    pub workers: usize,
    /// Answers that may wait for a worker; beyond that, 429.
    pub queue: usize,
    /// Longest an answer may take, queueing included, in seconds.
    pub deadline_secs: u64,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// API keys; when any is set, every `/v1` route needs `Authorization: Bearer <key>`.
    pub api_keys: Vec<String>,
    /// Keys for `/admin` routes (index reload); none: those routes are off.
    pub admin_keys: Vec<String>,
    /// On shutdown, how long in-flight answers may run before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:8080".to_string(),
            workers: 1,
            queue: 8,
            deadline_secs: 120,
            max_body_bytes: 64 * 1024,
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            shutdown_grace_secs: 10,
        }
    }
}

/// How answers are generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerConfig {
    /// Passages given to the model.
    pub k: usize,
    /// Most tokens in an answer.
    pub max_new_tokens: usize,
    /// Most prompt tokens; passages are trimmed to fit.
    pub max_prompt_tokens: usize,
    /// Positions per conversation (KV cache size).
    pub context: usize,
    /// 0 = greedy (deterministic).
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: u64,
    /// The prompt variant.
    pub prompt: crate::answer::PromptStyle,
    /// Refuse when the model's probability of `NOT_IN_KB` reaches this.
    pub refusal_threshold: f32,
    /// Embedding cosine that backs an uncited answer (calibrated for e5:
    /// recalibrate for another embedding model).
    pub support_cosine: f32,
    /// Embedding cosine that backs a cited answer whose words fall short.
    pub cited_support_cosine: f32,
    /// Sentences of the retrieved passages shown to the model, the ones
    /// closest to the question; 0 shows whole passages.
    pub focus: usize,
    /// Search with the question's translation (by the generator) too when
    /// it is not written in the knowledge base's main language.
    pub translate: bool,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        AnswerConfig {
            k: 5,
            max_new_tokens: 200,
            max_prompt_tokens: 1100,
            context: 2048,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            prompt: crate::answer::PromptStyle::default(),
            refusal_threshold: crate::answer::DEFAULT_REFUSAL_THRESHOLD,
            support_cosine: crate::answer::EMBEDDING_SUPPORT,
            cited_support_cosine: crate::answer::CITED_COSINE,
            focus: crate::answer::DEFAULT_FOCUS,
            translate: false,
        }
    }
}

/// Model choices: a known model name (fetched into the cache on first use)
/// or a path to a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// The embedding model (`e5-small-q4`, or a path to an E5S1 file).
    pub embedding: String,
    /// The chat model that writes answers (`qwen2.5-coder-0.5b`,
    /// `smollm2-135m`, or a path to a GGUF file of arch qwen2 or llama).
    pub generator: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            embedding: crate::models::fetch::E5_SMALL_Q4.name.to_string(),
            generator: crate::models::fetch::QWEN25_CODER_05B.name.to_string(),
        }
    }
}

/// HNSW parameters (they shape the index, so they are in its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorConfig {
    /// Links per node (M).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (query time only).
    pub ef_search: usize,
    /// Below this many chunks, search exactly (brute force) instead of HNSW:
    /// as fast at that size, and never approximate.
    pub exact_below: usize,
}

impl Default for VectorConfig {
    fn default() -> Self {
        VectorConfig {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            exact_below: 2000,
        }
    }
}

/// BM25 settings (they change the index, so they are recorded in its manifest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bm25Config {
    /// How Chinese text is cut into terms.
    pub tokenizer: TokenizerKind,
}

/// Retrieval settings (query-time only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// How many passages a search returns by default.
    pub k: usize,
    /// At most this many glossary entries among the results.
    pub max_glossary_hits: usize,
    /// Expand queries with the other-language names of glossary entries they mention.
    pub expand_queries: bool,
    /// Default retriever.
    pub mode: crate::retrieve::SearchMode,
    /// How many candidates each retriever contributes to fusion.
    pub candidates: usize,
    /// RRF's rank offset `k` (60 in the original paper).
    pub rrf_k: f32,
    /// Weight of BM25 ranks in fusion.
    pub bm25_weight: f32,
    /// Weight of vector ranks in fusion.
    pub vector_weight: f32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            corpus: PathBuf::from("corpus"),
            index_dir: PathBuf::from("indexes"),
            auto_index: true,
            skip_bad: false,
            chunk: ChunkConfig::default(),
            bm25: Bm25Config::default(),
            search: SearchConfig::default(),
            home: default_home(),
            python: "python3".to_string(),
            threads: 0,
            models: ModelsConfig::default(),
            vector: VectorConfig::default(),
            answer: AnswerConfig::default(),
            server: ServerConfig::default(),
            slack: SlackConfig::default(),
            generator: GeneratorConfig::default(),
            embedder: EmbedderConfig::default(),
        }
    }
}

/// `$XDG_CACHE_HOME/kbqa`, else `~/.cache/kbqa`, else `.kbqa`.
fn default_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("kbqa");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("kbqa"),
        None => PathBuf::from(".kbqa"),
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            k: 5,
            max_glossary_hits: 1,
            expand_queries: false,
            mode: crate::retrieve::SearchMode::Hybrid,
            candidates: 50,
            rrf_k: 10.0,
            bm25_weight: 1.0,
            vector_weight: 1.0,
        }
    }
}

/// The file read when no `--config` is given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "kbqa.toml";

impl Config {
    /// Defaults, then `file` (or `./kbqa.toml` if it exists), then the
    /// process environment. Not yet validated: front ends apply their flags
    /// first, then call [`Config::validate`] (a setting the environment
    /// leaves incomplete may be completed by a flag).
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        config.apply_env(std::env::vars())?;
        Ok(config)
    }

    /// Parses a TOML config file; unknown keys are errors, not silently ignored.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).at(path)?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Applies `KBQA_*` variables. Takes the variables as an argument so tests
    /// need not touch the process environment.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        for (key, value) in vars {
            let Some(name) = key.strip_prefix("KBQA_") else {
                continue;
            };
            let bad = |what: &str| Error::Config(format!("{key}={value:?}: {what}"));
            match name {
                "CORPUS" => self.corpus = PathBuf::from(&value),
                "INDEX_DIR" => self.index_dir = PathBuf::from(&value),
                "AUTO_INDEX" => {
                    self.auto_index =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "SKIP_BAD" => {
                    self.skip_bad =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "TOKENIZER" => self.bm25.tokenizer = value.parse().map_err(|e: String| bad(&e))?,
                "CHUNK_TARGET" => {
                    self.chunk.target_chars = value.parse().map_err(|_| bad("expected a number"))?
                }
                "CHUNK_OVERLAP" => {
                    self.chunk.overlap_chars =
                        value.parse().map_err(|_| bad("expected a number"))?
                }
                "HOME" => self.home = PathBuf::from(&value),
                "PYTHON" => self.python = value.clone(),
                "THREADS" => self.threads = value.parse().map_err(|_| bad("expected a number"))?,
                "EMBEDDING_MODEL" => self.models.embedding = value.clone(),
                "GENERATOR_MODEL" => self.models.generator = value.clone(),
                "MAX_NEW_TOKENS" => {
                    self.answer.max_new_tokens =
                        value.parse().map_err(|_| bad("expected a number"))?
                }
                "FOCUS" => {
                    self.answer.focus = value.parse().map_err(|_| bad("expected a number"))?
                }
                "TRANSLATE" => {
                    self.answer.translate =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "CONTEXT" => {
                    self.answer.context = value.parse().map_err(|_| bad("expected a number"))?
                }
                "K" => self.search.k = value.parse().map_err(|_| bad("expected a number"))?,
                "MAX_GLOSSARY_HITS" => {
                    self.search.max_glossary_hits =
                        value.parse().map_err(|_| bad("expected a number"))?
                }
                "MODE" => self.search.mode = value.parse().map_err(|e: String| bad(&e))?,
                "BM25_WEIGHT" => {
                    self.search.bm25_weight = value.parse().map_err(|_| bad("expected a number"))?
                }
                "VECTOR_WEIGHT" => {
                    self.search.vector_weight =
                        value.parse().map_err(|_| bad("expected a number"))?
                }
                "RRF_K" => {
                    self.search.rrf_k = value.parse().map_err(|_| bad("expected a number"))?
                }
                "EXPAND_QUERIES" => {
                    self.search.expand_queries =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "ADDR" => self.server.addr = value.clone(),
                "SLACK_SIGNING_SECRET" => {
                    self.slack.signing_secret = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "SLACK_BOT_TOKEN" => {
                    self.slack.bot_token = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "SLACK_DEDUPE_REDIS" => {
                    self.slack.dedupe_redis =
                        match value.trim() {
                            "" => None,
                            // (not `bad`: the value may hold a password)
                            url => Some(crate::bot::redis::Redis::from_url(url).map_err(|e| {
                                Error::Config(format!("KBQA_SLACK_DEDUPE_REDIS: {e}"))
                            })?),
                        }
                }
                "SLACK_API_BASE" => self.slack.api_base = value.trim_end_matches('/').to_string(),
                "SLACK_IN_CHANNEL" => {
                    self.slack.in_channel =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "WORKERS" => {
                    self.server.workers = value.parse().map_err(|_| bad("expected a number"))?
                }
                "QUEUE" => {
                    self.server.queue = value.parse().map_err(|_| bad("expected a number"))?
                }
                "DEADLINE_SECS" => {
                    self.server.deadline_secs =
                        value.parse().map_err(|_| bad("expected a number"))?
                }
                "API_KEYS" => self.server.api_keys = key_list(&value),
                "GENERATOR" => {
                    self.generator.backend = value.parse().map_err(|e: String| bad(&e))?
                }
                "LLM_URL" => self.generator.openai.url = value.clone(),
                "LLM_MODEL" => self.generator.openai.model = value.clone(),
                "LLM_TOKENIZER" => self.generator.tokenizer = value.clone(),
                "LLM_API_KEY" => {
                    self.generator.openai.api_key = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "EMBEDDER" => self.embedder.backend = value.parse().map_err(|e: String| bad(&e))?,
                "EMBED_URL" => self.embedder.openai.url = value.clone(),
                "EMBED_MODEL" => self.embedder.openai.model = value.clone(),
                "EMBED_API_KEY" => {
                    self.embedder.openai.api_key = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "ADMIN_KEYS" => self.server.admin_keys = key_list(&value),
                // Variables of later subsystems (models, server) and `KBQA_LOG`
                // are read where they are used.
                _ => {}
            }
        }
        Ok(())
    }

    /// Rejects settings that cannot work, at the boundary.
    pub fn validate(&self) -> Result<()> {
        self.chunk.validate().map_err(Error::Config)?;
        if !(self.search.rrf_k >= 0.0
            && self.search.bm25_weight >= 0.0
            && self.search.vector_weight >= 0.0)
        {
            return Err(Error::Config(
                "search.rrf_k and the weights must be non-negative numbers".into(),
            ));
        }
        if self.server.workers == 0 {
            return Err(Error::Config("server.workers must be at least 1".into()));
        }
        if self.server.deadline_secs == 0 {
            return Err(Error::Config(
                "server.deadline_secs must be at least 1".into(),
            ));
        }
        for (what, backend, openai) in [
            ("generator", self.generator.backend, &self.generator.openai),
            ("embedder", self.embedder.backend, &self.embedder.openai),
        ] {
            if backend == Backend::Openai {
                let url = openai.url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(Error::Config(format!(
                        "{what}.backend = \"openai\" needs {what}.openai.url, an http(s) URL ending in /v1 (got {url:?})"
                    )));
                }
                if openai.timeout_secs == 0 {
                    return Err(Error::Config(format!(
                        "{what}.openai.timeout_secs must be at least 1"
                    )));
                }
            }
        }
        if self.embedder.backend == Backend::Openai && self.embedder.openai.model.trim().is_empty()
        {
            return Err(Error::Config(
                "embedder.openai.model must name the embedding model: the index records it, so vectors of different models are never mixed".into(),
            ));
        }
        if self.search.k == 0 {
            return Err(Error::Config("search.k must be at least 1".into()));
        }
        Ok(())
    }
}

fn key_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let mut c: Config = toml::from_str(
            "corpus = \"docs\"\n[chunk]\ntarget_chars = 500\n[bm25]\ntokenizer = \"bigram\"\n",
        )
        .unwrap();
        assert_eq!(c.corpus, PathBuf::from("docs"));
        assert_eq!(c.chunk.target_chars, 500);
        assert_eq!(c.bm25.tokenizer, TokenizerKind::Bigram);
        c.apply_env([
            ("KBQA_CORPUS".to_string(), "other".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ])
        .unwrap();
        assert_eq!(c.corpus, PathBuf::from("other"));
        assert_eq!(
            c.chunk.target_chars, 500,
            "env without a value keeps the file's"
        );
        c.apply_env([
            ("KBQA_FOCUS".to_string(), "0".to_string()),
            ("KBQA_TRANSLATE".to_string(), "true".to_string()),
        ])
        .unwrap();
        assert_eq!((c.answer.focus, c.answer.translate), (0, true));
        assert!(c
            .apply_env([("KBQA_TRANSLATE".to_string(), "maybe".to_string())])
            .is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Config>("corpuss = \"x\"").is_err());
        let mut c = Config::default();
        let err = c
            .apply_env([("KBQA_TOKENIZER".to_string(), "whitespace".to_string())])
            .unwrap_err();
        assert!(err.to_string().contains("KBQA_TOKENIZER"), "{err}");
        c.chunk.target_chars = 0;
        assert!(c.validate().is_err());
    }
}
