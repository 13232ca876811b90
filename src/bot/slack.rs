//! Slack (and Slack-compatible servers: Mattermost, Rocket.Chat): the
//! Events API (`POST /slack/events`) and slash commands
//! (`POST /slack/commands`).
//!
//! Slack gives an app 3 seconds to acknowledge a request and retries when
//! it does not, so both routes verify the signature, acknowledge at once,
//! and answer in the background: a threaded `chat.postMessage` for events,
//! a POST to `response_url` for commands. Retried deliveries of one event
//! are recognised by `event_id` and answered once. The bot never answers
//! bots (itself included), edits or other message subtypes, so it cannot
//! talk to itself in a loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::answer::Answer;
use crate::bot::redis::Redis;
use crate::config::SlackConfig;
use crate::server::error::ApiError;
use crate::server::{admit, finished, run_answer, State};

/// Requests older (or newer) than this are replays.
pub const MAX_AGE_SECS: i64 = 5 * 60;

/// Slack's limit on the text of one section block.
pub const SECTION_LIMIT: usize = 3000;

/// Why a request is not accepted as Slack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No `X-Slack-Signature` or `X-Slack-Request-Timestamp`.
    MissingHeaders,
    /// The timestamp is not a number, or more than 5 minutes off.
    Stale,
    /// The signature does not match the body.
    BadSignature,
}

impl Rejected {
    fn message(self) -> &'static str {
        match self {
            Rejected::MissingHeaders => "missing X-Slack-Signature or X-Slack-Request-Timestamp",
            Rejected::Stale => "the request timestamp is more than 5 minutes from now",
            Rejected::BadSignature => "the request signature does not match",
        }
    }
}

/// `v0=` + hex HMAC-SHA256(secret, `v0:{timestamp}:{body}`).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let bytes = mac(secret, timestamp, body).finalize().into_bytes();
    let mut out = String::from("v0=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Checks that `body` was signed with `secret` within the last 5 minutes
/// (`now` in Unix seconds). The comparison is constant-time.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Rejected> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(presented)) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    ) else {
        return Err(Rejected::MissingHeaders);
    };
    let ts: i64 = timestamp.trim().parse().map_err(|_| Rejected::Stale)?;
    if (now - ts).abs() > MAX_AGE_SECS {
        return Err(Rejected::Stale);
    }
    let presented = presented
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(Rejected::BadSignature)?;
    mac(secret, timestamp, body)
        .verify_slice(&presented)
        .map_err(|_| Rejected::BadSignature)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An Events API request.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Envelope {
    /// Slack checks the request URL when it is configured.
    #[serde(rename = "url_verification")]
    UrlVerification {
        /// Echoed back.
        challenge: String,
    },
    /// Something happened.
    #[serde(rename = "event_callback")]
    EventCallback {
        /// Unique per event, the same in retried deliveries.
        event_id: String,
        /// The event.
        event: Box<Event>,
        /// Who the app is in this workspace (its bot user id).
        #[serde(default)]
        authorizations: Vec<Authorization>,
    },
    /// Other envelope types (app_rate_limited, …): acknowledged, ignored.
    #[serde(other)]
    Other,
}

/// An event's fields kbqa reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    /// `app_mention`, `message`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Set for edits, joins, bot messages, …
    #[serde(default)]
    pub subtype: Option<String>,
    /// Set when a bot wrote it.
    #[serde(default)]
    pub bot_id: Option<String>,
    /// The author.
    #[serde(default)]
    pub user: Option<String>,
    /// The message text, with `<@U…>` mentions.
    #[serde(default)]
    pub text: Option<String>,
    /// Where it was written.
    #[serde(default)]
    pub channel: Option<String>,
    /// `im` for direct messages.
    #[serde(default)]
    pub channel_type: Option<String>,
    /// The message's timestamp (its id).
    #[serde(default)]
    pub ts: Option<String>,
    /// The thread it is in, if any.
    #[serde(default)]
    pub thread_ts: Option<String>,
}

/// One installation of the app.
#[derive(Debug, Deserialize)]
pub struct Authorization {
    /// The app's bot user.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A question addressed to the bot, and where to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question, mentions removed.
    pub text: String,
    /// The channel to answer in.
    pub channel: String,
    /// The thread to answer in (the message's thread, else the message).
    pub thread_ts: String,
}

/// The question in `event`, if it is one the bot should answer: a mention
/// of the bot or a direct message, written by a person, not an edit.
pub fn question_in(event: &Event, bot_user: Option<&str>) -> Option<Question> {
    let addressed = event.kind == "app_mention"
        || (event.kind == "message" && event.channel_type.as_deref() == Some("im"));
    if !addressed || event.subtype.is_some() || event.bot_id.is_some() {
        return None;
    }
    if bot_user.is_some() && event.user.as_deref() == bot_user {
        return None;
    }
    let text = strip_mentions(event.text.as_deref()?);
    if text.is_empty() {
        return None;
    }
    let ts = event.ts.clone()?;
    Some(Question {
        text,
        channel: event.channel.clone()?,
        thread_ts: event.thread_ts.clone().unwrap_or(ts),
    })
}

