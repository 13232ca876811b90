//! The closed choices of the configuration (which engine, which
//! retriever, which tokenizer, which prompt). They live with the config
//! rather than with the code they select, so that the config, at the
//! bottom of the crate, names them without importing that code.

use serde::{Deserialize, Serialize};

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

/// How CJK runs become terms. Recorded in the manifest: index and queries
/// must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TokenizerKind {
    /// jieba word segmentation in search mode (long words also give their parts).
    #[default]
    #[serde(rename = "jieba")]
    Jieba,
    /// Overlapping character bigrams (a lone char stays a unigram).
    #[serde(rename = "bigram")]
    Bigram,
    /// Both: jieba words and bigrams.
    #[serde(rename = "jieba+bigram")]
    JiebaBigram,
}

impl TokenizerKind {
    /// Every kind, for comparisons.
    pub const ALL: [TokenizerKind; 3] = [
        TokenizerKind::Jieba,
        TokenizerKind::Bigram,
        TokenizerKind::JiebaBigram,
    ];

    /// The name used in config, flags and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Jieba => "jieba",
            TokenizerKind::Bigram => "bigram",
            TokenizerKind::JiebaBigram => "jieba+bigram",
        }
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TokenizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TokenizerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown tokenizer {s:?} (expected jieba, bigram or jieba+bigram)")
            })
    }
}

/// Which retriever ranks the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Lexical BM25 over the Chinese-aware analyzer.
    Bm25,
    /// Nearest neighbours of the query's embedding.
    Vector,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bm25" => Ok(SearchMode::Bm25),
            "vector" => Ok(SearchMode::Vector),
            "hybrid" => Ok(SearchMode::Hybrid),
            _ => Err(format!(
                "unknown search mode {s:?} (expected bm25, vector or hybrid)"
            )),
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SearchMode::Bm25 => "bm25",
            SearchMode::Vector => "vector",
            SearchMode::Hybrid => "hybrid",
        })
    }
}

/// Prompt variants, measured against each other on the eval set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// The rules only.
    Rules,
    /// The rules and three worked examples (answer en, answer zh, refuse).
    #[default]
    Examples,
    /// Softer refusal rule, examples without the refusal.
    Lenient,
}

/// What makes the readings of one question differ (`answer.readings` > 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReadingStyle {
    /// The passages in other orders (reversed, rotated): each reading has
    /// its own prompt, so each pays its own prefill.
    #[default]
    Orders,
    /// The same prompt, prefilled once; the first reading greedy, the
    /// others sampled. Costs only the batched decode.
    Samples,
}
