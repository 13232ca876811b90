//! `kbqa serve` on an ephemeral loopback port, with the real index and
//! models, spoken to by real clients: raw HTTP, curl, the `openai` Python
//! package and headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{repo, shipped_index, Scratch};

/// A running `kbqa serve`; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    log: Arc<Mutex<String>>,
    _scratch: Option<Scratch>,
}

impl Server {
    /// Starts a server over a copy of the shipped index with `env` set, and
    /// waits until it is ready.
    pub(crate) fn start(env: &[(&str, &str)]) -> Server {
        let server = Server::spawn(env);
        server.wait_ready();
        server
    }

    pub(crate) fn spawn(env: &[(&str, &str)]) -> Server {
        let scratch = Scratch::with_shipped_index();
        let mut server = Server::spawn_in(&scratch, &repo().join("corpus"), env);
        server._scratch = Some(scratch);
        server
    }

    /// A ready server over `corpus` and the index in `scratch`.
    pub(crate) fn start_on(scratch: &Scratch, corpus: &Path, env: &[(&str, &str)]) -> Server {
        let server = Server::spawn_in(scratch, corpus, env);
        server.wait_ready();
        server
    }

    fn spawn_in(scratch: &Scratch, corpus: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = scratch.command(corpus);
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .env("KBQA_LOG", "kbqa=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kbqa serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("kbqa serve did not start:\n{}", log.lock().unwrap()));
        Server {
            child,
            addr,
            log,
            _scratch: None,
        }
    }

    pub(crate) fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(180) {
            if request(&self.addr, "GET", "/readyz", &[], b"").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("kbqa serve never became ready:\n{}", self.log());
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Resp {
        request(&self.addr, "POST", path, &[], body.to_string().as_bytes())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs a client script of `tests/it/clients/` against this server;
    /// its stdout is JSON.
    pub(crate) fn client(&self, python: &std::path::Path, script: &str, args: &[&str]) -> Value {
        let out = Command::new(python)
            .arg(repo().join("tests/it/clients").join(script))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A metric's value from `/metrics` (0 when absent).
    pub(crate) fn metric(&self, name: &str) -> f64 {
        self.get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }

    /// The `{"error":{"code","message"}}` body's code.
    #[track_caller]
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {v}"
        );
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

fn send_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    s
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// Clients searching without pause while a test changes the index under
/// them: client `i` asks `addrs[i % addrs.len()]` for `queries[i % queries.len()]`.
pub(crate) struct SearchLoad {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl SearchLoad {
    pub(crate) fn start(addrs: &[String], queries: &[&'static str], clients: usize) -> SearchLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|i| {
                let (stop, statuses) = (stop.clone(), statuses.clone());
                let addr = addrs[i % addrs.len()].clone();
                let query = queries[i % queries.len()];
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let body = json!({ "query": query, "k": 3 }).to_string();
                        let r = request(&addr, "POST", "/v1/search", &[], body.as_bytes());
                        statuses.lock().unwrap().push(r.status);
                    }
                })
            })
            .collect();
        SearchLoad {
            stop,
            statuses,
            clients,
        }
    }

    /// Stops the clients; every one of their (over 40) requests succeeded.
    pub(crate) fn finish_without_failures(self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let statuses = self.statuses.lock().unwrap();
        assert!(statuses.len() > 40, "only {} requests", statuses.len());
        let failed = statuses.iter().filter(|&&s| s != 200).count();
        assert_eq!(failed, 0, "{failed} of {} requests failed", statuses.len());
    }
}

/// One HTTP/1.1 exchange over a fresh connection.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut r = BufReader::new(send_request(addr, method, path, headers, body));
    let (status, headers) = read_head(&mut r);
    let mut raw = Vec::new();
    let _ = r.read_to_end(&mut raw);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 4 + size..];
    }
    out
}

/// Opens a streaming request and returns its status and a reader of the
/// (chunk-encoded) body lines.
fn open_stream(addr: &str, path: &str, body: &Value) -> (u16, BufReader<TcpStream>) {
    let mut r = BufReader::new(send_request(
        addr,
        "POST",
        path,
        &[],
        body.to_string().as_bytes(),
    ));
    let (status, _) = read_head(&mut r);
    (status, r)
}

