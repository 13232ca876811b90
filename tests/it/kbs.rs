//! Several knowledge bases in one kbqa: the shipped one and a small
//! English one built here, chosen per question in the CLI, the JSON API,
//! the OpenAI endpoint and Slack; citations never cross over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{page_answer_in, request, Server};
use crate::slack::{mention, signed_post, FakeSlack, SECRET, TOKEN};
use crate::util::{repo, Scratch};

/// The English knowledge base's documents: facts the shipped one does
/// not hold, so an answer's source tells which was searched.
const RAIL: &str = "# Larkspur Rail\n\nThe Larkspur Rail line opened in 1987. It connects Tamsin Harbour to Orrin Vale, and its trains run every 12 minutes.\n";
const VALE: &str = "# Orrin Vale\n\nOrrin Vale is a mountain town known for its glass museum, which was founded in 1962.\n";
const QUESTION: &str = "When did the Larkspur Rail line open?";
const EN_SOURCES: [&str; 2] = ["rail.md", "vale.md"];

/// A scratch folder with a copy of the shipped index (the default
/// knowledge base) and the English documents in `en/`.
fn scratch() -> (Scratch, PathBuf) {
    let s = Scratch::with_shipped_index();
    s.write("en/rail.md", RAIL);
    s.write("en/vale.md", VALE);
    let en = s.path("en");
    (s, en)
}

