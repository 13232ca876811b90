//! Causal attention of new queries over a sequence's key/value cache.
//!
//! A prompt's attention is a quarter of its prefill at the positions kbqa
//! prompts reach (the system prefix alone is ~500 tokens), and the plain
//! form spends most of it on horizontal sums: every score is a 64-wide dot
//! product reduced to one number. For several queries the keys are
//! therefore transposed once per call, sixteen at a time, and each query
//! computes sixteen scores per pass with the key index across the vector
//! lanes; the query heads that share a key head (seven in Qwen2.5-0.5B)
//! read the same transposed keys.
//!
//! Both forms give the same bits: the tiled scores add the products in
//! exactly [`dot`]'s order (eight partial sums, then those in turn), and
//! the softmax and the weighted sum of values are one shared function.
//! Decode steps (a query or a few) keep the plain form, where transposing
//! the whole cache would cost more than it saves.

use rayon::prelude::*;

use super::ops::dot;

/// Keys per transposed tile: the lanes of one 512-bit vector.
const LANES: usize = 16;
/// Partial sums per score, as in [`dot`].
const PARTS: usize = 8;
/// Queries per parallel task of the tiled form.
const BLOCK: usize = 16;
/// From this many queries on, the tiled form is used.
const TILED_FROM: usize = 8;

/// The shape of the attention: query heads, key/value heads and their width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
}

/// `t` queries (`q`, `[t, heads, dim]`) at positions `p0..p0 + t`.
#[derive(Clone, Copy)]
pub(super) struct Queries<'a> {
    pub q: &'a [f32],
    pub p0: usize,
    pub t: usize,
}

/// A layer's cache: `keys`/`values` `[kv_heads, capacity, dim]`, the
/// positions up to the last query's filled.
#[derive(Clone, Copy)]
pub(super) struct Cached<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub capacity: usize,
}

/// The attention of `queries` over `cache` into `out` (`[t, heads, dim]`).
pub(super) fn attention(shape: Heads, queries: Queries, cache: Cached, out: &mut [f32]) {
    if queries.t >= TILED_FROM && shape.dim.is_multiple_of(PARTS) {
        tiled(shape, queries, cache, out);
    } else {
        plain(shape, queries, cache, out);
    }
}

/// One task per query head, one dot product per score.
fn plain(shape: Heads, queries: Queries, cache: Cached, out: &mut [f32]) {
    let (q, p0, t) = (queries.q, queries.p0, queries.t);
    let (keys, values, capacity) = (cache.keys, cache.values, cache.capacity);
    let Heads { heads, dim, .. } = shape;
    let group = heads / shape.kv_heads;
    let scale = 1.0 / (dim as f32).sqrt();
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let g = h / group;
            let k = &keys[g * capacity * dim..];
            let v = &values[g * capacity * dim..];
            let mut res = vec![0f32; t * dim];
            let mut scores = Vec::with_capacity(p0 + t);
            for i in 0..t {
                let qi = &q[i * heads * dim + h * dim..][..dim];
                let n = p0 + i + 1;
                scores.clear();
                scores.extend(k[..n * dim].chunks_exact(dim).map(|kj| dot(qi, kj) * scale));
                weigh_values(&mut scores, v, &mut res[i * dim..][..dim]);
            }
            res
        })
        .collect();
    for (h, res) in per_head.iter().enumerate() {
        for i in 0..t {
            out[i * heads * dim + h * dim..][..dim].copy_from_slice(&res[i * dim..][..dim]);
        }
    }
}

/// Keys transposed per key head once, then one task per query head and
/// block of queries (as many tasks as the plain form has, or more), the
/// heads of a group reading the same transposed keys.
fn tiled(shape: Heads, queries: Queries, cache: Cached, out: &mut [f32]) {
    let (q, p0, t) = (queries.q, queries.p0, queries.t);
    let (keys, values, capacity) = (cache.keys, cache.values, cache.capacity);
    let (heads, kv_heads, dim) = (shape.heads, shape.kv_heads, shape.dim);
    let group = heads / kv_heads;
    let scale = 1.0 / (dim as f32).sqrt();
    let n_all = p0 + t;
    let transposed: Vec<Vec<f32>> = (0..kv_heads)
        .into_par_iter()
        .map(|g| transpose(&keys[g * capacity * dim..][..n_all * dim], dim))
        .collect();
    let blocks = t.div_ceil(BLOCK);
    let results: Vec<Vec<f32>> = (0..heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (h, b) = (task / blocks, task % blocks);
            let g = h / group;
            let (i0, i1) = (b * BLOCK, (b * BLOCK + BLOCK).min(t));
            let v = &values[g * capacity * dim..];
            let mut res = vec![0f32; (i1 - i0) * dim];
            let mut scores = Vec::with_capacity(n_all.next_multiple_of(LANES));
            for (i, o) in (i0..i1).zip(res.chunks_exact_mut(dim)) {
                let qi = &q[i * heads * dim + h * dim..][..dim];
                tile_scores(qi, &transposed[g], p0 + i + 1, scale, &mut scores);
                weigh_values(&mut scores, v, o);
            }
            res
        })
        .collect();
    for (task, res) in results.iter().enumerate() {
        let (h, b) = (task / blocks, task % blocks);
        for (r, row) in res.chunks_exact(dim).enumerate() {
            out[(b * BLOCK + r) * heads * dim + h * dim..][..dim].copy_from_slice(row);
        }
    }
}

