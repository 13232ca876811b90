//! HNSW (hnsw_rs, as kbqa configures it) on a synthetic 100k × 384 set of
//! unit vectors: build time, query latency, and recall@10 against exact
//! search, for several beam widths.
//!
//! Real text embeddings have a low intrinsic dimension; isotropic random
//! vectors in 384 dimensions do not (all pairwise distances are nearly
//! equal, so "the 10 nearest" is close to arbitrary and every ANN index
//! scores badly). The vectors here are points of a 24-dimensional latent
//! space mapped into 384 dimensions by a fixed random matrix, plus a little
//! isotropic noise, then normalised; deterministic (fixed seed).
//! Run: `cargo bench --bench vector` (optionally `-- N` for another size).

use std::time::Instant;

use kbqa::config::VectorConfig;
use kbqa::index::vector::{exact_top_k, insert_all, new_hnsw};

const DIM: usize = 384;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f32 / (1u64 << 53) as f32
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

const LATENT: usize = 24;

/// `n` unit vectors: latent Gaussian points through a fixed projection
/// (seed 1), plus noise (seed `seed`).
fn low_rank(n: usize, seed: u64) -> Vec<f32> {
    let mut p = Rng(1);
    let projection: Vec<f32> = (0..LATENT * DIM).map(|_| p.normal()).collect();
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        let z: Vec<f32> = (0..LATENT).map(|_| rng.normal()).collect();
        let row: Vec<f32> = (0..DIM)
            .map(|d| {
                (0..LATENT)
                    .map(|l| z[l] * projection[l * DIM + d])
                    .sum::<f32>()
                    + 0.3 * rng.normal()
            })
            .collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(row.iter().map(|x| x / norm));
    }
    out
}

fn main() {
    kbqa::models::init_threads(0);
    let n: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(100_000);
    let data = low_rank(n, 42);
    let queries = low_rank(300, 7);
    let config = VectorConfig::default();
    println!(
        "hnsw_rs: {n} x {DIM} unit vectors (latent dim {LATENT}), M {}, ef_construction {}, {} threads",
        config.m,
        config.ef_construction,
        rayon::current_num_threads()
    );

    let t = Instant::now();
    let hnsw = new_hnsw(n, &config);
    let rows: Vec<(&[f32], usize)> = data
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    insert_all(&hnsw, &rows);
    println!("build: {:.1} s", t.elapsed().as_secs_f64());

    let exact: Vec<Vec<usize>> = queries
        .chunks_exact(DIM)
        .map(|q| {
            exact_top_k(&data, DIM, q, 10)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let mut exact_ms: Vec<f64> = queries
        .chunks_exact(DIM)
        .take(50)
        .map(|q| {
            let t = Instant::now();
            exact_top_k(&data, DIM, q, 10);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    exact_ms.sort_by(f64::total_cmp);
    println!("exact search: p50 {:.2} ms", exact_ms[25]);
    println!("| ef_search | recall@10 | p50 ms | p99 ms |\n|---|---|---|---|");
    for ef in [32, 64, 128, 256] {
        let mut found = 0;
        let mut times = Vec::new();
        for (q, truth) in queries.chunks_exact(DIM).zip(&exact) {
            let t = Instant::now();
            let hits = hnsw.search(q, 10, ef);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            found += hits.iter().filter(|h| truth.contains(&h.d_id)).count();
        }
        times.sort_by(f64::total_cmp);
        let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "| {ef} | {:.4} | {:.3} | {:.3} |",
            found as f64 / (10 * exact.len()) as f64,
            p(0.5),
            p(0.99)
        );
    }
}
