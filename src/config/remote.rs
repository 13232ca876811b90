//! Model servers: where answers are generated and passages embedded when
//! not in process (an OpenAI-compatible endpoint each).

use serde::{Deserialize, Serialize};

use super::kinds::Backend;

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