/// Message text without `<@U…>` mentions, with Slack's escapes undone.
pub fn strip_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes text for mrkdwn (`&`, `<`, `>` are control characters).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Splits `text` into pieces of at most `limit` characters, at a line,
/// sentence or word end when there is one in the second half.
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: &str = text;
    while rest.chars().count() > limit {
        let cut_byte = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..cut_byte];
        let half = window.char_indices().nth(limit / 2).map_or(0, |(i, _)| i);
        let cut = window[half..]
            .rfind(['\n', '。', '.', '！', '!', '？', '?', ' '])
            .map(|i| {
                let at = half + i;
                at + window[at..].chars().next().map_or(1, char::len_utf8)
            })
            .unwrap_or(cut_byte);
        out.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// The answer as Block Kit blocks: the text in sections (split at Slack's
/// limit), then a context block listing the sources; or a clear "not in
/// the knowledge base" section.
pub fn blocks(answer: &Answer) -> Vec<Value> {
    let mut blocks = Vec::new();
    if !answer.grounded {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": format!(":warning: {}", escape(&answer.answer)) },
        }));
        return blocks;
    }
    for piece in split_text(&escape(&answer.answer), SECTION_LIMIT) {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": piece } }));
    }
    // A context block holds at most 10 elements.
    let sources: Vec<Value> = answer
        .citations
        .iter()
        .take(10)
        .map(|c| {
            let quote = c.evidence.first().unwrap_or(&c.snippet);
            let quote: String = quote.chars().take(150).collect();
            json!({
                "type": "mrkdwn",
                "text": format!(
                    "*[{}]* {} › {} — _{}_",
                    c.n,
                    escape(&c.source),
                    escape(&c.section),
                    escape(quote.trim())
                ),
            })
        })
        .collect();
    if !sources.is_empty() {
        blocks.push(json!({ "type": "context", "elements": sources }));
    }
    blocks
}

/// Remembers event ids for a while, so a retried delivery is answered once.
pub struct Dedupe {
    seen: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    capacity: usize,
    /// Shared with the other replicas, when configured.
    shared: Option<Redis>,
}

impl Dedupe {
    /// Ids are kept for `ttl`, at most `capacity` of them (oldest dropped).
    pub fn new(ttl: Duration, capacity: usize) -> Dedupe {
        Dedupe {
            seen: Mutex::new(HashMap::new()),
            ttl,
            capacity,
            shared: None,
        }
    }

    /// Remembers ids in `redis` too, so replicas share what they have seen.
    pub fn shared(mut self, redis: Redis) -> Dedupe {
        self.shared = Some(redis);
        self
    }

    /// True the first time any replica sees `id`. When the shared store
    /// cannot be reached this replica's memory decides: a retry that lands
    /// elsewhere may then be answered twice, which beats not answering.
    pub async fn first_delivery(&self, id: &str) -> bool {
        if let Some(redis) = &self.shared {
            match redis
                .set_if_absent(&format!("kbqa:slack:event:{id}"), self.ttl)
                .await
            {
                Ok(first) => {
                    // Kept locally as well, for the fallback.
                    let _ = self.first_time(id);
                    return first;
                }
                Err(e) => tracing::warn!(
                    "Slack dedupe store redis://{} failed: {e}; deciding by this replica's memory",
                    redis.addr()
                ),
            }
        }
        self.first_time(id)
    }

    /// True the first time `id` is seen (within the time limit).
    pub fn first_time(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(id)
            .is_some_and(|&t| now.duration_since(t) < self.ttl)
        {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, &mut t| now.duration_since(t) < self.ttl);
            while seen.len() >= self.capacity {
                let oldest = seen.iter().min_by_key(|(_, &t)| t).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => seen.remove(&k),
                    None => break,
                };
            }
        }
        seen.insert(id.to_string(), now);
        true
    }
}

/// Posts to Slack's Web API and to response URLs, with bounded retries.
pub struct Client {
    http: reqwest::Client,
    config: SlackConfig,
}

/// Attempts per message (the first included).
const ATTEMPTS: u32 = 4;

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
            let mut req = self.http.post(url).json(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let wait = match req.send().await {
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    last = "rate limited (429)".into();
                    r.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1)
                        .min(30)
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status());
                    1 << attempt
                }
                Ok(r) if !r.status().is_success() => {
                    return Err(format!("HTTP {} from {url}", r.status()));
                }
                Ok(r) => {
                    // The Web API says `{"ok": false, "error": …}` with 200;
                    // response URLs answer plain "ok".
                    let text = r.text().await.unwrap_or_default();
                    match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v["ok"] == false => {
                            let error = v["error"].as_str().unwrap_or("unknown").to_string();
                            if error != "ratelimited" {
                                return Err(format!("Slack API error: {error}"));
                            }
                            last = error;
                            1
                        }
                        _ => return Ok(()),
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    1 << attempt
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
}

