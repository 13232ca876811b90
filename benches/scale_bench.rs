//! `kbqa-scale-bench`: the local index backend against the `postgres` one
//! on a synthetic corpus, side by side in one run (BENCHMARKS.md, "Past
//! one machine").
//!
//! ```text
//! kbqa-scale-bench --database-url URL --bytes 60000000 --dir target/scale [--queries 300]
//! ```
//!
//! The corpus is `kbqa::synth` Markdown (the article's sentences,
//! reshuffled); its vectors are generated, not embedded: each text's
//! vector is a pseudo-random unit vector seeded by the text (384
//! dimensions, as e5-small), so the graph and the tables have their real
//! size while the build takes minutes, not hours of embedding. Reported:
//! build time and size per backend; the time to open a generation and
//! the memory it adds to a process (each measured in a child process of
//! its own); search latency p50/p99 per mode, the backends taking turns
//! query by query.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kbqa::config::{Config, IndexBackend, LexicalEngine, SearchMode};
use kbqa::corpus::Corpus;
use kbqa::engine::Embedder;
use kbqa::index::{IndexSettings, Store, Vectors};
use kbqa::retrieve::{self, Query};
use kbqa::rng::Rng;

const DIM: usize = 384;

/// Pseudo-random unit vectors, seeded by the text.
struct Generated;

fn vector_of(text: &str) -> Vec<f32> {
    let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng(seed);
    let v: Vec<f32> = (0..DIM).map(|_| rng.next_f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

impl Embedder for Generated {
    fn dim(&self) -> usize {
        DIM
    }
    fn embed_query(&self, query: &str) -> kbqa::Result<Vec<f32>> {
        Ok(vector_of(query))
    }
    fn embed_passages(
        &self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize),
    ) -> kbqa::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len() * DIM);
        for (i, t) in texts.iter().enumerate() {
            out.extend(vector_of(t));
            progress(i + 1);
        }
        Ok(out)
    }
}

struct Args {
    url: String,
    bytes: usize,
    dir: PathBuf,
    queries: usize,
    /// Queries for BM25 in SQL (slow at scale: fewer).
    fts_queries: usize,
    /// Search the generations already built (by a previous run).
    search_only: bool,
    /// In a child: open this backend, print the seconds and the RSS it added.
    open_only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: std::env::var("KBQA_DATABASE_URL").unwrap_or_default(),
        bytes: 60_000_000,
        dir: PathBuf::from("target/scale"),
        queries: 300,
        fts_queries: 30,
        search_only: false,
        open_only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--database-url" => a.url = value(),
            "--bytes" => a.bytes = value().parse().expect("--bytes N"),
            "--dir" => a.dir = PathBuf::from(value()),
            "--queries" => a.queries = value().parse().expect("--queries N"),
            "--fts-queries" => a.fts_queries = value().parse().expect("--fts-queries N"),
            "--search-only" => a.search_only = true,
            "--open-only" => a.open_only = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.url.is_empty(), "--database-url or KBQA_DATABASE_URL");
    a
}

fn config(a: &Args, backend: &str) -> Config {
    let mut c = Config {
        corpus: a.dir.join("corpus"),
        index_dir: a.dir.join("indexes"),
        kb: "scale".into(),
        ..Config::default()
    };
    c.database.url = Some(a.url.clone());
    c.database.statement_timeout_ms = 120_000;
    match backend {
        "local" => {}
        "postgres" | "postgres-fts" => {
            c.index_backend = IndexBackend::Postgres;
            if backend == "postgres-fts" {
                c.database.lexical = LexicalEngine::Fts;
            }
        }
        other => panic!("unknown backend {other}"),
    }
    c
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let a = args();
    if let Some(backend) = &a.open_only {
        let before = rss_kb();
        let t = Instant::now();
        let g = Store::for_config(&config(&a, backend))
            .unwrap()
            .open()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{secs:.2} {} {}",
            rss_kb().saturating_sub(before),
            g.chunks.len()
        );
        return;
    }
    let corpus_dir = a.dir.join("corpus");
    if !corpus_dir.is_dir() {
        kbqa::synth::write_corpus(&corpus_dir, a.bytes, 200, 7).unwrap();
    }
    let base = config(&a, "local");
    if !a.search_only {
        build_and_open(&a, &corpus_dir);
    }
    search(&a, &base);
}

