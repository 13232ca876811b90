//! Slack (and Slack-compatible servers: Mattermost, Rocket.Chat): the
//! Events API (`POST /slack/events`) and slash commands
//! (`POST /slack/commands`).
//!
//! Slack is one more front end, like the JSON API: it parses its question
//! once and answers through the server's admission ([`crate::server::service`]).
//! It brings its own router and state ([`routes`]), so the server core
//! knows nothing of it beyond that one function, and it imports nothing
//! from the core's `mod.rs`.
//!
//! Slack gives an app 3 seconds to acknowledge a request and retries when
//! it does not, so both routes verify the signature, acknowledge at once,
//! and answer in the background: a threaded `chat.postMessage` for events,
//! a POST to `response_url` for commands. Retried deliveries of one event
//! are recognised by `event_id` and answered once ([`dedupe`]). The bot
//! never answers bots (itself included), edits or other message subtypes,
//! so it cannot talk to itself in a loop.

pub mod client;
pub mod dedupe;
pub mod message;
pub mod redis;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::answer::{Answer, AskOptions, AskOverrides, Question};
use crate::config::SlackConfig;
use crate::server::error::ApiError;
use crate::server::service::{admit, decode, finished, run_answer};
use crate::server::state::State;
use client::Client;
use dedupe::Dedupe;
use message::{blocks, question_in, section, Command, Envelope};

/// The Slack routes, when a signing secret is configured; without one, no
/// routes (`/slack/…` answers 404 like any unknown path).
pub fn routes(state: Arc<State>) -> Router {
    let Some(slack) = Slack::from_config(&state.config().slack) else {
        return Router::new();
    };
    Router::new()
        .route("/slack/events", post(events))
        .route("/slack/commands", post(commands))
        .with_state(Bot {
            server: state,
            slack: Arc::new(slack),
        })
}

/// The Slack handlers' state: the server's, and Slack's own.
#[derive(Clone)]
struct Bot {
    server: Arc<State>,
    slack: Arc<Slack>,
}

/// Slack's own state: the secret, the client and the dedupe memory.
pub struct Slack {
    secret: String,
    client: Client,
    dedupe: Dedupe,
}

impl Slack {
    /// `None` when no signing secret is configured (the routes are off).
    ///
    /// A Redis for dedupe that cannot be set up (its CA file unreadable) is
    /// logged as an error and left out: each replica then remembers only
    /// its own deliveries, as when the Redis is down.
    pub fn from_config(config: &SlackConfig) -> Option<Slack> {
        let secret = config.signing_secret.clone()?;
        let mut dedupe = Dedupe::new(Duration::from_secs(3600), 10_000);
        if let Some(url) = config.dedupe_redis.as_deref() {
            match redis::Redis::from_url_with_ca(url, config.dedupe_redis_ca.as_deref()) {
                Ok(r) => dedupe = dedupe.shared(r),
                Err(e) => tracing::error!(
                    "slack.dedupe_redis cannot be used ({e}); \
                     Slack events are deduplicated by this replica's memory only"
                ),
            }
        }
        Some(Slack {
            secret,
            client: Client::new(config.clone()),
            dedupe,
        })
    }

    /// 401 unless the request is signed with the secret, recently.
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        verify::verify(&self.secret, headers, body, verify::now_unix()).map_err(|r| {
            tracing::warn!("rejected a Slack request: {}", r.message());
            ApiError::BadSignature(r.message().to_string())
        })
    }
}

/// A question ready to answer: the question, parsed once, the options
/// (Slack overrides none) and the knowledge base its channel asks.
type Prepared = (Question, AskOptions, String);

/// Parses `text`, asked in `channel`, once, before Slack is acknowledged.
/// The channel chooses the knowledge base (`slack.channel_kbs`, else
/// `slack.kb`).
fn prepare(state: &State, text: &str, channel: &str) -> Result<Prepared, ApiError> {
    let slack = &state.config().slack;
    let kb = slack.channel_kbs.get(channel).unwrap_or(&slack.kb).clone();
    let opts = AskOptions::resolve(state.kb_config(Some(&kb))?, &AskOverrides::default())?;
    let question = Question::parse(text, opts.k)?;
    Ok((question, opts, kb))
}

/// Answers through the server's admission, as any other answer.
async fn answer(
    state: &Arc<State>,
    prepared: Result<Prepared, ApiError>,
) -> Result<Answer, ApiError> {
    let (question, opts, kb) = prepared?;
    let admitted = admit(state, Some(&kb)).await?;
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

/// Answers in the background (Slack wants its acknowledgement within 3 s)
/// and hands the text and blocks to `deliver`; a question that did not
/// parse gets its failure text the same way.
fn answer_in_background<F, Fut>(state: Arc<State>, prepared: Result<Prepared, ApiError>, deliver: F)
where
    F: FnOnce(String, Vec<Value>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use tracing::Instrument;
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let (text, blocks) = match answer(&state, prepared).await {
                Ok(a) => (a.answer.clone(), blocks(&a)),
                Err(e) => {
                    e.log();
                    let t = failure_text(&e);
                    let s = section(&t);
                    (t, vec![s])
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
async fn events(
    AxumState(bot): AxumState<Bot>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    bot.slack.check(&headers, &body)?;
    let (event_id, event, authorizations) = match decode::<Envelope>(&body)? {
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
    if !bot.slack.dedupe.first_delivery(&event_id).await {
        tracing::info!(event_id, retry, "duplicate Slack delivery ignored");
        return Ok(().into_response());
    }
    let bot_user = authorizations.first().and_then(|a| a.user_id.as_deref());
    let Some(asked) = question_in(&event, bot_user) else {
        tracing::debug!(event_id, kind = event.kind, "Slack event ignored");
        return Ok(().into_response());
    };
    tracing::info!(event_id, channel = asked.channel, "Slack question");
    let prepared = prepare(&bot.server, &asked.text, &asked.channel);
    let slack = bot.slack.clone();
    answer_in_background(bot.server, prepared, move |text, blocks| async move {
        slack
            .client
            .post_message(&asked.channel, &asked.thread_ts, &text, &blocks)
            .await
    });
    Ok(().into_response())
}

/// `POST /slack/commands`.
async fn commands(
    AxumState(bot): AxumState<Bot>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    bot.slack.check(&headers, &body)?;
    let cmd: Command = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid slash command form: {e}")))?;
    let name = if cmd.command.is_empty() {
        "/ask"
    } else {
        cmd.command.as_str()
    };
    if cmd.text.trim().is_empty() {
        return Ok(ephemeral(format!("Usage: `{name} <question>` — e.g. `{name} 什么是EFLOPS？` or `{name} What is RLHF?`. Answers come from the knowledge base, with sources.")));
    }
    let prepared = match prepare(&bot.server, &cmd.text, &cmd.channel_id) {
        Ok(p) => p,
        Err(e) => return Ok(ephemeral(failure_text(&e))),
    };
    let ack = ephemeral(format!(
        ":mag: Searching the knowledge base for “{}”… 正在查找…",
        prepared.0.text()
    ));
    let (slack, response_url) = (bot.slack.clone(), cmd.response_url);
    answer_in_background(bot.server, Ok(prepared), move |text, blocks| async move {
        slack.client.respond(&response_url, &text, &blocks).await
    });
    Ok(ack)
}

/// A reply to a slash command that only its user sees.
fn ephemeral(text: String) -> Response {
    Json(json!({ "response_type": "ephemeral", "text": text })).into_response()
}