fn sources(answer: &Value) -> Vec<String> {
    answer["citations"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["source"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The answer came from the English knowledge base, and only from it.
#[track_caller]
fn from_en(answer: &Value) {
    let cited = sources(answer);
    assert!(!cited.is_empty(), "no citation: {answer}");
    assert!(
        cited.iter().all(|s| EN_SOURCES.contains(&s.as_str())),
        "{cited:?}"
    );
    assert!(
        answer["answer"].as_str().unwrap().contains("1987"),
        "{answer}"
    );
}

/// The answer did not come from the English knowledge base.
#[track_caller]
fn not_from_en(answer: &Value) {
    let cited = sources(answer);
    assert!(
        cited.iter().all(|s| !EN_SOURCES.contains(&s.as_str())),
        "{cited:?}"
    );
    let passages = answer["passages"].to_string();
    assert!(!passages.contains("rail.md"), "{passages}");
}

#[test]
fn the_cli_adds_lists_indexes_and_asks_a_named_knowledge_base() {
    let (s, en) = scratch();
    let corpus = repo().join("corpus");
    let en_arg = en.display().to_string();
    let add = ["kb", "add", "en", &en_arg, "--description", "Rail notes"];
    let out = s.kbqa(&corpus, &add).success();
    assert!(out.stdout.contains("kbqa index --kb en"), "{}", out.stdout);
    s.kbqa(&corpus, &add).failure();
    let list = s.kbqa(&corpus, &["kb", "list"]).success().stdout;
    assert!(list.contains("* default"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("en\t") && l.contains("not indexed yet")),
        "{list}"
    );

    s.kbqa(&corpus, &["index", "--kb", "en"]).success();
    let list = s.kbqa(&corpus, &["kb", "list"]).success().stdout;
    assert!(
        list.lines()
            .any(|l| l.contains("en\t") && l.contains("from 2 files")),
        "{list}"
    );
    // The shipped index is untouched: `index --all` finds both up to date.
    let all = s.kbqa(&corpus, &["index", "--all"]).success();
    assert_eq!(
        all.stderr.matches("is up to date").count(),
        2,
        "{}",
        all.stderr
    );

    let en_answer = s
        .kbqa(&corpus, &["ask", "--kb", "en", "--json", QUESTION])
        .success();
    from_en(&en_answer.json());
    let default_answer = s.kbqa(&corpus, &["ask", "--json", QUESTION]).success();
    not_from_en(&default_answer.json());

    let unknown = s.kbqa(&corpus, &["ask", "--kb", "hr", QUESTION]).failure();
    assert!(
        unknown.stderr.contains("known: default, en"),
        "{}",
        unknown.stderr
    );

    s.kbqa(&corpus, &["kb", "remove", "en"]).success();
    let list = s.kbqa(&corpus, &["kb", "list"]).success().stdout;
    assert!(!list.contains("en\t"), "{list}");
}

/// A user's second folder: two good files and one that is not UTF-8.
#[test]
fn a_file_skipped_at_index_time_does_not_stop_ask() {
    let s = Scratch::new();
    s.write("notes/rail.md", RAIL);
    s.write("notes/vale.md", VALE);
    s.write("notes/legacy.txt", b"\xb4\xf3\xc4\xa3\xd0\xcd".as_slice()); // GBK
    let notes = s.path("notes");

    let refused = s.kbqa(&notes, &["index"]).failure();
    assert!(
        refused.stderr.contains("legacy.txt: not valid UTF-8"),
        "{}",
        refused.stderr
    );
    s.kbqa(&notes, &["index", "--skip-bad"]).success();
    let live = s.current();

    let asked = s.kbqa(&notes, &["ask", "--json", QUESTION]).success();
    from_en(&asked.json());
    assert_eq!(
        asked.stderr.matches("legacy.txt").count(),
        1,
        "{}",
        asked.stderr
    );
    assert!(
        asked.stderr.contains("warning: skipped"),
        "{}",
        asked.stderr
    );
    assert_eq!(s.current(), live, "ask rebuilt an index that matched");

    // Changed since, it is a new bad file: refused again.
    s.write("notes/legacy.txt", b"\xff\xfe\x00bad".as_slice());
    let refused = s.kbqa(&notes, &["ask", QUESTION]).failure();
    assert!(refused.stderr.contains("legacy.txt"), "{}", refused.stderr);
    assert_eq!(s.current(), live, "nothing was written");
}

/// `kbqa serve` over both, with the English one open to its own key and
/// its own Slack channel.
fn two_kb_server(s: &Scratch, en: &Path, slack: &FakeSlack) -> Server {
    s.write(
        "kbqa.toml",
        format!(
            "[kbs.en]\ncorpus = {:?}\ndescription = \"Rail notes\"\napi_keys = [\"en-key\"]\n\n[slack]\nchannel_kbs = {{ CEN = \"en\" }}\n",
            en.display().to_string()
        ),
    );
    let api = format!("http://{}/api", slack.addr);
    Server::start_on(
        s,
        &repo().join("corpus"),
        &[
            ("KBQA_API_KEYS", "all-key"),
            ("KBQA_ADMIN_KEYS", "admin-key"),
            ("KBQA_SLACK_SIGNING_SECRET", SECRET),
            ("KBQA_SLACK_BOT_TOKEN", TOKEN),
            ("KBQA_SLACK_API_BASE", api.as_str()),
        ],
    )
}

fn post(server: &Server, key: &str, path: &str, body: &Value) -> crate::server::Resp {
    let auth = format!("Bearer {key}");
    request(
        &server.addr,
        "POST",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

#[test]
fn one_server_answers_from_the_knowledge_base_each_front_end_names() {
    let (s, en) = scratch();
    let slack = FakeSlack::start();
    let server = two_kb_server(&s, &en, &slack);

    // The JSON API.
    let r = post(
        &server,
        "all-key",
        "/v1/ask",
        &json!({ "question": QUESTION, "kb": "en" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    from_en(&r.json());
    let r = post(
        &server,
        "all-key",
        "/v1/ask",
        &json!({ "question": QUESTION }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    not_from_en(&r.json());

    // OpenAI clients pick a knowledge base as a model.
    let models = request(
        &server.addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer all-key")],
        b"",
    )
    .json();
    assert_eq!(models["data"].as_array().map(Vec::len), Some(2), "{models}");
    assert_eq!(
        (&models["data"][0]["id"], &models["data"][1]["id"]),
        (&json!("kbqa"), &json!("kbqa:en"))
    );
    let chat = |model: &str| json!({ "model": model, "messages": [{ "role": "user", "content": QUESTION }] });
    let r = post(&server, "en-key", "/v1/chat/completions", &chat("kbqa:en"));
    assert_eq!(r.status, 200, "{}", r.body);
    let completion = r.json();
    assert_eq!(completion["model"], "kbqa:en");
    from_en(&json!({
        "answer": completion["choices"][0]["message"]["content"],
        "citations": completion["kbqa"]["citations"],
    }));
    // A key limited to `en` may not use the default one.
    let r = post(&server, "en-key", "/v1/chat/completions", &chat("kbqa"));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(
        &server,
        "en-key",
        "/v1/ask",
        &json!({ "question": QUESTION }),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // The chat page: its selector lists both; the English one answers.
    if let Some(r) = page_answer_in(&server, QUESTION, "chat-page-kb.png", &["all-key", "en"]) {
        assert_eq!(r["kbs"], json!(["default", "en"]), "{r}");
        assert!(r["answer"].as_str().unwrap().contains("1987"), "{r}");
        let shown = r["sources"].to_string();
        assert!(shown.contains("rail.md"), "{r}");
    }

    // Slack: the channel chooses.
    let ok = signed_post(
        &server,
        "/slack/events",
        &mention("Ev1", "CEN", &format!("<@UBOT> {QUESTION}"), json!({})),
        &[],
    );
    assert_eq!(ok.status, 200);
    let ok = signed_post(
        &server,
        "/slack/events",
        &mention("Ev2", "CGEN", &format!("<@UBOT> {QUESTION}"), json!({})),
        &[],
    );
    assert_eq!(ok.status, 200);
    let posted = slack.wait_for(2, 120, |r| r.path.ends_with("chat.postMessage"));
    let in_channel = |c: &str| {
        posted
            .iter()
            .find(|r| r.body["channel"] == c)
            .map(|r| r.body.to_string())
            .unwrap()
    };
    let en_post = in_channel("CEN");
    assert!(
        en_post.contains("rail.md") && en_post.contains("1987"),
        "{en_post}"
    );
    assert!(
        !in_channel("CGEN").contains("rail.md"),
        "{}",
        in_channel("CGEN")
    );
}

#[test]
fn reloading_one_knowledge_base_leaves_the_other_serving() {
    let (s, en) = scratch();
    let slack = FakeSlack::start();
    let server = Arc::new(two_kb_server(&s, &en, &slack));
    let search =
        |kb: &str, query: &str| json!({ "query": query, "kb": kb, "mode": "bm25", "k": 3 });
    // The English one opens on its first request.
    let r = post(
        &server,
        "all-key",
        "/v1/search",
        &search("en", "glass museum"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("vale.md"), "{}", r.body);

    // A new generation of `en`, built beside the running server.
    std::fs::write(
        en.join("vale.md"),
        VALE.replace("1962", "1962. Its café serves plum cake"),
    )
    .unwrap();
    s.kbqa(&repo().join("corpus"), &["index", "--kb", "en"])
        .success();

    // Searches of the default one go on during the reload; none fails.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop, done, failed) =
                (server.clone(), stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let r = post(&server, "all-key", "/v1/search", &search("default", "RLHF"));
                    let counter = if r.status == 200 { &done } else { &failed };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = post(&server, "admin-key", "/admin/reload?kb=en", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let reload = r.json();
    assert_eq!(
        (reload["kb"].as_str(), reload["reloaded"].as_bool()),
        (Some("en"), Some(true))
    );
    std::thread::sleep(Duration::from_millis(300).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{}", server.log());
    assert!(
        done.load(Ordering::SeqCst) > 10,
        "{}",
        done.load(Ordering::SeqCst)
    );

    let r = post(&server, "all-key", "/v1/search", &search("en", "plum cake"));
    assert!(r.body.contains("plum cake"), "{}", r.body);
    // Reloading an unknown one changes nothing.
    let r = post(&server, "admin-key", "/admin/reload?kb=hr", &json!({}));
    assert_eq!(r.status, 404, "{}", r.body);
}
