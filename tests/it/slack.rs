//! The Slack bot: signed requests, url_verification, app mentions answered
//! once in their thread, slash commands — against a real HTTP server on
//! loopback standing in for Slack's Web API (it records every request).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::server::{request, Resp, Server};

pub(crate) const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub(crate) const TOKEN: &str = "xoxb-test-token";

/// A request the fake Slack received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    authorization: Option<String>,
    pub(crate) body: Value,
}

/// Slack's Web API on loopback: records requests and answers `{"ok":true}`,
/// except the first message to channel `CRATE`, which gets 429.
pub(crate) struct FakeSlack {
    pub(crate) addr: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeSlack {
    pub(crate) fn start() -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let (mut length, mut authorization) = (0usize, None);
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => length = v.trim().parse().unwrap(),
                        "authorization" => authorization = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let rate_limited = body["channel"] == "CRATE"
                    && !log
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|x: &Recorded| x.body["channel"] == "CRATE");
                log.lock().unwrap().push(Recorded {
                    path,
                    authorization,
                    body,
                });
                let reply = if rate_limited {
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}".to_string()
                };
                let _ = r.get_mut().write_all(reply.as_bytes());
            }
        });
        FakeSlack { addr, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `n` requests match `pred` (panics after `secs`).
    pub(crate) fn wait_for(
        &self,
        n: usize,
        secs: u64,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let got: Vec<Recorded> = self.requests().into_iter().filter(|r| pred(r)).collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "waited {secs} s for {n} request(s); have {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Slack's signature, computed here independently of kbqa's code.
fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

pub(crate) fn signed_post(
    server: &Server,
    path: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Resp {
    let ts = now();
    let sig = sign(SECRET, ts, body);
    let ts = ts.to_string();
    let mut headers = vec![
        ("X-Slack-Request-Timestamp", ts.as_str()),
        ("X-Slack-Signature", sig.as_str()),
    ];
    if path.ends_with("commands") {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    headers.extend_from_slice(extra);
    request(&server.addr, "POST", path, &headers, body)
}

fn slack_server(fake: &FakeSlack) -> Server {
    slack_server_with(fake, &[])
}

fn slack_server_with(fake: &FakeSlack, extra: &[(&str, &str)]) -> Server {
    let api = format!("http://{}/api", fake.addr);
    let mut env = vec![
        ("KBQA_SLACK_SIGNING_SECRET", SECRET),
        ("KBQA_SLACK_BOT_TOKEN", TOKEN),
        ("KBQA_SLACK_API_BASE", api.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

pub(crate) fn mention(event_id: &str, channel: &str, text: &str, extra: Value) -> Vec<u8> {
    let mut event = json!({
        "type": "app_mention",
        "user": "UASKER",
        "text": text,
        "ts": "1700000000.000100",
        "channel": channel,
    });
    for (k, v) in extra.as_object().unwrap() {
        event[k] = v.clone();
    }
    json!({
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"user_id": "UBOT", "is_bot": true}],
        "event": event,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn unsigned_or_stale_slack_requests_get_401_and_no_answer() {
    let fake = FakeSlack::start();
    let server = slack_server(&fake);
    let body = mention("EvBad", "C1", "<@UBOT> What is RLHF?", json!({}));
    let ts = now();
    let good = sign(SECRET, ts, &body);
    let ts_s = ts.to_string();
    let old_ts = (ts - 6 * 60).to_string();
    let old_sig = sign(SECRET, ts - 6 * 60, &body);
    let wrong_secret = sign("not-the-secret", ts, &body);
    let mut tampered = body.clone();
    let at = tampered.len() - 5;
    tampered[at] ^= 1;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            vec![
                ("X-Slack-Request-Timestamp", &ts_s),
                ("X-Slack-Signature", &wrong_secret),
            ],
            &body,
        ),
        (
            "tampered body",
            vec![
                ("X-Slack-Request-Timestamp", &ts_s),
                ("X-Slack-Signature", &good),
            ],
            &tampered,
        ),
        (
            "no signature",
            vec![("X-Slack-Request-Timestamp", &ts_s)],
            &body,
        ),
        ("no timestamp", vec![("X-Slack-Signature", &good)], &body),
        ("no headers", vec![], &body),
        (
            "timestamp 6 minutes old",
            vec![
                ("X-Slack-Request-Timestamp", &old_ts),
                ("X-Slack-Signature", &old_sig),
            ],
            &body,
        ),
        (
            "signature not hex",
            vec![
                ("X-Slack-Request-Timestamp", &ts_s),
                ("X-Slack-Signature", "v0=xyz"),
            ],
            &body,
        ),
    ];
    for (what, headers, body) in &cases {
        for path in ["/slack/events", "/slack/commands"] {
            let r = request(&server.addr, "POST", path, headers, body);
            assert_eq!(r.status, 401, "{what} on {path}: {}", r.body);
            assert_eq!(r.error_code(), "bad_signature", "{what}");
        }
    }
    // A valid signature on the same event is accepted (and then answered).
    let ok = request(
        &server.addr,
        "POST",
        "/slack/events",
        &[
            ("X-Slack-Request-Timestamp", &ts_s),
            ("X-Slack-Signature", &good),
        ],
        &body,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let posts = fake.wait_for(1, 180, |_| true);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fake.requests().len(),
        1,
        "only the valid request is answered: {posts:?}"
    );

    // url_verification round trip.
    let challenge = json!({"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"});
    let r = signed_post(
        &server,
        "/slack/events",
        challenge.to_string().as_bytes(),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["challenge"], challenge["challenge"]);
}

#[test]
fn an_app_mention_is_answered_once_in_its_thread_with_sources() {
    let fake = FakeSlack::start();
    let server = slack_server(&fake);
    let question = mention(
        "Ev001",
        "C1",
        "<@UBOT> What does EFLOPS mean?",
        json!({"thread_ts": "1699999999.000001"}),
    );
    let start = Instant::now();
    let r = signed_post(&server, "/slack/events", &question, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "acknowledged after {:?}",
        start.elapsed()
    );
    // Slack retries the same event; the bot's own message and an edit arrive too.
    let retry = signed_post(
        &server,
        "/slack/events",
        &question,
        &[
            ("X-Slack-Retry-Num", "1"),
            ("X-Slack-Retry-Reason", "http_timeout"),
        ],
    );
    assert_eq!(retry.status, 200);
    let own = mention(
        "Ev002",
        "C1",
        "EFLOPS means…",
        json!({"user": "UBOT", "bot_id": "B1"}),
    );
    assert_eq!(signed_post(&server, "/slack/events", &own, &[]).status, 200);
    let edit = mention(
        "Ev003",
        "C1",
        "<@UBOT> edited",
        json!({"subtype": "message_changed"}),
    );
    assert_eq!(
        signed_post(&server, "/slack/events", &edit, &[]).status,
        200
    );
    // A direct message in channel CRATE: the first post gets 429 + Retry-After.
    let dm = json!({
        "type": "event_callback",
        "event_id": "Ev004",
        "event": {"type": "message", "channel_type": "im", "user": "UASKER",
                  "text": "什么是RLHF？", "ts": "1700000001.000200", "channel": "CRATE"},
    })
    .to_string();
    assert_eq!(
        signed_post(&server, "/slack/events", dm.as_bytes(), &[]).status,
        200
    );

    let posts = fake.wait_for(1, 240, |r| r.body["channel"] == "C1");
    let dm_posts = fake.wait_for(2, 240, |r| r.body["channel"] == "CRATE");
    std::thread::sleep(Duration::from_secs(3));
    let all = fake.requests();
    assert_eq!(
        all.iter().filter(|r| r.body["channel"] == "C1").count(),
        1,
        "exactly one answer to the mention: {all:?}"
    );
    assert_eq!(
        all.len(),
        3,
        "mention once, DM twice (429 then ok): {all:?}"
    );
    let post = &posts[0];
    assert_eq!(post.path, "/api/chat.postMessage");
    assert_eq!(
        post.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(post.body["thread_ts"], "1699999999.000001");
    let blocks = post.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    let text = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(text.contains("EFLOPS"), "{text}");
    assert!(text.chars().count() <= 3000);
    let context = blocks.last().unwrap();
    assert_eq!(context["type"], "context", "{blocks:?}");
    let source = context["elements"][0]["text"].as_str().unwrap();
    assert!(source.starts_with("*[") && source.contains('›'), "{source}");
    assert!(!post.body["text"].as_str().unwrap().is_empty());
    // The DM is answered in its own thread (its ts), after the retry.
    assert_eq!(dm_posts[1].body["thread_ts"], "1700000001.000200");
    assert!(server.log().contains("duplicate Slack delivery ignored"));
}

#[test]
fn slack_posts_a_not_sure_answer_with_its_evidence_and_never_an_unchecked_one() {
    // A threshold no answer reaches: every checked answer is `not_sure`.
    let fake = FakeSlack::start();
    let server = slack_server_with(&fake, &[("KBQA_CONFIDENCE_THRESHOLD", "1")]);
    for (id, channel, text) in [
        ("EvN1", "CSURE", "<@UBOT> What does EFLOPS mean?"),
        // The model writes "…Canberra." for this one; the checks refuse it.
        ("EvN2", "COUT", "<@UBOT> What is the capital of Australia?"),
    ] {
        let body = mention(id, channel, text, json!({}));
        assert_eq!(
            signed_post(&server, "/slack/events", &body, &[]).status,
            200
        );
    }
    let unsure = &fake.wait_for(1, 240, |r| r.body["channel"] == "CSURE")[0];
    let refused = &fake.wait_for(1, 240, |r| r.body["channel"] == "COUT")[0];
    let section = |r: &Recorded| {
        r.body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let text = section(unsure);
    assert!(text.starts_with(":grey_question:"), "{text}");
    assert!(
        text.contains("not sure") && text.contains('"'),
        "evidence quoted: {text}"
    );
    let context = unsure.body["blocks"].as_array().unwrap().last().unwrap();
    assert_eq!(context["type"], "context", "{:?}", unsure.body);
    let whole = refused.body.to_string();
    assert!(!whole.contains("Canberra"), "{whole}");
    assert!(
        section(refused).contains(kbqa::answer::refusal_text(kbqa::answer::Lang::En)),
        "{whole}"
    );
}

#[test]
fn a_slash_command_is_acknowledged_then_answered_at_its_response_url() {
    let fake = FakeSlack::start();
    let server = slack_server(&fake);
    let response_url = format!("http://{}/respond/T1/42", fake.addr);
    let form = |text: &str| {
        format!(
            "token=x&team_id=T1&channel_id=C9&user_id=U1&command=%2Fask&text={}&response_url={}&trigger_id=1",
            text,
            response_url.replace(':', "%3A").replace('/', "%2F")
        )
    };
    // Empty text: usage help, nothing posted later.
    let help = signed_post(&server, "/slack/commands", form("").as_bytes(), &[]);
    assert_eq!(help.status, 200, "{}", help.body);
    assert!(help.json()["text"].as_str().unwrap().contains("Usage"));

    let start = Instant::now();
    let ack = signed_post(
        &server,
        "/slack/commands",
        form("%E4%BB%80%E4%B9%88%E6%98%AFEFLOPS%EF%BC%9F").as_bytes(), // 什么是EFLOPS？
        &[],
    );
    assert_eq!(ack.status, 200, "{}", ack.body);
    assert!(start.elapsed() < Duration::from_secs(3));
    let ack = ack.json();
    assert_eq!(ack["response_type"], "ephemeral");
    assert!(ack["text"].as_str().unwrap().contains("EFLOPS"), "{ack}");

    let posts = fake.wait_for(1, 240, |r| r.path == "/respond/T1/42");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.requests().len(), 1, "{:?}", fake.requests());
    let body = &posts[0].body;
    assert_eq!(posts[0].authorization, None, "response URLs take no token");
    assert_eq!(body["response_type"], "ephemeral");
    assert!(body["text"].as_str().unwrap().contains("EFLOPS"), "{body}");
    assert_eq!(body["blocks"][0]["type"], "section");
}

#[test]
fn without_a_signing_secret_the_slack_routes_are_off() {
    let server = Server::spawn(&[]);
    let body = mention("Ev1", "C1", "<@UBOT> hi", json!({}));
    let ts = now();
    let sig = sign(SECRET, ts, &body);
    let r = request(
        &server.addr,
        "POST",
        "/slack/events",
        &[
            ("X-Slack-Request-Timestamp", &ts.to_string()),
            ("X-Slack-Signature", &sig),
        ],
        &body,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let start = Instant::now();
    while !server.log().contains("Slack routes off") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` from Debian on a loopback port; killed on drop.
struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl RedisServer {
    /// `None` when Debian's redis-server is not installed (outside CI).
    fn start() -> Option<RedisServer> {
        let which = std::process::Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .unwrap();
        if !which.status.success() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is missing: .ci/run installs the Debian package"
            );
            eprintln!("skipped: no redis-server (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replicas_sharing_redis_answer_an_event_once_even_when_its_retry_lands_elsewhere() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeSlack::start();
    let api = format!("http://{}/api", fake.addr);
    let replica = || {
        Server::start(&[
            ("KBQA_SLACK_SIGNING_SECRET", SECRET),
            ("KBQA_SLACK_BOT_TOKEN", TOKEN),
            ("KBQA_SLACK_API_BASE", &api),
            ("KBQA_SLACK_DEDUPE_REDIS", &redis.url),
        ])
    };
    let (a, b) = (replica(), replica());
    let event = mention(
        "EvShared1",
        "C7",
        "<@UBOT> What does EFLOPS mean?",
        json!({}),
    );
    assert_eq!(signed_post(&a, "/slack/events", &event, &[]).status, 200);
    // Slack's retry reaches the other replica (and a third delivery the first).
    let retry = [
        ("X-Slack-Retry-Num", "1"),
        ("X-Slack-Retry-Reason", "http_timeout"),
    ];
    assert_eq!(signed_post(&b, "/slack/events", &event, &retry).status, 200);
    assert_eq!(signed_post(&a, "/slack/events", &event, &retry).status, 200);
    fake.wait_for(1, 240, |r| r.body["channel"] == "C7");
    std::thread::sleep(Duration::from_secs(3));
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.body["channel"] == "C7")
        .collect();
    assert_eq!(posts.len(), 1, "answered once across replicas: {posts:?}");
    assert!(
        b.log().contains("duplicate Slack delivery ignored"),
        "{}",
        b.log()
    );

    // Redis down: a replica still answers (by its own memory) and says why.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let event = mention("EvShared2", "C8", "<@UBOT> 什么是RLHF？", json!({}));
    assert_eq!(signed_post(&b, "/slack/events", &event, &[]).status, 200);
    fake.wait_for(1, 240, |r| r.body["channel"] == "C8");
    assert!(b.log().contains("Slack dedupe store"), "{}", b.log());
}