/// The Slack state of a server: the secret, the client and the dedupe memory.
pub struct Slack {
    secret: String,
    client: Client,
    dedupe: Dedupe,
}

impl Slack {
    /// `None` when no signing secret is configured (the routes are off).
    pub fn from_config(config: &SlackConfig) -> Option<Arc<Slack>> {
        let secret = config.signing_secret.clone()?;
        Some(Arc::new(Slack {
            secret,
            client: Client::new(config.clone()),
            dedupe: {
                let memory = Dedupe::new(Duration::from_secs(3600), 10_000);
                match &config.dedupe_redis {
                    Some(redis) => memory.shared(redis.clone()),
                    None => memory,
                }
            },
        }))
    }

    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        verify(&self.secret, headers, body, now_unix()).map_err(|r| {
            tracing::warn!("rejected a Slack request: {}", r.message());
            ApiError::BadSignature(r.message().to_string())
        })
    }
}

/// Answers `question` through the server's admission, as any other answer.
async fn answer(state: &Arc<State>, question: String) -> Result<Answer, ApiError> {
    let opts = crate::answer::AskOptions::from_config(state.config());
    crate::retrieve::check_query(&question, opts.k)?;
    let admitted = admit(state).await?;
    finished(run_answer(state, admitted, question, opts))
        .await
        .map(|a| *a)
}

/// What the bot says when it cannot answer at all.
fn failure_text(e: &ApiError) -> String {
    match e {
        ApiError::Busy { .. } => {
            ":hourglass: Too many questions at once; please ask again in a minute. 问题太多，请稍后再问。".into()
        }
        ApiError::InvalidQuery(m) => format!(":warning: {m}"),
        _ => ":warning: Sorry, the answer failed. 抱歉，回答失败。".into(),
    }
}

/// The Slack state, if the routes are on and the request is signed.
fn verified(
    state: &State,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<Slack>, ApiError> {
    let slack = state
        .slack()
        .ok_or_else(|| ApiError::NotFound(route.to_string()))?;
    slack.check(headers, body)?;
    Ok(slack)
}

/// Answers `question` in the background (Slack wants its acknowledgement
/// within 3 s) and hands the text and blocks to `deliver`.
fn answer_in_background<F, Fut>(state: Arc<State>, question: String, deliver: F)
where
    F: FnOnce(String, Vec<Value>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use tracing::Instrument;
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let (text, blocks) = match answer(&state, question).await {
                Ok(a) => (a.answer.clone(), blocks(&a)),
                Err(e) => {
                    let t = failure_text(&e);
                    let section = json!({"type": "section", "text": {"type": "mrkdwn", "text": t}});
                    (t, vec![section])
                }
            };
            if let Err(e) = deliver(text, blocks).await {
                tracing::error!("could not post the answer to Slack: {e}");
            }
        }
        .instrument(span),
    );
}

/// `POST /slack/events`.
pub async fn events(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slack = verified(&state, "/slack/events", &headers, &body)?;
    let envelope: Envelope = crate::server::decode(&body)?;
    let (event_id, event, authorizations) = match envelope {
        Envelope::UrlVerification { challenge } => {
            return Ok(Json(json!({ "challenge": challenge })).into_response())
        }
        Envelope::Other => return Ok(().into_response()),
        Envelope::EventCallback {
            event_id,
            event,
            authorizations,
        } => (event_id, event, authorizations),
    };
    let retry = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    if !slack.dedupe.first_delivery(&event_id).await {
        tracing::info!(event_id, retry, "duplicate Slack delivery ignored");
        return Ok(().into_response());
    }
    let bot_user = authorizations.first().and_then(|a| a.user_id.as_deref());
    let Some(q) = question_in(&event, bot_user) else {
        tracing::debug!(event_id, kind = event.kind, "Slack event ignored");
        return Ok(().into_response());
    };
    tracing::info!(event_id, channel = q.channel, "Slack question");
    answer_in_background(state, q.text, move |text, blocks| async move {
        slack
            .client
            .post_message(&q.channel, &q.thread_ts, &text, &blocks)
            .await
    });
    Ok(().into_response())
}

/// A slash command's form fields.
#[derive(Debug, Deserialize)]
pub struct Command {
    /// `/ask`.
    #[serde(default)]
    pub command: String,
    /// What follows the command.
    #[serde(default)]
    pub text: String,
    /// Where to post the delayed answer.
    pub response_url: String,
}

