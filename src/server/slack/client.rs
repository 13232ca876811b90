//! Posting to Slack: `chat.postMessage` through the Web API (with the bot
//! token) and delayed slash-command answers to their `response_url`, with
//! bounded retries that honour Slack's rate limits.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::SlackConfig;

/// Posts to Slack's Web API and to response URLs, with bounded retries.
pub struct Client {
    http: reqwest::Client,
    config: SlackConfig,
}

/// Attempts per message (the first included).
const ATTEMPTS: u32 = 4;

/// What one attempt came to.
enum Attempt {
    /// Posted.
    Done,
    /// Failed for good (a 4xx, or an API error other than a rate limit).
    Fatal(String),
    /// Worth another try after this many seconds.
    Retry(String, u64),
}

impl Client {
    /// A client for `config`'s API base and token.
    pub fn new(config: SlackConfig) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            config,
        }
    }

    /// `chat.postMessage` into a thread.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: &str,
        text: &str,
        blocks: &[Value],
    ) -> Result<(), String> {
        let Some(token) = &self.config.bot_token else {
            return Err("KBQA_SLACK_BOT_TOKEN is not set: cannot post answers".into());
        };
        let url = format!("{}/chat.postMessage", self.config.api_base);
        let body = json!({
            "channel": channel,
            "thread_ts": thread_ts,
            "text": text,
            "blocks": blocks,
            "unfurl_links": false,
        });
        self.post(&url, Some(token), &body).await
    }

    /// The delayed answer to a slash command.
    pub async fn respond(
        &self,
        response_url: &str,
        text: &str,
        blocks: &[Value],
    ) -> Result<(), String> {
        let body = json!({
            "response_type": if self.config.in_channel { "in_channel" } else { "ephemeral" },
            "replace_original": false,
            "text": text,
            "blocks": blocks,
        });
        self.post(response_url, None, &body).await
    }

    async fn post(&self, url: &str, token: Option<&str>, body: &Value) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let wait = match self.attempt(url, token, body, attempt).await {
                Attempt::Done => return Ok(()),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(why, wait) => {
                    last = why;
                    wait
                }
            };
            if attempt < ATTEMPTS {
                tracing::warn!(
                    attempt,
                    wait_s = wait,
                    "posting to Slack failed ({last}); retrying"
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        }
        Err(format!("gave up after {ATTEMPTS} attempts: {last}"))
    }

    /// One POST; the `attempt`-th, which sets the back-off.
    async fn attempt(&self, url: &str, token: Option<&str>, body: &Value, attempt: u32) -> Attempt {
        let mut req = self.http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let backoff = 1 << attempt;
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(30);
                Attempt::Retry("rate limited (429)".into(), wait)
            }
            Ok(r) if r.status().is_server_error() => {
                Attempt::Retry(format!("HTTP {}", r.status()), backoff)
            }
            Ok(r) if !r.status().is_success() => {
                Attempt::Fatal(format!("HTTP {} from {url}", r.status()))
            }
            Ok(r) => {
                // The Web API says `{"ok": false, "error": …}` with 200;
                // response URLs answer plain "ok".
                let text = r.text().await.unwrap_or_default();
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) if v["ok"] == false => {
                        let error = v["error"].as_str().unwrap_or("unknown").to_string();
                        if error == "ratelimited" {
                            Attempt::Retry(error, 1)
                        } else {
                            Attempt::Fatal(format!("Slack API error: {error}"))
                        }
                    }
                    _ => Attempt::Done,
                }
            }
            Err(e) => Attempt::Retry(e.to_string(), backoff),
        }
    }
}
