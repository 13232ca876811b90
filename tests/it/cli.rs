//! `kbqa index` / `kbqa search` as a user runs them.

use crate::util::{repo, Scratch};

#[test]
fn search_json_ranks_the_ascend_passage_first() {
    let s = Scratch::new();
    let corpus = repo().join("corpus");
    let q = "昇腾910B的算力";
    let run = s
        .kbqa(&corpus, &["search", q, "--json", "--mode", "bm25"])
        .success();
    assert!(
        run.stderr.contains("building it now"),
        "first use builds the index: {}",
        run.stderr
    );
    let v = run.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let first = results[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["chunk_id", "rank", "score", "section", "source", "text"]
    );
    assert_eq!(first["rank"], 1);
    assert!(
        first["text"].as_str().unwrap().contains("昇腾910B"),
        "{first:?}"
    );
    assert!(results
        .iter()
        .any(|r| r["source"] == "article.md" && r["text"].as_str().unwrap().contains("280TFLOPS")));
    // Again: the index is fresh, nothing is rebuilt, the answer is the same.
    let again = s
        .kbqa(&corpus, &["search", q, "--json", "--mode", "bm25"])
        .success();
    assert!(!again.stderr.contains("building"), "{}", again.stderr);
    assert_eq!(again.json(), v);
    // The default (hybrid) ranks it first too.
    let hybrid = s.kbqa(&corpus, &["search", q, "--json"]).success().json();
    assert!(
        hybrid["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("昇腾910B"),
        "{hybrid}"
    );
}

#[test]
fn human_output_shows_rank_source_and_section() {
    let s = Scratch::with_shipped_index();
    let run = s
        .kbqa(&repo().join("corpus"), &["search", "数据并行", "-k", "3"])
        .success();
    assert!(run.stdout.starts_with("1. ["), "{}", run.stdout);
    assert!(run.stdout.contains(" › "), "{}", run.stdout);
    assert!(!run.stdout.contains("\n4. ["), "k = 3: {}", run.stdout);
}

#[test]
fn bad_files_are_named_and_nothing_is_indexed() {
    let s = Scratch::new();
    let corpus = s.path("docs");
    s.write("docs/good.md", "# Good\n\nGPU 的计算单元多。\n");
    s.kbqa(&corpus, &["index"]).success();
    let before = s.current();
    assert!(!before.is_empty());

    s.write("docs/sub/gbk.txt", b"\xb4\xf3\xc4\xa3\xd0\xcd".as_slice()); // "大模型" in GBK
    s.write("docs/empty.md", "");
    s.write("docs/binary.md", b"PNG\0\x01\x02".as_slice());
    s.write("docs/ignored.pdf", b"%PDF-1.4".as_slice());
    let run = s.kbqa(&corpus, &["index"]).failure();
    assert!(
        run.stderr.contains("3 file(s) cannot be indexed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("gbk.txt: not valid UTF-8"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("empty.md: empty file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("binary.md: not a text file"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("ignored.pdf"),
        "other files are not corpus files"
    );
    assert_eq!(s.current(), before, "a refused build changes nothing");

    // A search refuses too (the corpus is not what the index holds), and says what to do.
    let run = s.kbqa(&corpus, &["search", "GPU"]).failure();
    assert!(run.stderr.contains("--skip-bad"), "{}", run.stderr);

    let run = s.kbqa(&corpus, &["index", "--skip-bad"]).success();
    assert!(run.stderr.contains("skipped"), "{}", run.stderr);
    assert_ne!(s.current(), before);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.index_dir().join(s.current()).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["skipped"].as_array().unwrap().len(), 3);
}

#[test]
fn a_changed_corpus_is_detected_and_reindexed() {
    let s = Scratch::new();
    let corpus = s.path("docs");
    s.write("docs/a.md", "# A\n\n昇腾910B的算力是280TFLOPS。\n");
    s.kbqa(&corpus, &["index"]).success();
    let run = s.kbqa(&corpus, &["index"]).success();
    assert!(run.stderr.contains("up to date"), "{}", run.stderr);

    s.write("docs/b.txt", "LangChain 是一个开发框架。\n");
    let run = s
        .kbqa(&corpus, &["--no-auto-index", "search", "LangChain"])
        .failure();
    assert!(run.stderr.contains("1 file(s) added"), "{}", run.stderr);
    assert!(
        run.stderr.contains("kbqa index --rebuild"),
        "{}",
        run.stderr
    );

    let run = s
        .kbqa(&corpus, &["search", "LangChain", "--json"])
        .success();
    assert!(
        run.stderr.contains("out of date") && run.stderr.contains("building it now"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["results"][0]["source"], "b.txt");

    std::fs::remove_file(corpus.join("b.txt")).unwrap();
    let run = s
        .kbqa(&corpus, &["search", "LangChain", "--json"])
        .success();
    assert!(run.stderr.contains("1 removed"), "{}", run.stderr);
    assert!(run.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["source"] != "b.txt"));
}

#[test]
fn a_foreign_or_damaged_index_is_refused_and_rebuilt() {
    let s = Scratch::with_shipped_index();
    let corpus = repo().join("corpus");
    let manifest = s.index_dir().join(s.current()).join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"format\": 3", "\"format\": 99")).unwrap();
    let run = s
        .kbqa(&corpus, &["--no-auto-index", "search", "RLHF"])
        .failure();
    assert!(run.stderr.contains("index format 99"), "{}", run.stderr);
    assert!(
        run.stderr.contains("kbqa index --rebuild"),
        "{}",
        run.stderr
    );
    let run = s.kbqa(&corpus, &["search", "RLHF"]).success();
    assert!(run.stderr.contains("building it now"), "{}", run.stderr);

    let chunks = s.index_dir().join(s.current()).join("chunks.jsonl");
    let mut bytes = std::fs::read(&chunks).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&chunks, bytes).unwrap();
    let run = s
        .kbqa(&corpus, &["--no-auto-index", "search", "RLHF"])
        .failure();
    assert!(
        run.stderr.contains("chunks.jsonl") && run.stderr.contains("checksum"),
        "{}",
        run.stderr
    );
    let run = s.kbqa(&corpus, &["index"]).success();
    assert!(
        !run.stderr.contains("up to date"),
        "a damaged index is rebuilt: {}",
        run.stderr
    );
    s.kbqa(&corpus, &["--no-auto-index", "search", "RLHF"])
        .success();
}

