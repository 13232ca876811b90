//! Incremental re-indexing (only changed files are embedded again; deleted
//! files leave every index) and live reload of a running server.

use std::time::Duration;

use serde_json::Value;

use crate::server::{request, SearchLoad, Server};
use crate::util::{write_corpus, Scratch};

fn index(s: &Scratch) -> String {
    s.kbqa(&s.path("kb"), &["index"]).success().stderr
}

/// "N chunk(s) to embed, M reused" from `kbqa index`'s report.
fn embed_counts(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains("chunk(s) to embed"))
        .unwrap_or_else(|| panic!("no embed report:\n{stderr}"));
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn search(s: &Scratch, query: &str, mode: &str) -> Vec<Value> {
    let run = s
        .kbqa(
            &s.path("kb"),
            &["search", query, "--json", "-k", "50", "--mode", mode],
        )
        .success();
    run.json()["results"].as_array().unwrap().clone()
}

fn vectors_by_chunk(s: &Scratch) -> Vec<(String, String, Vec<f32>)> {
    let g = kbqa::index::open(&s.index_dir()).unwrap();
    let rows = g.vector.as_ref().unwrap().rows().unwrap();
    let dim = g.vector.as_ref().unwrap().dim();
    g.chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.id.clone(),
                c.source.clone(),
                rows[i * dim..(i + 1) * dim].to_vec(),
            )
        })
        .collect()
}

#[test]
fn only_changed_files_are_embedded_again_and_deleted_files_disappear() {
    let s = Scratch::new();
    write_corpus(&s);
    let first = index(&s);
    let (embedded, reused) = embed_counts(&first);
    assert_eq!(reused, 0, "{first}");
    let total = embedded;
    let before = vectors_by_chunk(&s);
    let beta_chunks = before.iter().filter(|c| c.1 == "beta.md").count();
    assert!(beta_chunks >= 1 && beta_chunks < total);

    // Change one file: only its chunks are embedded again.
    s.write(
        "kb/beta.md",
        "# Beta\n\n## Hardware\n\n训练需要大量GPU。ZEBRAFLOP是新的算力单位。\n\n\
         ## Clusters\n\nLarge clusters connect thousands of accelerators with fast networks.\n",
    );
    let second = index(&s);
    assert!(second.contains("changed: beta.md"), "{second}");
    let (embedded, reused) = embed_counts(&second);
    assert!(embedded >= 1 && embedded <= beta_chunks, "{second}");
    assert_eq!(embedded + reused, total, "{second}");
    let after = vectors_by_chunk(&s);
    for (id, source, v) in &before {
        if source != "beta.md" {
            let same = after
                .iter()
                .find(|c| &c.0 == id)
                .expect("unchanged chunk keeps its id");
            assert_eq!(&same.2, v, "unchanged chunk {id} keeps its vector");
        }
    }
    let hits = search(&s, "ZEBRAFLOP", "bm25");
    assert_eq!(hits[0]["source"], "beta.md");
    assert!(hits[0]["text"].as_str().unwrap().contains("ZEBRAFLOP"));
    assert!(search(&s, "OLDMARK", "bm25")
        .iter()
        .all(|h| !h["text"].as_str().unwrap().contains("OLDMARK")));

    // Delete a file: its chunks leave both indexes; nothing is embedded.
    std::fs::remove_file(s.path("kb/gamma.md")).unwrap();
    let third = index(&s);
    assert!(third.contains("removed: gamma.md"), "{third}");
    assert_eq!(embed_counts(&third).0, 0, "{third}");
    for mode in ["bm25", "vector", "hybrid"] {
        let hits = search(&s, "QUOKKAWORD inference latency", mode);
        assert!(
            hits.iter().all(|h| h["source"] != "gamma.md"),
            "{mode}: {hits:?}"
        );
    }
    let g = kbqa::index::open(&s.index_dir()).unwrap();
    assert_eq!(g.vector.as_ref().unwrap().len(), g.chunks.len());
}

