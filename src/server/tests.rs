//! The error table, through the whole application: every status a client
//! can get, from `app(state).oneshot(request)`, with no index and no model
//! loaded. That works because each handler validates its request before it
//! asks for the engine, and admission takes a worker before the engine.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::api::{AskRequest, SearchRequest};
use super::app;
use super::error::ApiError;
use super::openai::ChatRequest;
use super::pool::deadline_in;
use super::service::decode;
use super::state::State;
use crate::error::Error;
use crate::Config;

/// A response's status, headers and JSON body (`Null` when not JSON).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The `error.code` of the body.
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// Sends one request to a fresh `app(state)`.
async fn send(
    state: &Arc<State>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app(state.clone())
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn post(state: &Arc<State>, path: &str, body: Value) -> Reply {
    send(state, "POST", path, &[], body.to_string()).await
}

fn loading() -> Arc<State> {
    State::new(Config::default())
}

#[tokio::test]
async fn malformed_requests_and_bad_options_get_400() {
    let state = loading();
    let r = send(&state, "POST", "/v1/ask", &[], "{\"question\": ").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let r = send(&state, "POST", "/v1/search", &[], "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    for (path, body) in [
        (
            "/v1/ask",
            json!({"question": "什么是RLHF？", "temperature": 5}),
        ),
        ("/v1/ask", json!({"question": "什么是RLHF？", "top_p": 0})),
        (
            "/v1/ask",
            json!({"question": "什么是RLHF？", "max_tokens": 0}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": []}),
        ),
    ] {
        let r = post(&state, path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            r.body
        );
        assert_eq!(r.code(), "bad_request");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_api_key_gets_401() {
    let mut config = Config::default();
    config.server.api_keys = vec!["alpha-key".into()];
    let state = State::new(config);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "alpha-key")],
    ] {
        let r = send(&state, "GET", "/v1/models", &headers, Body::empty()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(r.code(), "unauthorized");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        // Checked before the body and before readiness.
        let r = send(&state, "POST", "/v1/ask", &headers, "{").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let ok = [("authorization", "Bearer alpha-key")];
    let r = send(&state, "GET", "/v1/models", &ok, Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"][0]["id"], "kbqa");
    // Routes outside /v1 need no key.
    let r = send(&state, "GET", "/healthz", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_routes_turned_off_get_404() {
    let state = loading();
    let r = send(&state, "GET", "/v1/nothing", &[], Body::empty()).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    // No admin keys: the reload route is off.
    let r = send(&state, "POST", "/admin/reload", &[], Body::empty()).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    // No signing secret: the Slack routes are off.
    let r = send(&state, "POST", "/slack/events", &[], "{}").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = post(
        &state,
        "/v1/chat/completions",
        json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "unknown_kb"));
    let r = send(&state, "GET", "/v1/ask", &[], Body::empty()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let mut config = Config::default();
    config.server.max_body_bytes = 100;
    let state = State::new(config);
    let huge = json!({ "question": "x".repeat(200) }).to_string();
    for path in ["/v1/ask", "/v1/search", "/v1/chat/completions"] {
        let r = send(&state, "POST", path, &[], huge.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.code(), "body_too_large");
    }
}

#[tokio::test]
async fn questions_that_cannot_be_asked_get_422_before_the_engine_is_needed() {
    let state = loading();
    let long = "问".repeat(2001);
    for (path, body) in [
        ("/v1/ask", json!({"question": "   "})),
        ("/v1/ask", json!({"question": ""})),
        ("/v1/ask", json!({"question": long})),
        ("/v1/ask", json!({"question": "什么是RLHF？", "k": 0})),
        ("/v1/ask", json!({"question": "什么是RLHF？", "k": 51})),
        // An empty question stays empty whatever the history.
        (
            "/v1/ask",
            json!({"question": " ", "history": ["什么是RLHF？"]}),
        ),
        ("/v1/search", json!({"query": ""})),
        ("/v1/search", json!({"query": "RLHF", "k": 0})),
        ("/v1/search", json!({"query": "RLHF", "k": 51})),
        (
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": [{"role": "user", "content": "  "}]}),
        ),
    ] {
        let r = post(&state, path, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {}",
            r.body
        );
        assert_eq!(r.code(), "invalid_query");
    }
}

#[tokio::test]
async fn a_full_queue_gets_429_with_retry_after() {
    let mut config = Config::default();
    config.server.workers = 1;
    config.server.queue = 0;
    let state = State::new(config);
    let _busy = state.pool().admit(deadline_in(60)).await.unwrap();
    let question = json!({"question": "什么是RLHF？"});
    let r = post(&state, "/v1/ask", question.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "busy")
    );
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let counted = state.metrics().render(0, 0);
    assert!(
        counted
            .lines()
            .any(|l| l == "kbqa_answers_rejected_total 1"),
        "{counted}"
    );
    let chat = json!({"model": "kbqa", "messages": [{"role": "user", "content": "什么是RLHF？"}]});
    let r = post(&state, "/v1/chat/completions", chat).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Searches do not queue behind answers: still loading, not busy.
    let r = post(&state, "/v1/search", json!({"query": "RLHF"})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
}

#[tokio::test]
async fn without_an_engine_valid_requests_get_503_with_retry_after() {
    let state = loading();
    let cases = [
        ("POST", "/v1/search", json!({"query": "RLHF"})),
        ("POST", "/v1/ask", json!({"question": "什么是RLHF？"})),
        (
            "POST",
            "/v1/ask",
            json!({"question": "什么是RLHF？", "stream": true}),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": [{"role": "user", "content": "什么是RLHF？"}]}),
        ),
        ("GET", "/readyz", Value::Null),
    ];
    for (method, path, body) in cases {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let r = send(&state, method, path, &[], body).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.code(), "unavailable");
        assert_eq!(r.headers[header::RETRY_AFTER], "1");
    }
    // The answer that could not start freed its worker.
    assert_eq!(state.pool().running(), 0);
}

#[test]
fn each_kind_of_library_error_gets_its_status() {
    let path = || PathBuf::from("indexes");
    let cases: Vec<(Error, StatusCode, &str, Option<u64>)> = vec![
        (
            Error::InvalidQuery("the query is empty".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            None,
        ),
        (
            Error::InvalidOption("temperature must be between 0 and 2".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            Error::NoIndex(path()),
            StatusCode::SERVICE_UNAVAILABLE,
            "index_unavailable",
            Some(30),
        ),
        (
            Error::IndexLocked(path()),
            StatusCode::SERVICE_UNAVAILABLE,
            "index_unavailable",
            Some(30),
        ),
        (
            Error::UnknownModel {
                setting: "nope".into(),
                known: "e5-small".into(),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            Some(30),
        ),
        (
            Error::Upstream {
                url: "http://127.0.0.1:1".into(),
                reason: "connection refused".into(),
            },
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            None,
        ),
        (
            Error::Model("shape mismatch".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
        ),
        (
            Error::Config("bad value".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
        ),
        (
            Error::io(path(), std::io::Error::other("disk gone")),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
        ),
    ];
    for (error, status, code, retry_after) in cases {
        let shown = error.to_string();
        let e = ApiError::from(error);
        assert_eq!(e.status(), status, "{shown}");
        assert_eq!(e.code(), code, "{shown}");
        assert_eq!(e.retry_after(), retry_after, "{shown}");
        assert!(
            e.message().contains(shown.split(": ").last().unwrap()),
            "{shown}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn decoders_reject_garbage_with_400(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        for e in [
            decode::<AskRequest>(&bytes).err(),
            decode::<SearchRequest>(&bytes).err(),
            decode::<ChatRequest>(&bytes).err(),
        ].into_iter().flatten() {
            proptest::prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }
}

/// Two knowledge bases, one key for both and one for `en` only, nothing
/// loaded: each request is checked for its knowledge base before any
/// engine is asked for.
fn two_kbs() -> Arc<State> {
    let mut config = Config::default();
    config.server.api_keys = vec!["all-key".into()];
    config.kbs.insert(
        "en".into(),
        crate::config::KbConfig {
            corpus: "en-docs".into(),
            description: "English notes".into(),
            api_keys: vec!["en-key".into()],
            ..Default::default()
        },
    );
    config.validate().unwrap();
    State::new(config)
}

#[tokio::test]
async fn a_knowledge_base_is_chosen_per_request_and_keys_may_be_limited_to_some() {
    let state = two_kbs();
    let bearer = |k: &'static str| [("authorization", format!("Bearer {k}"))];
    let ask = |kb: Option<&str>| json!({ "question": "What is RLHF?", "kb": kb }).to_string();
    let reply = |key: &'static str, path: &'static str, body: String| {
        let state = state.clone();
        async move {
            let h = bearer(key);
            send(&state, "POST", path, &[(h[0].0, h[0].1.as_str())], body).await
        }
    };
    // A key for every knowledge base: past the checks (503: still loading).
    for kb in [None, Some("en")] {
        let r = reply("all-key", "/v1/ask", ask(kb)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{kb:?} {:?}",
            r.body
        );
    }
    // The `en` key: `en` yes, the default no.
    let r = reply(
        "en-key",
        "/v1/search",
        json!({"query": "x", "kb": "en"}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let r = reply("en-key", "/v1/ask", ask(None)).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "What is RLHF?"}]})
            .to_string()
    };
    let r = reply("en-key", "/v1/chat/completions", chat("kbqa")).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = reply("en-key", "/v1/chat/completions", chat("kbqa:en")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    // An unknown one is a 404 that lists the known ones.
    let r = reply("all-key", "/v1/ask", ask(Some("hr"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "unknown_kb"));
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("default, en"), "{message}");
    let r = reply("all-key", "/v1/chat/completions", chat("kbqa:hr")).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "unknown_kb"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("kbqa, kbqa:en"));
    // No key, or a wrong one: 401 as before.
    let r = post(
        &state,
        "/v1/ask",
        serde_json::from_str(&ask(Some("en"))).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A limited key learns no other names: 403 for an unknown one too.
    let r = reply("en-key", "/v1/ask", ask(Some("hr"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn each_key_sees_one_model_per_knowledge_base_it_may_use() {
    let state = two_kbs();
    let bearer = |k: &'static str| [("authorization", format!("Bearer {k}"))];
    let models = |key: &'static str| {
        let state = state.clone();
        async move {
            let h = bearer(key);
            let r = send(
                &state,
                "GET",
                "/v1/models",
                &[(h[0].0, h[0].1.as_str())],
                Body::empty(),
            )
            .await;
            let data = r.body["data"].as_array().cloned().unwrap_or_default();
            let ids: Vec<String> = data
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            (ids, data)
        }
    };
    let (ids, data) = models("all-key").await;
    assert_eq!(ids, ["kbqa", "kbqa:en"]);
    assert_eq!(data[1]["description"], "English notes");
    assert_eq!(models("en-key").await.0, ["kbqa:en"]);
}
