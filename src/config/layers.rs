//! Layering settings by name: `KBQA_*` variables and command-line flags
//! are both lists of [`Setting`]s (a dotted key such as `answer.focus` and
//! its text), applied over the config read from defaults and the file.
//!
//! One mechanism serves both layers: the config is turned into a TOML
//! value, each setting replaces one key (its text read as the type the key
//! already has: bool, number, list or string), and the value is read back
//! into [`Config`] with serde, which checks it. A new setting is one line
//! of [`ENV`] (and a flag, if it has one), not a new `match` arm.
//!
//! Hand-written rather than `figment`: the variables' names do not follow
//! the keys (`KBQA_LLM_URL` is `generator.openai.url`), key lists are
//! comma-separated and booleans may be `yes`/`on`/`1`, so a layering crate
//! would still need this table and these conversions. What it would
//! remove is [`apply`] and its two helpers (about 70 lines); measured with
//! `cargo tree` (2026-12-07), `figment 0.10` with its `toml` and `env`
//! features brings 11 crates this project does not have, among them a
//! second `toml` (0.8, beside our 0.9) with `toml_edit`, and the
//! `pear`/`pear_codegen` parser and its proc-macro.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// One setting by name, and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The dotted key in the config (`answer.focus`).
    pub key: &'static str,
    /// Its value as text.
    pub value: String,
    /// Where it was given: `KBQA_FOCUS`, `--focus`.
    pub source: String,
}

impl Setting {
    /// A setting from a command-line flag.
    pub fn flag(flag: &str, key: &'static str, value: impl ToString) -> Setting {
        Setting {
            key,
            value: value.to_string(),
            source: flag.to_string(),
        }
    }
}

/// The `KBQA_*` variables and the keys they set. Others (`KBQA_LOG`, and
/// those of tests and benchmarks) are read where they are used.
pub const ENV: &[(&str, &str)] = &[
    ("KB", "kb"),
    ("CORPUS", "corpus"),
    ("INDEX_DIR", "index_dir"),
    ("INDEX_BACKEND", "index_backend"),
    ("DATABASE_URL", "database.url"),
    ("DATABASE_LEXICAL", "database.lexical"),
    ("DATABASE_POLL_MS", "database.poll_ms"),
    ("DATABASE_KEEP_REPLACED_SECS", "database.keep_replaced_secs"),
    ("AUTO_INDEX", "auto_index"),
    ("SKIP_BAD", "skip_bad"),
    ("TOKENIZER", "bm25.tokenizer"),
    ("CHUNK_TARGET", "chunk.target_chars"),
    ("CHUNK_OVERLAP", "chunk.overlap_chars"),
    ("HOME", "home"),
    ("PYTHON", "python"),
    ("THREADS", "threads"),
    ("EMBEDDING_MODEL", "models.embedding"),
    ("GENERATOR_MODEL", "models.generator"),
    ("KEEP_PACKED", "models.keep_packed"),
    ("MAX_NEW_TOKENS", "answer.max_new_tokens"),
    ("FOCUS", "answer.focus"),
    ("TRANSLATE", "answer.translate"),
    ("READINGS", "answer.readings"),
    ("READING_STYLE", "answer.reading_style"),
    ("CONTEXT", "answer.context"),
    ("CONFIDENCE_THRESHOLD", "answer.confidence.threshold"),
    ("K", "search.k"),
    ("MAX_GLOSSARY_HITS", "search.max_glossary_hits"),
    ("MODE", "search.mode"),
    ("BM25_WEIGHT", "search.bm25_weight"),
    ("VECTOR_WEIGHT", "search.vector_weight"),
    ("RRF_K", "search.rrf_k"),
    ("EXPAND_QUERIES", "search.expand_queries"),
    ("ADDR", "server.addr"),
    ("WORKERS", "server.workers"),
    ("QUEUE", "server.queue"),
    ("DEADLINE_SECS", "server.deadline_secs"),
    ("SHUTDOWN_GRACE_SECS", "server.shutdown_grace_secs"),
    ("API_KEYS", "server.api_keys"),
    ("ADMIN_KEYS", "server.admin_keys"),
    ("SLACK_SIGNING_SECRET", "slack.signing_secret"),
    ("SLACK_BOT_TOKEN", "slack.bot_token"),
    ("SLACK_DEDUPE_REDIS", "slack.dedupe_redis"),
    ("SLACK_DEDUPE_REDIS_CA", "slack.dedupe_redis_ca"),
    ("SLACK_API_BASE", "slack.api_base"),
    ("SLACK_IN_CHANNEL", "slack.in_channel"),
    ("SLACK_KB", "slack.kb"),
    ("GENERATOR", "generator.backend"),
    ("LLM_URL", "generator.openai.url"),
    ("LLM_MODEL", "generator.openai.model"),
    ("LLM_TOKENIZER", "generator.tokenizer"),
    ("LLM_API_KEY", "generator.openai.api_key"),
    ("EMBEDDER", "embedder.backend"),
    ("EMBED_URL", "embedder.openai.url"),
    ("EMBED_MODEL", "embedder.openai.model"),
    ("EMBED_API_KEY", "embedder.openai.api_key"),
];