#[test]
fn a_reload_under_searching_clients_fails_no_request() {
    let s = Scratch::new();
    write_corpus(&s);
    index(&s);
    let corpus = s.path("kb");
    let index_dir = s.index_dir();
    let scratch_kbqa = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kbqa"));
        cmd.arg("--corpus")
            .arg(&corpus)
            .arg("--index-dir")
            .arg(&index_dir)
            .args(args);
        cmd.output().unwrap()
    };
    let server = Server::start_on(&s, &corpus, &[("KBQA_ADMIN_KEYS", "admin-secret")]);
    let addr = server.addr.clone();

    let load = SearchLoad::start(
        std::slice::from_ref(&addr),
        &["ZEBRAFLOP 算力", "GPU clusters"],
        8,
    );

    std::thread::sleep(Duration::from_millis(500));
    s.write(
        "kb/alpha.md",
        "# Alpha\n\n## Training\n\n大模型的训练分为预训练和微调两个阶段。ZEBRAFLOP是训练时使用的新算力单位。\n",
    );
    let out = scratch_kbqa(&["index"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only an admin key may reload.
    for auth in [vec![], vec![("Authorization", "Bearer admin")]] {
        let r = request(&addr, "POST", "/admin/reload", &auth, b"");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = request(
        &addr,
        "POST",
        "/admin/reload",
        &[("Authorization", "Bearer admin-secret")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reloaded"], true, "{}", r.body);
    std::thread::sleep(Duration::from_millis(1500));
    load.finish_without_failures();

    // New requests see the new generation.
    let r = request(
        &addr,
        "POST",
        "/v1/search",
        &[],
        br#"{"query":"ZEBRAFLOP","k":1,"mode":"bm25"}"#,
    );
    let hit = &r.json()["results"][0];
    assert_eq!(hit["source"], "alpha.md", "{}", r.body);
    assert!(server.log().contains("index reloaded"));
}

#[test]
fn damaged_index_files_are_refused_by_name_never_served() {
    let corpus = crate::util::repo().join("corpus");
    let files: Vec<String> = {
        let s = Scratch::with_shipped_index();
        let gen = s.index_dir().join(s.current());
        let mut v = vec![
            "vectors.f32".to_string(),
            "hnsw.hnsw.graph".to_string(),
            "hnsw.hnsw.data".to_string(),
            "bm25/meta.json".to_string(),
        ];
        for e in std::fs::read_dir(gen.join("bm25")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".term") || name.ends_with(".idx") || name.ends_with(".store") {
                v.push(format!("bm25/{name}"));
            }
        }
        v
    };
    for file in &files {
        for how in ["truncated", "garbled"] {
            let s = Scratch::with_shipped_index();
            let path = s.index_dir().join(s.current()).join(file);
            let mut bytes = std::fs::read(&path).unwrap();
            if how == "truncated" {
                bytes.truncate(bytes.len() / 2);
            } else {
                let (mid, len) = (bytes.len() / 2, bytes.len());
                for b in &mut bytes[mid..(mid + 16).min(len)] {
                    *b ^= 0x5a;
                }
            }
            std::fs::write(&path, bytes).unwrap();
            let run = s.kbqa(&corpus, &["--no-auto-index", "search", "RLHF", "--json"]);
            assert!(
                !run.ok,
                "{file} {how}: served results from a damaged index: {}",
                run.stdout
            );
            assert!(
                !run.stderr.contains("panicked"),
                "{file} {how}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains("kbqa index --rebuild"),
                "{file} {how}: no fix named: {}",
                run.stderr
            );
            let named = file.rsplit('/').next().unwrap();
            assert!(
                run.stderr.contains(named) || run.stderr.contains("bm25"),
                "{file} {how}: the file is not named: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_damaged_new_generation_is_refused_by_reload_and_the_live_one_stays() {
    let s = Scratch::new();
    write_corpus(&s);
    index(&s);
    let corpus = s.path("kb");
    let server = Server::start_on(&s, &corpus, &[("KBQA_ADMIN_KEYS", "admin-secret")]);
    s.write(
        "kb/gamma.md",
        "# Gamma\n\n## New\n\nZEBRAFLOP appears only in the damaged generation.\n",
    );
    index(&s);
    let vectors = s.index_dir().join(s.current()).join("vectors.f32");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes.truncate(100);
    std::fs::write(&vectors, bytes).unwrap();
    let r = request(
        &server.addr,
        "POST",
        "/admin/reload",
        &[("Authorization", "Bearer admin-secret")],
        b"",
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("vectors.f32") && message.contains("live one stays"),
        "{message}"
    );
    let search = request(
        &server.addr,
        "POST",
        "/v1/search",
        &[],
        br#"{"query":"QUOKKAWORD inference","k":1}"#,
    );
    assert_eq!(search.status, 200, "{}", search.body);
    assert_eq!(search.json()["results"][0]["source"], "gamma.md");
    assert!(!search.body.contains("ZEBRAFLOP"));
}