/// Reads an event stream until an event named `until` (or the end),
/// returning `(event, data)` pairs. Chunk-size lines are skipped: event
/// lines always start with a field name.
fn read_events(r: &mut impl BufRead, until: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut event = String::from("message");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return events;
        }
        let l = line.trim_end();
        if let Some(e) = l.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            let data = serde_json::from_str(d).unwrap_or(Value::String(d.to_string()));
            let done = event == until;
            events.push((std::mem::replace(&mut event, "message".into()), data));
            if done {
                return events;
            }
        }
    }
}

/// A text the chunk `id` holds, from the shipped index.
fn chunk_text(id: &str) -> String {
    let g = kbqa::index::open(shipped_index()).unwrap();
    g.chunks
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.text.clone())
        .unwrap_or_default()
}

#[test]
fn own_api_searches_and_answers_with_citations() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/healthz").json()["status"], "ok");
    let search = server.post("/v1/search", &json!({"query": "EFLOPS", "k": 3}));
    assert_eq!(search.status, 200, "{}", search.body);
    let results = search.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert!(results[0]["text"].as_str().unwrap().contains("EFLOPS"));
    assert!(
        search.header("x-request-id").is_some(),
        "{:?}",
        search.headers
    );

    let ask = server.post("/v1/ask", &json!({"question": "What does EFLOPS mean?"}));
    assert_eq!(ask.status, 200, "{}", ask.body);
    let a = ask.json();
    assert_eq!(a["grounded"], true, "{a}");
    assert_eq!(a["language"], "en");
    let citations = a["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{a}");
    let passages = a["passages"].as_array().unwrap().len() as u64;
    for c in citations {
        let n = c["n"].as_u64().unwrap();
        assert!((1..=passages).contains(&n), "{c}");
        assert!(chunk_text(c["chunk_id"].as_str().unwrap()).contains("EFLOPS"));
    }

    // The model list, and the metrics those requests left.
    assert_eq!(server.get("/v1/models").json()["data"][0]["id"], "kbqa");
    let metrics = server.get("/metrics");
    assert!(metrics
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    for needle in [
        "kbqa_http_requests_total{route=\"/v1/search\",status=\"200\"} 1",
        "kbqa_http_requests_total{route=\"/v1/ask\",status=\"200\"} 1",
        "kbqa_http_request_duration_seconds_bucket{route=\"/v1/ask\",le=\"+Inf\"} 1",
        "kbqa_answer_stage_seconds_count{stage=\"prefill\"} 1",
        "kbqa_answer_queue_depth 0",
    ] {
        assert!(
            metrics.body.contains(needle),
            "{needle} missing:\n{}",
            metrics.body
        );
    }
    assert!(server.metric("kbqa_generated_tokens_total") > 0.0);
    // Logs carry the request id and the stage timings.
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("req-") && l.contains("prefill_ms") && l.contains("answered")),
        "{log}"
    );
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let server = Server::start(&[]);
    let long = "问".repeat(2001);
    let huge = vec![b'a'; 70 * 1024];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/ask", b"{\"question\": ".to_vec(), 400, "bad_request"),
        ("POST", "/v1/ask", b"{\"question\": 5}".to_vec(), 400, "bad_request"),
        ("POST", "/v1/ask", b"[1, 2]".to_vec(), 400, "bad_request"),
        ("POST", "/v1/ask", b"{\"questoin\": \"x\"}".to_vec(), 400, "bad_request"),
        ("POST", "/v1/ask", b"\xff\xfe".to_vec(), 400, "bad_request"),
        ("POST", "/v1/ask", b"{\"question\": \"   \"}".to_vec(), 422, "invalid_query"),
        (
            "POST",
            "/v1/ask",
            json!({ "question": long }).to_string().into_bytes(),
            422,
            "invalid_query",
        ),
        ("POST", "/v1/ask", json!({"question": "x", "k": 0}).to_string().into_bytes(), 422, "invalid_query"),
        ("POST", "/v1/ask", huge.clone(), 413, "body_too_large"),
        ("POST", "/v1/search", huge, 413, "body_too_large"),
        ("POST", "/v1/search", b"{}".to_vec(), 400, "bad_request"),
        ("GET", "/v1/nothing", Vec::new(), 404, "not_found"),
        ("GET", "/v1/ask", Vec::new(), 405, "method_not_allowed"),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .into_bytes(),
            404,
            "unknown_kb",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": []}).to_string().into_bytes(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "kbqa", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})
                .to_string()
                .into_bytes(),
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = request(&server.addr, method, path, &[], &body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        assert_eq!(r.status, status, "{method} {path} {shown:?}: {}", r.body);
        assert_eq!(r.error_code(), code, "{method} {path} {shown:?}");
    }
    // None of that generated anything or hurt the server.
    assert_eq!(server.metric("kbqa_generated_tokens_total"), 0.0);
    assert_eq!(server.get("/readyz").status, 200);
    let ok = server.post("/v1/search", &json!({"query": "RLHF"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// An answer streamed by curl: `(event, data, when)` for each event.
fn curl_stream(server: &Server, path: &str, body: &Value) -> Vec<(String, String, Duration)> {
    let mut curl = Command::new("curl")
        .args([
            "-sN",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(body.to_string())
        .arg(server.url(path))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let start = Instant::now();
    let mut events = Vec::new();
    let mut event = String::from("message");
    for line in BufReader::new(curl.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let e = std::mem::replace(&mut event, "message".into());
            events.push((e, d.to_string(), start.elapsed()));
        } else if let Some(c) = line.strip_prefix(':') {
            events.push(("comment".into(), c.trim().to_string(), start.elapsed()));
        }
    }
    assert!(curl.wait().unwrap().success());
    events
}

#[test]
fn curl_streams_progress_then_only_the_checked_answer() {
    let server = Server::start(&[]);
    let events = curl_stream(
        &server,
        "/v1/ask",
        &json!({"question": "什么是RLHF？", "stream": true}),
    );
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    // Progress while it works, then the checked text, its citations, done.
    assert_eq!(
        names.iter().rev().take(3).collect::<Vec<_>>(),
        [&"done", &"citations", &"answer"],
        "{names:?}"
    );
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.0 == "progress")
        .map(|e| serde_json::from_str(&e.1).unwrap())
        .collect();
    assert_eq!(progress[0]["stage"], "retrieving", "{progress:?}");
    assert!(
        progress
            .iter()
            .any(|p| p["stage"] == "writing" && p["tokens"].as_u64() > Some(1)),
        "{progress:?}"
    );
    assert_eq!(progress.last().unwrap()["stage"], "checking");
    // The stream was live: the first progress event came well before the end.
    let (first, last) = (events[0].2, events.last().unwrap().2);
    assert!(
        last >= first + Duration::from_millis(300),
        "first event at {first:?}, done at {last:?}: not streamed"
    );
    let answer: Value = serde_json::from_str(&events[names.len() - 3].1).unwrap();
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["grounded"], true, "{done}");
    assert_eq!(answer["text"], done["answer"]);
    assert_eq!(answer["status"], "answered");
    assert!(!done["citations"].as_array().unwrap().is_empty());
    assert_eq!(names.iter().filter(|n| **n == "answer").count(), 1);
}

#[test]
fn an_out_of_scope_question_streams_no_generated_text() {
    // The model writes "The capital of Australia is Canberra."; the checks
    // refuse it. No stream may carry it.
    let server = Server::start(&[]);
    let q = "What is the capital of Australia?";
    let refusal = kbqa::answer::refusal_text(kbqa::answer::Lang::En);
    let events = curl_stream(&server, "/v1/ask", &json!({"question": q, "stream": true}));
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["status"], "refused", "{done}");
    assert!(
        done["model_text"]
            .as_str()
            .is_some_and(|t| t.contains("Canberra")),
        "the model did write an answer: {done}"
    );
    for (name, data, _) in &events[..events.len() - 1] {
        assert!(!data.contains("Canberra"), "{name}: {data}");
    }
    assert_eq!(done["answer"], refusal);

    // The OpenAI stream: the content is the refusal sentence, whole.
    let chunks = curl_stream(
        &server,
        "/v1/chat/completions",
        &json!({"model": "kbqa", "stream": true,
                "messages": [{"role": "user", "content": q}]}),
    );
    let mut content = String::new();
    for (_, data, _) in chunks
        .iter()
        .filter(|c| c.0 == "message" && c.1 != "[DONE]")
    {
        assert!(!data.contains("Canberra"), "{data}");
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    assert_eq!(content, refusal);
    assert!(
        chunks
            .iter()
            .any(|c| c.0 == "comment" && c.1.contains("writing")),
        "progress comments: {chunks:?}"
    );
}

/// A Python with the `openai` package: `KBQA_TEST_PYTHON`, else a venv in
/// `target/py`, created on first use (pip reaches PyPI).
fn python_with_openai() -> PathBuf {
    if let Some(p) = std::env::var_os("KBQA_TEST_PYTHON") {
        return p.into();
    }
    let venv = repo().join("target/py");
    let python = venv.join("bin/python");
    let has = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&python) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                .args(["-m", "pip", "install", "-q", "openai==3.57.0"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok && has(&python), "cannot install the openai package");
    }
    python
}

#[test]
fn the_openai_python_package_gets_grounded_answers_streamed_and_not() {
    let server = Server::start(&[]);
    let r = server.client(
        &python_with_openai(),
        "openai_client.py",
        &[&server.url("/v1"), "What does EFLOPS mean?"],
    );
    assert_eq!(r["models"], json!(["kbqa"]));
    for mode in ["plain", "stream"] {
        let m = &r[mode];
        let content = m["content"].as_str().unwrap();
        assert!(content.contains("EFLOPS"), "{mode}: {m}");
        assert!(content.contains('['), "{mode}: no [n] marker: {m}");
        assert_eq!(m["finish_reason"], "stop", "{mode}: {m}");
        assert_eq!(m["kbqa"]["grounded"], true, "{mode}: {m}");
        let citations = m["kbqa"]["citations"].as_array().unwrap();
        assert!(!citations.is_empty(), "{mode}: {m}");
        assert!(
            m["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{mode}: {m}"
        );
    }
    // Streamed, the checked answer comes whole, in one content chunk
    // (role, content, finish with the `kbqa` field, usage): no text the
    // checks had not passed.
    assert_eq!(r["stream"]["content_chunks"], 1, "{}", r["stream"]);
    assert_eq!(r["stream"]["chunks"], 4, "{}", r["stream"]);
    // Greedy decoding: both ways give the same answer.
    assert_eq!(r["plain"]["content"], r["stream"]["content"]);
}

#[test]
fn a_follow_up_question_retrieves_what_the_earlier_turn_was_about() {
    let server = Server::start(&[]);
    let messages = json!([
        {"role": "user", "content": "什么是RLHF？"},
        {"role": "assistant", "content": "RLHF是基于人类反馈的强化学习[1]。"},
        {"role": "user", "content": "它和SFT有什么区别？"},
    ]);
    let r = server.post(
        "/v1/chat/completions",
        &json!({"model": "kbqa", "messages": messages, "max_tokens": 8}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    let question = v["kbqa"]["question"].as_str().unwrap();
    assert!(
        question.contains("RLHF") && question.contains("SFT"),
        "{question}"
    );
    let texts: Vec<(String, String)> = v["kbqa"]["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["section"].as_str().unwrap().to_string(),
                chunk_text(p["chunk_id"].as_str().unwrap()),
            )
        })
        .collect();
    assert!(texts.iter().any(|(_, t)| t.contains("RLHF")), "{texts:?}");
    assert!(texts.iter().any(|(_, t)| t.contains("SFT")), "{texts:?}");
    assert!(
        texts.iter().any(|(s, _)| s == "Glossary > RLHF"),
        "the RLHF entry should be retrieved: {texts:?}"
    );
    // Without the earlier turn, "它" finds the SFT material only.
    let alone = server.post(
        "/v1/chat/completions",
        &json!({"model": "kbqa", "messages": [{"role": "user", "content": "它和SFT有什么区别？"}], "max_tokens": 8}),
    );
    let sections: Vec<String> = alone.json()["kbqa"]["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["section"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !sections.iter().any(|s| s == "Glossary > RLHF"),
        "{sections:?}"
    );
}

#[test]
fn a_full_queue_gets_429_searches_do_not_wait_and_a_gone_client_frees_its_worker() {
    let server = Server::start(&[("KBQA_WORKERS", "1"), ("KBQA_QUEUE", "0")]);
    let long = json!({
        "question": "详细介绍大模型训练的全过程，包括预训练、SFT和RLHF的每一步，以及需要的算力。",
        "stream": true,
        "max_tokens": 600,
    });
    let (status, mut stream) = open_stream(&server.addr, "/v1/ask", &long);
    assert_eq!(status, 200);
    let first = read_events(&mut stream, "progress");
    assert_eq!(first.last().unwrap().0, "progress", "{first:?}");
    assert_eq!(server.metric("kbqa_answers_running"), 1.0);

    // The one worker is busy and there is no queue: refused at once.
    let busy = server.post("/v1/ask", &json!({"question": "什么是SFT？"}));
    assert_eq!(busy.status, 429, "{}", busy.body);
    assert_eq!(busy.error_code(), "busy");
    assert!(busy.header("retry-after").is_some());
    // Searches do not queue behind the answer.
    let search = server.post("/v1/search", &json!({"query": "数据并行"}));
    assert_eq!(search.status, 200, "{}", search.body);
    assert!(
        server.metric("kbqa_answers_running") == 1.0,
        "the answer should still run"
    );

    // The client goes away: the answer stops at its next token.
    drop(stream);
    let start = Instant::now();
    while server.metric("kbqa_answers_running") != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the worker was not freed:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.metric("kbqa_answers_cancelled_total"), 1.0);
    assert_eq!(server.metric("kbqa_answers_rejected_total"), 1.0);
    // And the freed worker takes the next question.
    let next = server.post(
        "/v1/ask",
        &json!({"question": "什么是SFT？", "max_tokens": 16}),
    );
    assert_eq!(next.status, 200, "{}", next.body);
}

#[test]
fn answers_past_their_deadline_are_cut_with_504() {
    let server = Server::start(&[("KBQA_DEADLINE_SECS", "1")]);
    let r = server.post(
        "/v1/ask",
        &json!({"question": "详细介绍大模型训练的全过程。", "max_tokens": 600}),
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.error_code(), "deadline_exceeded");
    assert_eq!(server.metric("kbqa_answers_cancelled_total"), 1.0);
    assert_eq!(server.metric("kbqa_answers_running"), 0.0);
}

#[test]
fn api_keys_guard_the_v1_routes_only() {
    let server = Server::spawn(&[("KBQA_API_KEYS", "alpha-key, beta-key")]);
    // Auth is checked before readiness: no need to wait for the models.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "alpha-key")],
    ] {
        let r = request(&server.addr, "GET", "/v1/models", &headers, b"");
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert_eq!(r.error_code(), "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = request(
            &server.addr,
            "POST",
            "/v1/search",
            &headers,
            b"{\"query\":\"x\"}",
        );
        assert_eq!(r.status, 401);
    }
    for key in ["Bearer alpha-key", "Bearer beta-key"] {
        let r = request(
            &server.addr,
            "GET",
            "/v1/models",
            &[("Authorization", key)],
            b"",
        );
        assert_eq!(r.status, 200, "{key}: {}", r.body);
    }
    assert_eq!(server.get("/healthz").status, 200);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<form"));
    server.wait_ready();
    assert_eq!(server.get("/readyz").json()["auth"], true);
}