/// Keys whose values are secrets: never echoed in an error message.
const SECRET: &[&str] = &[
    "slack.signing_secret",
    "slack.bot_token",
    "slack.dedupe_redis",
    "database.url",
    "generator.openai.api_key",
    "embedder.openai.api_key",
    "server.api_keys",
    "server.admin_keys",
];

/// The settings `vars` (e.g. `std::env::vars()`) make, in table order.
/// Takes the variables as an argument so tests need not touch the process
/// environment.
pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Setting> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    ENV.iter()
        .filter_map(|&(name, key)| {
            let var = format!("KBQA_{name}");
            let (_, value) = vars.iter().rev().find(|(k, _)| *k == var)?;
            Some(Setting {
                key,
                value: value.clone(),
                source: var,
            })
        })
        .collect()
}

/// `config` (a [`super::Config`]) with `settings` applied in order; each
/// is checked as it is applied, so an error names the variable or flag at
/// fault.
pub fn apply<C: Serialize + DeserializeOwned + Clone>(
    config: &C,
    settings: &[Setting],
) -> Result<C> {
    let mut table = toml::Value::try_from(config)
        .map_err(|e| Error::Config(format!("cannot represent the config: {e}")))?;
    let mut out = config.clone();
    for s in settings {
        let bad = |why: &str| {
            let shown = if SECRET.contains(&s.key) {
                "<hidden>".to_string()
            } else {
                format!("{:?}", s.value)
            };
            Error::Config(format!("{}={shown}: {why}", s.source))
        };
        let mut next = table.clone();
        let (parent, leaf) = slot(&mut next, s.key).ok_or_else(|| bad("no such setting"))?;
        match typed(parent.get(leaf), s.value.trim()).map_err(bad)? {
            Some(v) => parent.insert(leaf.to_string(), v),
            None => parent.remove(leaf),
        };
        out = next
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.message()))?;
        table = next;
    }
    Ok(out)
}

/// `value` read as the type of the key's current value (`None`: leave an
/// option unset).
fn typed(
    current: Option<&toml::Value>,
    value: &str,
) -> std::result::Result<Option<toml::Value>, &'static str> {
    use toml::Value;
    Ok(Some(match current {
        Some(Value::Boolean(_)) => {
            Value::Boolean(parse_bool(value).ok_or("expected true or false")?)
        }
        Some(Value::Integer(_)) => {
            Value::Integer(value.parse().map_err(|_| "expected a whole number")?)
        }
        Some(Value::Float(_)) => Value::Float(value.parse().map_err(|_| "expected a number")?),
        Some(Value::Array(_)) => Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Value::String(k.to_string()))
                .collect(),
        ),
        // An option not set stays unset when given no value.
        None if value.is_empty() => return Ok(None),
        _ => Value::String(value.to_string()),
    }))
}

