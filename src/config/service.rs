//! The settings of `kbqa serve` and its Slack bot: the service's limits
//! and keys, and where Slack questions go.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::kbs::DEFAULT_KB;

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
    /// A Redis (`redis://[:password@]host[:port][/db]`, or `rediss://`
    /// for TLS) the replicas share to answer each Slack event once;
    /// without it each replica remembers only its own deliveries.
    pub dedupe_redis: Option<String>,
    /// PEM file of the certificate authority that signed a `rediss://`
    /// server's certificate, when it is not one the system trusts.
    pub dedupe_redis_ca: Option<PathBuf>,
    /// The knowledge base a channel without an entry in `channel_kbs` asks.
    pub kb: String,
    /// Channel id → the knowledge base questions in that channel ask.
    pub channel_kbs: BTreeMap<String, String>,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            signing_secret: None,
            bot_token: None,
            api_base: "https://slack.com/api".to_string(),
            in_channel: false,
            dedupe_redis: None,
            dedupe_redis_ca: None,
            kb: DEFAULT_KB.to_string(),
            channel_kbs: BTreeMap::new(),
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
            .field(
                "dedupe_redis",
                &self.dedupe_redis.as_deref().map(without_password),
            )
            .field("dedupe_redis_ca", &self.dedupe_redis_ca)
            .field("kb", &self.kb)
            .field("channel_kbs", &self.channel_kbs)
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

/// A URL with any password replaced, for logs and error messages.
pub fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<credentials>@{host}"),
            None => url.to_string(),
        },
        None => "<not a URL>".to_string(),
    }
}
