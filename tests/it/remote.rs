//! Generation and embeddings by a real OpenAI-compatible model server:
//! llama.cpp's `llama-server`, built from the sources in the
//! `llama-cpp-python` sdist (`benches/build_llama_cpp.sh`, cached outside
//! the repo), serving the same default GGUF kbqa runs in process.
//!
//! Without the binary these tests say so and pass, except under CI
//! (`CI` set), where `.ci/run` builds it first and its absence is a failure.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{request, Server};
use crate::util::{model_home, repo, Scratch};

/// A running `llama-server` on a loopback port; killed on drop.
pub(crate) struct LlamaServer {
    child: Child,
    addr: String,
}

impl LlamaServer {
    /// `KBQA_LLAMA_SERVER`, else the build `benches/build_llama_cpp.sh` caches.
    fn binary() -> Option<PathBuf> {
        let path = match std::env::var_os("KBQA_LLAMA_SERVER") {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("KBQA_LLAMA_CPP_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/kbqa/llama.cpp-0.3.36")
                })
                .join("bin/llama-server"),
        };
        if path.is_file() {
            return Some(path);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: .ci/run builds it with benches/build_llama_cpp.sh",
            path.display()
        );
        eprintln!(
            "skipped: no llama-server at {} (run benches/build_llama_cpp.sh)",
            path.display()
        );
        None
    }

    /// The default generator's GGUF file (fetched on first use).
    pub(crate) fn model() -> PathBuf {
        kbqa::models::fetch::ensure(
            &kbqa::models::fetch::QWEN25_CODER_05B,
            &model_home(),
            "python3",
            &mut |_| {},
        )
        .expect("fetch the default GGUF")
    }

    /// Starts it with `extra` flags and waits until the model is loaded;
    /// `None` when there is no binary (outside CI).
    pub(crate) fn start(extra: &[&str]) -> Option<LlamaServer> {
        let binary = LlamaServer::binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg("-m")
            .arg(LlamaServer::model())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", "2", "-c", "4096"])
            .args(extra)
            // Idle OpenMP threads must not spin on the cores kbqa needs.
            .env("OMP_WAIT_POLICY", "passive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let server = LlamaServer {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if std::net::TcpStream::connect(&server.addr).is_ok()
                && request(&server.addr, "GET", "/health", &[], b"").status == 200
            {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("llama-server did not become healthy on {}", server.addr);
    }

    /// Its OpenAI base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kbqa` flags that generate through `server`, with the model's own
/// tokenizer so the prompt is the one the in-process model gets.
fn remote_flags(server: &LlamaServer) -> Vec<String> {
    vec![
        "--generator".into(),
        "openai".into(),
        "--llm-url".into(),
        server.url(),
        "--llm-model".into(),
        "qwen2.5-coder-0.5b".into(),
        "--llm-tokenizer".into(),
        LlamaServer::model().display().to_string(),
    ]
}

#[test]
fn token_estimates_are_not_below_the_real_tokenizer_on_the_corpus() {
    // Without the server model's tokenizer, prompts are budgeted by
    // estimate: it must not undercount, or prompts overflow the budget.
    let tokenizer =
        kbqa::models::gguf_tokenizer::GgufTokenizer::from_gguf(&LlamaServer::model()).unwrap();
    let generation = kbqa::index::open(crate::util::shipped_index()).unwrap();
    let mut total = (0, 0);
    for chunk in &generation.chunks {
        let real = tokenizer.encode(&chunk.text).unwrap().len();
        let estimate = kbqa::remote::generator::estimate_tokens(&chunk.text);
        assert!(estimate >= real, "{estimate} < {real}: {}", chunk.text);
        total = (total.0 + estimate, total.1 + real);
    }
    eprintln!("estimated {} tokens, really {}", total.0, total.1);
}

#[test]
fn answers_through_llama_server_are_grounded_like_in_process_ones() {
    let Some(llama) = LlamaServer::start(&["-np", "1"]) else {
        return;
    };
    let scratch = Scratch::with_shipped_index();
    let corpus = repo().join("corpus");
    let question = "什么是RLHF？";
    let mut args: Vec<String> = remote_flags(&llama);
    args.extend(["ask".into(), "--json".into(), question.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let remote = scratch.kbqa(&corpus, &args).success().json();
    assert_eq!(remote["grounded"], true, "{remote}");
    assert_eq!(remote["model"], "qwen2.5-coder-0.5b");
    let citations = remote["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{remote}");
    let answer = remote["answer"].as_str().unwrap();
    for c in citations {
        let n = c["n"].as_u64().unwrap();
        assert!(answer.contains(&format!("[{n}]")), "{remote}");
        assert!(!c["evidence"].as_array().unwrap().is_empty(), "{c}");
    }
    assert!(remote["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The refusal gate saw the first token's probabilities.
    let score = remote["refusal_score"].as_f64().expect("a refusal score");
    assert!((0.0..=1.0).contains(&score), "{remote}");

    // In process: the same retrieval and the same prompt budget, so the
    // same passages, in the same order, and the same JSON shape.
    let local = scratch
        .kbqa(&corpus, &["ask", "--json", question])
        .success()
        .json();
    assert_eq!(remote["passages"], local["passages"]);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&remote), keys(&local));

    // The refusal gate through the server: allowed (threshold 0), the model
    // starts with the marker; vetoed (above 1), the request is made again
    // with the marker banned, and what the model writes instead is judged
    // by the checks (and refused: the passages do not hold the answer).
    let ask = |threshold: &str| {
        let mut args = remote_flags(&llama);
        args.extend([
            "ask".into(),
            "--json".into(),
            "--refusal-threshold".into(),
            threshold.into(),
            "What is the capital of Australia?".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        scratch.kbqa(&corpus, &args).success().json()
    };
    let allowed = ask("0");
    assert_eq!(allowed["grounded"], false, "{allowed}");
    assert_eq!(allowed["refusal"], "model_declined", "{allowed}");
    let vetoed = ask("1.01");
    assert_eq!(vetoed["grounded"], false, "{vetoed}");
    assert_ne!(vetoed["refusal"], "model_declined", "{vetoed}");
    assert!(vetoed["citations"].as_array().unwrap().is_empty());
}

#[test]
fn a_server_that_is_down_or_killed_mid_answer_is_a_clear_error() {
    let Some(mut llama) = LlamaServer::start(&["-np", "1"]) else {
        return;
    };
    let scratch = Scratch::with_shipped_index();
    let corpus = repo().join("corpus");

    // Killed while the answer streams: the CLI stops with an error naming
    // the server, in seconds, not at some far timeout.
    let mut cmd = scratch.command(&corpus);
    cmd.args(remote_flags(&llama))
        .args([
            "ask",
            "--progress",
            "always",
            "--max-tokens",
            "400",
            "Describe in detail the learning route in the article, stage by stage.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    while !stderr.contains("progress: writing") {
        let n = err.read_line(&mut stderr).unwrap();
        assert!(n > 0, "the answer never started: {stderr}");
    }
    llama.kill();
    let killed_at = Instant::now();
    err.read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("model server {}", llama.url()))
            && (stderr.contains("broke off") || stderr.contains("closed the stream")),
        "{stderr}"
    );

    // Down from the start: refused connections are retried, then reported.
    let start = Instant::now();
    let mut args = remote_flags(&llama);
    args.extend(["ask".into(), "What does EFLOPS mean?".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = scratch.kbqa(&corpus, &args).failure();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        run.stderr.contains("cannot connect") && run.stderr.contains("after 3 attempts"),
        "{}",
        run.stderr
    );
}

#[test]
fn kbqa_serve_generates_remotely_and_maps_a_dead_server_to_502() {
    let Some(mut llama) = LlamaServer::start(&["-np", "2"]) else {
        return;
    };
    let url = llama.url();
    let tokenizer = LlamaServer::model().display().to_string();
    let server = Server::start(&[
        ("KBQA_GENERATOR", "openai"),
        ("KBQA_LLM_URL", &url),
        ("KBQA_LLM_MODEL", "qwen2.5-coder-0.5b"),
        ("KBQA_LLM_TOKENIZER", &tokenizer),
        ("KBQA_WORKERS", "2"),
    ]);
    assert_eq!(server.get("/readyz").json()["model"], "qwen2.5-coder-0.5b");
    let ask = server.post("/v1/ask", &json!({"question": "What does EFLOPS mean?"}));
    assert_eq!(ask.status, 200, "{}", ask.body);
    let a = ask.json();
    assert_eq!(a["grounded"], true, "{a}");
    assert!(!a["citations"].as_array().unwrap().is_empty(), "{a}");

    // Streaming through both hops: progress, then the checked answer and `done`.
    let streamed = request(
        &server.addr,
        "POST",
        "/v1/ask",
        &[],
        json!({"question": "什么是SFT？", "stream": true})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(streamed.status, 200);
    let events: Vec<&str> = streamed
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert!(
        events.contains(&"progress") && events.ends_with(&["answer", "citations", "done"]),
        "{}",
        streamed.body
    );

    llama.kill();
    let down = server.post("/v1/ask", &json!({"question": "What does EFLOPS mean?"}));
    assert_eq!(down.status, 502, "{}", down.body);
    assert_eq!(down.error_code(), "upstream_error");
    assert!(down.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&url));
    // Search does not need the model server.
    assert_eq!(
        server
            .post("/v1/search", &json!({"query": "EFLOPS"}))
            .status,
        200
    );
}

#[test]
fn remote_embeddings_index_and_search_and_are_never_mixed_with_local_vectors() {
    let Some(mut llama) = LlamaServer::start(&[
        "--embeddings",
        "--pooling",
        "mean",
        "-b",
        "2048",
        "-ub",
        "2048",
    ]) else {
        return;
    };
    let scratch = Scratch::new();
    let corpus = scratch.path("docs");
    scratch.write(
        "docs/tea.md",
        "# Tea\n\nGreen tea is not fermented. Black tea is fully fermented.\n",
    );
    scratch.write(
        "docs/wall.md",
        "# The Great Wall\n\nThe Ming wall runs from the Yalu River to Jiayu Pass.\n",
    );
    scratch.write(
        "docs/rocket.md",
        "# Rockets\n\nA rocket carries its own oxidiser, so it works in a vacuum.\n",
    );
    let remote = [
        "--embedder",
        "openai",
        "--embed-url",
        &llama.url(),
        "--embed-model",
        "qwen2.5-coder-0.5b",
    ];
    let with = |args: &[&str]| -> Vec<String> {
        remote.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let args = with(&["index"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    scratch.kbqa(&corpus, &args).success();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            scratch
                .index_dir()
                .join(scratch.current().trim())
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["settings"]["embedding"]["model"], "openai:qwen2.5-coder-0.5b",
        "{manifest}"
    );

    let args = with(&[
        "search",
        "--json",
        "--mode",
        "vector",
        "-k",
        "3",
        "rocket oxidiser vacuum",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hits = scratch.kbqa(&corpus, &args).success().json();
    let results = hits["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{hits}");
    assert_eq!(results[0]["source"], "rocket.md", "{hits}");

    // The in-process embedder must not search these vectors.
    let local = scratch
        .kbqa(
            &corpus,
            &["--no-auto-index", "search", "--mode", "vector", "tea"],
        )
        .failure();
    assert!(local.stderr.contains("embedding model"), "{}", local.stderr);
    // The embeddings server down: BM25 needs nothing from it, a vector
    // search says which server failed.
    llama.kill();
    let args = with(&["search", "--json", "--mode", "bm25", "rocket"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bm25 = scratch.kbqa(&corpus, &args).success().json();
    assert_eq!(bm25["results"][0]["source"], "rocket.md", "{bm25}");
    let args = with(&["search", "--mode", "vector", "rocket"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let down = scratch.kbqa(&corpus, &args).failure();
    assert!(
        down.stderr
            .contains(&format!("model server {}", llama.url())),
        "{}",
        down.stderr
    );

    // A replica without the corpus opens the generation as it is: refused too.
    let replica = scratch
        .kbqa(
            &scratch.path("no-corpus"),
            &["search", "--mode", "vector", "tea"],
        )
        .failure();
    assert!(
        replica.stderr.contains("openai:qwen2.5-coder-0.5b")
            && replica.stderr.contains("e5-small-q4"),
        "{}",
        replica.stderr
    );
}
