//! Embedding speed of kbqa's candle E5, on the same inputs the reference
//! engine's bench uses (`tests/fixtures/e5/generate.sh --bench`): query
//! latency for "什么是RLHF？" (median of 50 after 5 warm-ups), and passages/s
//! over the non-heading paragraphs of `corpus/article.md`, one at a time and
//! batched. `benches/embed_vs_reference.sh` runs both engines alternately.
//!
//! Run: `cargo bench --bench embed` (env `KBQA_HOME` for the model cache).

use std::time::Instant;

use kbqa::engine::Embedder;
use kbqa::models::e5::Kind;
use kbqa::models::embedder::E5Embedder;
use kbqa::models::fetch;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    kbqa::models::init_threads(0);
    let home = std::env::var_os("KBQA_HOME")
        .map(Into::into)
        .unwrap_or_else(|| kbqa::Config::default().home);
    let path = fetch::ensure(&fetch::E5_SMALL_Q4, &home, "python3", &mut |_| {}).expect("model");
    let t = Instant::now();
    let e = E5Embedder::load(&path).expect("load");
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_after_load = peak_rss_mb();

    let query = "什么是RLHF？";
    for _ in 0..5 {
        e.embed_query(query).unwrap();
    }
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            e.embed_query(query).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let tokens = e.model().token_ids(query, Kind::Query).unwrap().len() + 2;
    let t = Instant::now();
    for _ in 0..50 {
        e.model().token_ids(query, Kind::Query).unwrap();
    }
    let tokenize_ms = t.elapsed().as_secs_f64() * 1e3 / 50.0;
    let ids = e.model().token_ids(query, Kind::Query).unwrap();
    let t = Instant::now();
    for _ in 0..50 {
        e.model().embed_ids(&ids).unwrap();
    }
    let forward_ms = t.elapsed().as_secs_f64() * 1e3 / 50.0;
    println!("kbqa e5: query tokenize {tokenize_ms:.3} ms, forward {forward_ms:.2} ms (means)");

    let article =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/article.md")).unwrap();
    let paragraphs: Vec<&str> = article
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let t = Instant::now();
    for p in &paragraphs {
        e.model().embed(p, Kind::Passage).unwrap();
    }
    let one_at_a_time = paragraphs.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    e.embed_passages(&paragraphs, &mut |_| {}).unwrap();
    let batched = paragraphs.len() as f64 / t.elapsed().as_secs_f64();

    println!("kbqa e5: load {load_ms:.0} ms, RSS after load {rss_after_load:.0} MB");
    println!(
        "kbqa e5: query {query:?} ({tokens} tokens): p50 {:.2} ms, min {:.2} ms, max {:.2} ms (50 runs)",
        times[25], times[0], times[49]
    );
    println!(
        "kbqa e5: {} passages one at a time: {one_at_a_time:.2} passages/s",
        paragraphs.len()
    );
    println!(
        "kbqa e5: {} passages batched: {batched:.2} passages/s",
        paragraphs.len()
    );
    println!("kbqa e5: peak RSS {:.0} MB", peak_rss_mb());
}