#[test]
fn bad_queries_and_configs_get_clear_errors() {
    let s = Scratch::with_shipped_index();
    let corpus = repo().join("corpus");
    let run = s.kbqa(&corpus, &["search", "   "]).failure();
    assert!(run.stderr.contains("the query is empty"), "{}", run.stderr);
    let run = s
        .kbqa(&corpus, &["search", "？！。", "--mode", "bm25"])
        .failure();
    assert!(run.stderr.contains("no searchable words"), "{}", run.stderr);
    // Hybrid still embeds such a query; it just has no lexical part.
    s.kbqa(&corpus, &["search", "？！。"]).success();
    let run = s
        .kbqa(&corpus, &["search", "GPU", "-k", "100000000", "--json"])
        .success();
    let n = run.json()["results"].as_array().unwrap().len();
    assert!(n > 5 && n < 1000, "a huge k returns what matches: {n}");
    let run = s
        .kbqa(&corpus, &["search", "x", "--mode", "semantic"])
        .failure();
    assert!(run.stderr.contains("unknown search mode"), "{}", run.stderr);

    s.write("kbqa.toml", "[chunk]\ntarget_char = 100\n");
    let run = s.kbqa(&corpus, &["search", "RLHF"]).failure();
    assert!(
        run.stderr.contains("kbqa.toml") && run.stderr.contains("target_char"),
        "{}",
        run.stderr
    );

    std::fs::remove_file(s.path("kbqa.toml")).unwrap();
    // A missing corpus: an error when there is no index to fall back on...
    let fresh = Scratch::new();
    for cmd in [&["index"][..], &["search", "RLHF"][..]] {
        let run = fresh.kbqa(&fresh.path("missing"), cmd).failure();
        assert!(
            run.stderr.contains("corpus folder") && run.stderr.contains("does not exist"),
            "{}",
            run.stderr
        );
    }
    // ...and a warning when an index exists (shipped without its corpus).
    let run = s.kbqa(&s.path("missing"), &["search", "RLHF"]).success();
    assert!(
        run.stderr.contains("using the existing index"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.starts_with("1. ["), "{}", run.stdout);
}

#[test]
fn hybrid_search_shows_each_retrievers_rank() {
    let s = Scratch::with_shipped_index();
    let corpus = repo().join("corpus");
    let run = s
        .kbqa(
            &corpus,
            &[
                "search",
                "Why are GPUs used to train large models?",
                "--json",
            ],
        )
        .success();
    let results = run.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    assert!(results
        .iter()
        .all(|r| r["bm25_rank"].is_u64() || r["vector_rank"].is_u64()));
    assert!(results
        .iter()
        .any(|r| r["bm25_rank"].is_u64() && r["vector_rank"].is_u64()));
    let glossary = results
        .iter()
        .filter(|r| r["source"] == "glossary.toml")
        .count();
    assert!(glossary <= 2, "at most 2 glossary entries: {results:?}");
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    let run = s
        .kbqa(
            &corpus,
            &["search", "为什么要用GPU训练", "--mode", "vector", "--json"],
        )
        .success();
    let top: Vec<String> = run.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        top.iter().any(|t| t.contains("计算单元多")),
        "paraphrase found by meaning: {top:?}"
    );
}