#[test]
fn sigterm_lets_a_running_answer_finish_then_exits() {
    // A grace period no answer needs on an idle machine (10 s by default),
    // but this test shares two cores with the rest of the suite: what it
    // checks is that the running answer is let finish, not how fast.
    let mut server = Server::start(&[("KBQA_SHUTDOWN_GRACE_SECS", "120")]);
    let (status, mut stream) = open_stream(
        &server.addr,
        "/v1/ask",
        &json!({"question": "什么是RLHF？", "stream": true}),
    );
    assert_eq!(status, 200);
    read_events(&mut stream, "progress");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest = read_events(&mut stream, "done");
    let (last, answer) = rest.last().expect("events after SIGTERM");
    assert_eq!(last, "done", "{rest:?}");
    assert_eq!(answer["grounded"], true, "{answer}");
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}\n{}", server.log());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.log().contains("kbqa: stopped"));
}

/// Asks `question` on the chat page in headless Chromium and returns what
/// the page shows (see `clients/chat_page.py`), with a screenshot at
/// `target/test-artifacts/{shot}`; `None` where Chromium is missing
/// outside CI.
fn page_answer(server: &Server, question: &str, shot: &str) -> Option<Value> {
    page_answer_in(server, question, shot, &[])
}

/// [`page_answer`], with the page's API key and knowledge base (`extra`:
/// `[key]` or `[key, kb]`).
pub(crate) fn page_answer_in(
    server: &Server,
    question: &str,
    shot: &str,
    extra: &[&str],
) -> Option<Value> {
    let driver_present = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !driver_present {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing (.ci/run installs Debian's chromium and chromium-driver)"
        );
        eprintln!("SKIPPED: no chromedriver (apt-get install chromium chromium-driver)");
        return None;
    }
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(shot);
    let _ = std::fs::remove_file(&shot);
    let url = server.url("/");
    let mut args = vec![url.as_str(), question, shot.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = server.client(std::path::Path::new("python3"), "chat_page.py", &args);
    assert!(r["error"].is_null(), "{r}");
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000);
    Some(r)
}