/// `POST /slack/commands`.
pub async fn commands(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slack = verified(&state, "/slack/commands", &headers, &body)?;
    let cmd: Command = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid slash command form: {e}")))?;
    let question = cmd.text.trim().to_string();
    let name = if cmd.command.is_empty() {
        "/ask"
    } else {
        cmd.command.as_str()
    };
    if question.is_empty() {
        return Ok(Json(json!({
            "response_type": "ephemeral",
            "text": format!("Usage: `{name} <question>` — e.g. `{name} 什么是EFLOPS？` or `{name} What is RLHF?`. Answers come from the knowledge base, with sources."),
        }))
        .into_response());
    }
    if let Err(e) = crate::retrieve::check_query(&question, 1) {
        return Ok(
            Json(json!({ "response_type": "ephemeral", "text": format!(":warning: {e}") }))
                .into_response(),
        );
    }
    let response_url = cmd.response_url;
    answer_in_background(state, question, move |text, blocks| async move {
        slack.client.respond(&response_url, &text, &blocks).await
    });
    Ok(Json(json!({
        "response_type": "ephemeral",
        "text": format!(":mag: Searching the knowledge base for “{}”… 正在查找…", cmd.text.trim()),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2, through the same HMAC the signature uses.
        let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_verify_and_failures_say_why() {
        let body = b"{\"type\":\"url_verification\"}";
        let now = 1_800_000_000;
        let sig = signature("secret", &now.to_string(), body);
        let headers = |ts: i64, sig: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
            h.insert("x-slack-signature", sig.parse().unwrap());
            h
        };
        assert_eq!(
            verify("secret", &headers(now, &sig), body, now + 10),
            Ok(())
        );
        assert_eq!(
            verify("other", &headers(now, &sig), body, now),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify("secret", &headers(now, &sig), b"{}", now),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify("secret", &headers(now, &sig), body, now + 6 * 60),
            Err(Rejected::Stale)
        );
        assert_eq!(
            verify("secret", &headers(now, "v0=zz"), body, now),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify("secret", &HeaderMap::new(), body, now),
            Err(Rejected::MissingHeaders)
        );
    }

    #[test]
    fn only_people_addressing_the_bot_are_answered() {
        let mention = Event {
            kind: "app_mention".into(),
            user: Some("U1".into()),
            text: Some("<@UBOT> 什么是 &lt;RLHF&gt;？".into()),
            channel: Some("C1".into()),
            ts: Some("100.1".into()),
            ..Event::default()
        };
        let q = question_in(&mention, Some("UBOT")).unwrap();
        assert_eq!(q.text, "什么是 <RLHF>？");
        assert_eq!(q.thread_ts, "100.1");
        let in_thread = Event {
            thread_ts: Some("99.0".into()),
            ..mention.clone()
        };
        assert_eq!(question_in(&in_thread, None).unwrap().thread_ts, "99.0");
        let by_bot = Event {
            bot_id: Some("B1".into()),
            ..mention.clone()
        };
        assert!(question_in(&by_bot, None).is_none());
        let by_itself = Event {
            user: Some("UBOT".into()),
            ..mention.clone()
        };
        assert!(question_in(&by_itself, Some("UBOT")).is_none());
        let edit = Event {
            subtype: Some("message_changed".into()),
            ..mention.clone()
        };
        assert!(question_in(&edit, None).is_none());
        let channel_message = Event {
            kind: "message".into(),
            channel_type: Some("channel".into()),
            ..mention.clone()
        };
        assert!(question_in(&channel_message, None).is_none());
        let dm = Event {
            kind: "message".into(),
            channel_type: Some("im".into()),
            ..mention.clone()
        };
        assert!(question_in(&dm, None).is_some());
        let only_mention = Event {
            text: Some("<@UBOT>".into()),
            ..mention.clone()
        };
        assert!(question_in(&only_mention, None).is_none());
    }

    #[test]
    fn long_answers_split_within_the_section_limit() {
        let text = "大模型需要大量算力。".repeat(700);
        let pieces = split_text(&text, SECTION_LIMIT);
        assert!(pieces.len() >= 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= SECTION_LIMIT));
        assert!(pieces.iter().all(|p| p.ends_with('。')));
        assert_eq!(pieces.concat(), text);
        let no_breaks = "x".repeat(7000);
        let pieces = split_text(&no_breaks, SECTION_LIMIT);
        assert_eq!(pieces.concat(), no_breaks);
    }

    #[test]
    fn dedupe_is_bounded_and_time_limited() {
        let d = Dedupe::new(Duration::from_secs(60), 3);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        for id in ["b", "c", "d"] {
            assert!(d.first_time(id));
        }
        assert!(d.seen.lock().unwrap().len() <= 3);
        let short = Dedupe::new(Duration::from_millis(1), 10);
        assert!(short.first_time("x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.first_time("x"));
    }
}