fn build_and_open(a: &Args, corpus_dir: &Path) {
    let corpus = Corpus::load(corpus_dir, false).unwrap();
    let base = config(a, "local");
    let settings =
        IndexSettings::from_config(&base, Some(("generated".into(), "generated".into())));
    println!(
        "## Build ({:.1} MB of Markdown in {} files)",
        dir_bytes(corpus_dir) as f64 / 1e6,
        corpus.documents.len()
    );
    let corpus_dir = corpus_dir.to_path_buf();
    println!("| backend | chunks | build s | size MB |");
    println!("|---|---|---|---|");
    for backend in ["local", "postgres"] {
        let c = config(a, backend);
        let store = Store::for_config(&c).unwrap();
        let t = Instant::now();
        let m = store
            .build(
                &corpus_dir,
                &corpus,
                &settings,
                Vectors {
                    embedder: Some(&Generated),
                    config: &c.vector,
                    reuse_live: false,
                },
                &mut |_| {},
            )
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let bytes = match backend {
            "local" => dir_bytes(&a.dir.join("indexes").join(&m.generation)),
            _ => db_bytes(&a.url, &m.generation),
        };
        println!(
            "| {backend} | {} | {secs:.1} | {:.0} |",
            m.chunk_count,
            bytes as f64 / 1e6
        );
    }

    println!("\n## Opening a generation (child process each)");
    println!("| backend | open s | RSS added MB |");
    println!("|---|---|---|");
    for backend in ["local", "postgres", "postgres-fts"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--database-url", &a.url, "--dir"])
            .arg(&a.dir)
            .args(["--open-only", backend])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        let mb = f.get(1).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
        println!("| {backend} | {} | {mb:.0} |", f.first().unwrap_or(&"?"));
    }
}

fn search(a: &Args, base: &Config) {
    let questions: Vec<String> = std::fs::read_to_string("tests/eval/qa.jsonl")
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_string))
        .collect();
    let backends = ["local", "postgres", "postgres-fts"];
    let generations: Vec<_> = backends
        .iter()
        .map(|b| Store::for_config(&config(a, b)).unwrap().open().unwrap())
        .collect();
    println!(
        "\n## Search latency, k = 5 ({} queries; {} for BM25 in SQL; backends in turn)",
        a.queries, a.fts_queries
    );
    println!("| mode | backend | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
        for i in 0..a.queries {
            let q = &questions[i % questions.len()];
            let Ok(query) = Query::parse(q, 5) else {
                continue;
            };
            let v = vector_of(q);
            for (j, g) in generations.iter().enumerate() {
                if j == 2 && (mode == SearchMode::Vector || i >= a.fts_queries) {
                    continue;
                }
                let t = Instant::now();
                let r = retrieve::search(g, &query, Some(&v), mode, &base.search, &base.vector);
                if r.is_ok() {
                    times[j].push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        for (j, b) in backends.iter().enumerate() {
            if mode == SearchMode::Vector && j == 2 {
                continue; // the same vector search as "postgres"
            }
            let t = &mut times[j];
            if t.is_empty() {
                continue;
            }
            t.sort_by(f64::total_cmp);
            println!(
                "| {mode} | {b} | {:.2} | {:.2} |",
                percentile(t, 0.5),
                percentile(t, 0.99)
            );
        }
    }
}

/// The size of one generation's tables and indexes in the database.
fn db_bytes(url: &str, generation: &str) -> u64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let id: i64 = generation.trim_start_matches("pg-").parse().unwrap();
    let row = c
        .query_one(
            &format!(
                "SELECT pg_total_relation_size('kbqa_chunks_{id}') + pg_total_relation_size('kbqa_df_{id}')"
            ),
            &[],
        )
        .unwrap();
    row.get::<_, i64>(0) as u64
}
