//! Chunking throughput and BM25 query latency, on the shipped corpus and on
//! a synthetic 50 MB corpus (see BENCHMARKS.md for the figures).
//!
//! `cargo bench --bench retrieval` runs criterion; it also prints per-query
//! latency percentiles (p50/p99 over every evaluation question), which is
//! what BENCHMARKS.md reports for BM25.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kbqa::chunk::{chunk_document, ChunkConfig};
use kbqa::corpus::{Corpus, DocKind, Document};
use kbqa::retrieve::{Query, SearchMode};
use kbqa::{Config, Kb};

const SYNTH_BYTES: usize = 50 << 20;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn questions() -> Vec<String> {
    kbqa::eval::load_set(&repo().join("tests/eval/qa.jsonl"))
        .expect("eval set")
        .into_iter()
        .map(|i| i.question)
        .collect()
}

fn chunking(c: &mut Criterion) {
    let article = Corpus::load(&repo().join("corpus"), false)
        .expect("corpus")
        .documents[0]
        .clone();
    let synthetic = Document {
        source: "synthetic.md".into(),
        kind: DocKind::Markdown,
        text: kbqa::synth::markdown(SYNTH_BYTES, 1),
        sha256: String::new(),
    };
    let config = ChunkConfig::default();
    let mut g = c.benchmark_group("chunking");
    for (name, doc) in [
        ("shipped article", &article),
        ("synthetic 50 MB", &synthetic),
    ] {
        g.throughput(Throughput::Bytes(doc.text.len() as u64));
        if doc.text.len() > 1 << 20 {
            g.sample_size(10);
        }
        g.bench_with_input(BenchmarkId::from_parameter(name), doc, |b, d| {
            b.iter(|| chunk_document(d, &config))
        });
    }
    g.finish();
}

fn open_kb(corpus: &Path, index_dir: &Path) -> Kb {
    let config = Config {
        corpus: corpus.to_path_buf(),
        index_dir: index_dir.to_path_buf(),
        ..Config::default()
    };
    let started = Instant::now();
    let kb = Kb::open(&config, &mut |_| {}).expect("index");
    println!(
        "index {}: {} chunks, opened/built in {:.1} s",
        corpus.display(),
        kb.generation().chunks.len(),
        started.elapsed().as_secs_f64()
    );
    kb
}

fn percentiles(kb: &Kb, questions: &[String], label: &str) {
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        for q in questions {
            let t = Instant::now();
            let _ = Query::parse(q, 5).and_then(|q| kb.search(&q, SearchMode::Bm25));
            times.push(t.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "bm25 query latency, {label}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms ({} queries)",
        p(0.5),
        p(0.9),
        p(0.99),
        times.len()
    );
}

fn bm25(c: &mut Criterion) {
    let questions = questions();
    let tmp = tempfile::tempdir().expect("temp dir");
    let shipped = open_kb(&repo().join("corpus"), &tmp.path().join("idx-shipped"));
    let synth_dir = tmp.path().join("synthetic");
    kbqa::synth::write_corpus(&synth_dir, SYNTH_BYTES, 50, 1).expect("synthetic corpus");
    let synthetic = open_kb(&synth_dir, &tmp.path().join("idx-synthetic"));

    percentiles(&shipped, &questions, "shipped corpus");
    percentiles(&synthetic, &questions, "synthetic 50 MB");

    let mut g = c.benchmark_group("bm25 query");
    for (name, kb) in [
        ("shipped corpus", &shipped),
        ("synthetic 50 MB", &synthetic),
    ] {
        g.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % questions.len();
                Query::parse(&questions[i], 5).and_then(|q| kb.search(&q, SearchMode::Bm25))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, chunking, bm25);
criterion_main!(benches);
