//! One configured model-server endpoint: its HTTP client, retries, and
//! the bridge from the library's blocking code to async HTTP.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::OpenAiConfig;
use crate::error::{Error, Result};

/// Longest backoff between retries, and longest `Retry-After` honoured.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// One configured endpoint and its HTTP client.
pub struct Endpoint {
    base: String,
    model: String,
    api_key: Option<String>,
    retries: u32,
    client: reqwest::Client,
    /// Only used outside a tokio runtime (the CLI).
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl Endpoint {
    /// An endpoint for `config` (no request is made).
    pub fn new(config: &OpenAiConfig) -> Result<Endpoint> {
        let base = config.url.trim().trim_end_matches('/').to_string();
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Per read, not per request: a long answer that keeps streaming
            // is fine, a server that goes quiet is not.
            .read_timeout(timeout)
            .build()
            .map_err(|e| Error::Upstream {
                url: base.clone(),
                reason: format!("cannot create an HTTP client: {e}"),
            })?;
        Ok(Endpoint {
            base,
            model: config.model.trim().to_string(),
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
            retries: config.retries,
            client,
            runtime: OnceLock::new(),
        })
    }

    /// The base URL (ends in `/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The model name sent in requests (may be empty: the server's default).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// An [`Error::Upstream`] for this endpoint.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Upstream {
            url: self.base.clone(),
            reason: reason.into(),
        }
    }

    /// Runs `future` to completion from blocking code.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            // A blocking thread of the service's runtime.
            Ok(handle) => handle.block_on(future),
            Err(_) => self
                .runtime
                .get_or_init(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime can be built")
                })
                .block_on(future),
        }
    }

    /// POSTs `body` as JSON to `path` (e.g. `/chat/completions`) and returns
    /// the response once it has a 2xx status, retrying what may be retried.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            let mut request = self.client.post(&url).json(body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let (reason, wait) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let reason = format!("{url} answered {status}: {}", error_message(&text));
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(self.error(reason));
                    }
                    (reason, retry_after)
                }
                // Not connected: nothing was sent, a retry repeats nothing.
                // A timeout is not retried: the server may be working on it,
                // and an overloaded pool should get fewer requests, not more.
                Err(e) if e.is_connect() => (describe(&url, &e), None),
                Err(e) => return Err(self.error(describe(&url, &e))),
            };
            if attempt >= self.retries {
                let tries = attempt + 1;
                return Err(self.error(format!(
                    "{reason} (after {tries} attempt{})",
                    if tries == 1 { "" } else { "s" }
                )));
            }
            let backoff = wait
                .unwrap_or(Duration::from_millis(250) * 2u32.pow(attempt.min(5)))
                .min(MAX_BACKOFF);
            tracing::warn!("{reason}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}

/// Dropped inside the service (an async context) a runtime must not block.
impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A reqwest error as a sentence, with its cause (reqwest's own message
/// alone is "error sending request").
pub fn describe(url: &str, e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = if e.is_connect() {
        format!("cannot connect to {url}")
    } else if e.is_timeout() {
        format!("{url} did not answer in time")
    } else {
        format!("request to {url} failed")
    };
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The `error.message` of an OpenAI-style error body, else the body's start.
pub fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    if let Some(m) = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
    }) {
        return m.to_string();
    }
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None if body.is_empty() => "(empty body)".to_string(),
        None => body.to_string(),
    }
}

/// Splits a byte stream into server-sent-event `data:` payloads.
#[derive(Default)]
pub struct SseLines {
    buffer: Vec<u8>,
}

impl SseLines {
    /// Adds bytes; returns the complete `data:` payloads they finished.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data:") {
                out.push(data.trim_start().to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_survive_arbitrary_splits() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut lines = SseLines::default();
            let mut got = lines.push(&stream[..cut]);
            got.extend(lines.push(&stream[cut..]));
            assert_eq!(got, vec!["{\"a\":1}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(error_message(r#"{"error":"busy"}"#), "busy");
        assert_eq!(error_message(""), "(empty body)");
        assert!(error_message(&"x".repeat(500)).ends_with('…'));
    }
}
