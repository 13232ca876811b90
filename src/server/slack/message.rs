//! Slack's payloads: what arrives (event envelopes, slash-command forms,
//! messages with `<@U…>` mentions) and what the bot posts (Block Kit
//! sections within Slack's size limits, with the sources).
//!
//! Pure functions over data, so the fuzz target and unit tests exercise
//! them without a server.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::answer::{Answer, Status};

/// Slack's limit on the text of one section block.
pub const SECTION_LIMIT: usize = 3000;

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
    /// The channel it was typed in (it chooses the knowledge base).
    #[serde(default)]
    pub channel_id: String,
}

/// A message addressed to the bot, and where to answer it. Its text is
/// not yet a parsed question: the handler parses it once
/// ([`crate::answer::Question::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The text, mentions removed.
    pub text: String,
    /// The channel to answer in.
    pub channel: String,
    /// The thread to answer in (the message's thread, else the message).
    pub thread_ts: String,
}

/// What `event` asks the bot, if it is a message the bot should answer: a
/// mention of the bot or a direct message, written by a person, not an edit.
pub fn question_in(event: &Event, bot_user: Option<&str>) -> Option<Asked> {
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
    Some(Asked {
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
    if !answer.grounded && answer.status != Status::NotSure {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": format!(":warning: {}", escape(&answer.answer)) },
        }));
        return blocks;
    }
    // Not sure: the quoted evidence, marked, with its source below.
    let lead = if answer.status == Status::NotSure {
        ":grey_question: "
    } else {
        ""
    };
    for piece in split_text(&format!("{lead}{}", escape(&answer.answer)), SECTION_LIMIT) {
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

/// One mrkdwn section holding `text` (a failure or a notice).
pub fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_sure_answer_is_posted_with_its_evidence_and_source() {
        let answer: Answer = serde_json::from_value(json!({
            "question": "What does EFLOPS mean?",
            "answer": "I am not sure of the answer. The closest the knowledge base comes is: \"1 EFLOPS is 10^18 operations per second.\" [1]",
            "grounded": false,
            "status": "not_sure",
            "language": "en",
            "citations": [{"n": 1, "chunk_id": "c1", "source": "glossary.toml", "section": "Glossary > EFLOPS",
                "snippet": "EFLOPS", "evidence": ["1 EFLOPS is 10^18 operations per second."]}],
            "passages": [], "model": "m", "usage": {"prompt_tokens": 0, "cached_prompt_tokens": 0, "completion_tokens": 0},
            "timings": {"retrieve_ms": 0.0, "prefill_ms": 0.0, "decode_ms": 0.0, "total_ms": 0.0},
        }))
        .unwrap();
        let b = blocks(&answer);
        let text = b[0]["text"]["text"].as_str().unwrap();
        assert!(
            text.starts_with(":grey_question:") && text.contains("10^18"),
            "{b:?}"
        );
        assert!(
            b.iter()
                .any(|x| x["type"] == "context" && x.to_string().contains("Glossary &gt; EFLOPS")),
            "{b:?}"
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
}