#[test]
fn the_chat_page_answers_in_headless_chromium() {
    let server = Server::start(&[]);
    let Some(r) = page_answer(&server, "什么是RLHF？", "chat-page.png") else {
        return;
    };
    assert!(r["answer"].as_str().unwrap().contains("RLHF"), "{r}");
    let sources = r["sources"].as_array().unwrap();
    assert!(!sources.is_empty(), "no sources shown: {r}");
    assert!(
        sources.iter().any(|s| s.as_str().unwrap().contains('›')),
        "{r}"
    );
    // Phone-size: nothing overflows sideways.
    assert!(r["scrollWidth"].as_u64() <= r["width"].as_u64(), "{r}");
}

#[test]
fn a_not_sure_answer_shows_its_evidence_in_every_front_end() {
    // A threshold no answer reaches: every checked answer is `not_sure`.
    let server = Server::start(&[("KBQA_CONFIDENCE_THRESHOLD", "1")]);
    let q = "What does EFLOPS mean?";
    let quoted = |v: &Value| {
        let c = &v["citations"][0];
        let quote = c["on_question"][0]
            .as_str()
            .expect("a sentence chosen by the question");
        assert!(
            chunk_text(c["chunk_id"].as_str().unwrap()).contains(quote),
            "{c}"
        );
        quote.to_string()
    };
    // The JSON API.
    let a = server.post("/v1/ask", &json!({"question": q})).json();
    assert_eq!(
        (a["status"].as_str(), a["grounded"].as_bool()),
        (Some("not_sure"), Some(false)),
        "{a}"
    );
    let quote = quoted(&a);
    assert!(a["answer"].as_str().unwrap().contains(&quote), "{a}");
    assert!(
        a["model_text"].is_string(),
        "the model's text is kept aside: {a}"
    );
    // Its event stream ends with the same answer.
    let (status, mut r) = open_stream(
        &server.addr,
        "/v1/ask",
        &json!({"question": q, "stream": true}),
    );
    assert_eq!(status, 200);
    let events = read_events(&mut r, "done");
    let done = &events.last().unwrap().1;
    assert_eq!(done["status"], "not_sure", "{done}");
    assert!(done["answer"].as_str().unwrap().contains(&quote));
    // The OpenAI endpoint: the text says it is not sure and quotes the evidence.
    let v = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "kbqa", "messages": [{"role": "user", "content": q}]}),
        )
        .json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("not sure") && content.contains(&quote),
        "{content}"
    );
    assert_eq!(v["kbqa"]["status"], "not_sure", "{v}");
    // The page: the quote as the answer, a note that it is not sure, the source.
    if let Some(r) = page_answer(&server, q, "chat-page-not-sure.png") {
        assert!(r["answer"].as_str().unwrap().contains(&quote), "{r}");
        assert!(
            r["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains("Not sure")),
            "{r}"
        );
        assert!(!r["sources"].as_array().unwrap().is_empty(), "{r}");
    }
}