/// `keys` (`[n, dim]`) as tiles of [`LANES`] keys, each `[dim][LANES]`; the
/// last tile padded with zeros.
fn transpose(keys: &[f32], dim: usize) -> Vec<f32> {
    let n = keys.len() / dim;
    let mut out = vec![0f32; n.div_ceil(LANES) * dim * LANES];
    for (j, key) in keys.chunks_exact(dim).enumerate() {
        let tile = &mut out[j / LANES * dim * LANES..][..dim * LANES];
        for (d, &x) in key.iter().enumerate() {
            tile[d * LANES + j % LANES] = x;
        }
    }
    out
}

/// `scores` = the scaled scores of `qi` against the first `n` keys of
/// `transposed`, each added up in [`dot`]'s order.
fn tile_scores(qi: &[f32], transposed: &[f32], n: usize, scale: f32, scores: &mut Vec<f32>) {
    let dim = qi.len();
    scores.clear();
    for tile in transposed.chunks_exact(dim * LANES).take(n.div_ceil(LANES)) {
        // parts[k][l]: the products of dims ≡ k (mod 8), key l of the tile.
        let mut parts = [[0f32; LANES]; PARTS];
        for (c, qc) in qi.chunks_exact(PARTS).enumerate() {
            for (k, part) in parts.iter_mut().enumerate() {
                let qd = qc[k];
                let row = &tile[(c * PARTS + k) * LANES..][..LANES];
                for (p, kd) in part.iter_mut().zip(row) {
                    *p += qd * kd;
                }
            }
        }
        let mut sum = parts[0];
        for part in &parts[1..] {
            for (s, p) in sum.iter_mut().zip(part) {
                *s += p;
            }
        }
        let take = (n - scores.len()).min(LANES);
        scores.extend(sum[..take].iter().map(|s| s * scale));
    }
}

/// Softmax of `scores` in place, then `o` (zeros, one head wide) = the
/// values weighted by it, in key order.
fn weigh_values(scores: &mut [f32], values: &[f32], o: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    if let Ok(o) = <&mut [f32; 64]>::try_from(&mut *o) {
        // The common head width, summed in registers: through memory, each
        // key's update waited on the last one's store.
        let mut acc = *o;
        add_weighted(scores, values, sum, &mut acc);
        *o = acc;
    } else {
        add_weighted(scores, values, sum, o);
    }
}

/// `o += Σ_j (scores[j] / sum) · values[j]`, key by key.
#[inline(always)]
fn add_weighted(scores: &[f32], values: &[f32], sum: f32, o: &mut [f32]) {
    for (s, vj) in scores.iter().zip(values.chunks_exact(o.len())) {
        let w = s / sum;
        for (o, v) in o.iter_mut().zip(vj) {
            *o += w * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 20_001) as f32 / 5_000.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn tiled_attention_gives_exactly_the_plain_bits() {
        // Qwen2.5-0.5B's shape: 14 query heads over 2 key/value heads of 64.
        let shape = Heads {
            heads: 14,
            kv_heads: 2,
            dim: 64,
        };
        // Prompts after a cached prefix and from position 0, tiles full and
        // partial, blocks full and partial.
        for (p0, t, capacity) in [(0, 8, 40), (0, 37, 40), (494, 53, 600), (5, 16, 21)] {
            let q = values(t * 14 * 64, 1 + t as u32);
            let keys = values(2 * capacity * 64, 2 + p0 as u32);
            let vals = values(2 * capacity * 64, 3);
            let mut a = vec![0f32; t * 14 * 64];
            let mut b = a.clone();
            let queries = Queries { q: &q, p0, t };
            let cache = Cached {
                keys: &keys,
                values: &vals,
                capacity,
            };
            plain(shape, queries, cache, &mut a);
            tiled(shape, queries, cache, &mut b);
            assert!(a.iter().any(|&x| x != 0.0));
            let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "p0 {p0}, t {t}: the tiled form differs");
        }
    }
}