/// The table holding `key`'s last part, and that part.
fn slot<'t>(
    table: &'t mut toml::Value,
    key: &'static str,
) -> Option<(&'t mut toml::map::Map<String, toml::Value>, &'static str)> {
    let (path, leaf) = match key.rsplit_once('.') {
        Some((path, leaf)) => (Some(path), leaf),
        None => (None, key),
    };
    let mut t = table.as_table_mut()?;
    for part in path.into_iter().flat_map(|p| p.split('.')) {
        t = t.get_mut(part)?.as_table_mut()?;
    }
    Some((t, leaf))
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
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Config, TokenizerKind};

    fn env(pairs: &[(&str, &str)]) -> Vec<Setting> {
        from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn layers_apply_in_order() {
        let c: Config = toml::from_str(
            "corpus = \"docs\"\n[chunk]\ntarget_chars = 500\n[bm25]\ntokenizer = \"bigram\"\n",
        )
        .unwrap();
        assert_eq!(c.corpus, PathBuf::from("docs"));
        assert_eq!(c.chunk.target_chars, 500);
        assert_eq!(c.bm25.tokenizer, TokenizerKind::Bigram);
        let c = apply(&c, &env(&[("KBQA_CORPUS", "other"), ("HOME", "/root")])).unwrap();
        assert_eq!(c.corpus, PathBuf::from("other"));
        assert_eq!(
            c.chunk.target_chars, 500,
            "env without a value keeps the file's"
        );
        let c = apply(&c, &env(&[("KBQA_FOCUS", "0"), ("KBQA_TRANSLATE", "yes")])).unwrap();
        assert_eq!((c.answer.focus, c.answer.translate), (0, true));
        // A flag after the environment wins.
        let c = apply(&c, &[Setting::flag("--focus", "answer.focus", 3)]).unwrap();
        assert_eq!(c.answer.focus, 3);
        assert!(apply(&c, &env(&[("KBQA_TRANSLATE", "maybe")])).is_err());
    }

    #[test]
    fn every_kind_of_value_is_read_as_its_key_takes_it() {
        let c = apply(
            &Config::default(),
            &env(&[
                ("KBQA_API_KEYS", "alpha-key, beta-key,"),
                ("KBQA_BM25_WEIGHT", "0.5"),
                ("KBQA_MODE", "bm25"),
                ("KBQA_LLM_API_KEY", "sk-1"),
                ("KBQA_SLACK_DEDUPE_REDIS", "rediss://:pw@cache:6380/2"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.api_keys, ["alpha-key", "beta-key"]);
        assert_eq!(c.search.bm25_weight, 0.5);
        assert_eq!(c.search.mode, crate::config::SearchMode::Bm25);
        assert_eq!(c.generator.openai.api_key.as_deref(), Some("sk-1"));
        assert_eq!(
            c.slack.dedupe_redis.as_deref(),
            Some("rediss://:pw@cache:6380/2")
        );
        let mut c = apply(&c, &env(&[("KBQA_LLM_API_KEY", "")])).unwrap();
        c.normalize();
        assert_eq!(c.generator.openai.api_key, None, "empty unsets");
    }

    #[test]
    fn bad_values_name_their_variable_and_hide_secrets() {
        let err = apply(
            &Config::default(),
            &env(&[("KBQA_TOKENIZER", "whitespace")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("KBQA_TOKENIZER"), "{err}");
        let err = apply(&Config::default(), &env(&[("KBQA_K", "five")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KBQA_K=\"five\""), "{err}");
        let err = apply(
            &Config::default(),
            &env(&[("KBQA_SLACK_IN_CHANNEL", "pw-123")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pw-123"), "not a secret: {err}");
        let mut c = Config::default();
        c.slack.in_channel = true;
        let s = Setting::flag("--x", "slack.bot_token", "xoxb-secret");
        assert!(apply(&c, &[s]).is_ok());
    }
}
