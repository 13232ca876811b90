//! A prompt's activations as the packed kernels ([`super::packed`]) read
//! them: int8 per 32-block, with the per-lane scale and offset-correction
//! vectors each 64-weight chunk multiplies by, computed once per token
//! rather than once per weight row.

use rayon::prelude::*;

/// Weights per quantisation block (one scale each).
pub const QK: usize = 32;
/// Weights per packed chunk (two blocks: one 512-bit vector of bytes).
pub const CHUNK: usize = 64;
/// The level offset of the packed 5-bit layout (weight `= d·(u − 16)`).
pub(super) const OFFSET_5: i32 = 16;
/// The level offset of the packed 8-bit layout (weight `= d·(u − 128)`).
pub(super) const OFFSET_8: i32 = 128;

/// One token's activations: int8 levels, block scales and sums, and their
/// per-lane copies.
fn quantise_row(
    x: &[f32],
    q: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
    lane_scales: &mut [f32],
    lane_corr_5: &mut [i32],
    lane_corr_8: &mut [i32],
) {
    for (b, (xb, qb)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut total = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            total += r;
        }
        scales[b] = d;
        sums[b] = total;
        lane_scales[b * 8..][..8].fill(d);
        // The whole correction in the block's first lane, zero in the others.
        lane_corr_5[b * 8..][..8].fill(0);
        lane_corr_8[b * 8..][..8].fill(0);
        lane_corr_5[b * 8] = -OFFSET_5 * total;
        lane_corr_8[b * 8] = -OFFSET_8 * total;
    }
}

/// `[tokens, cols]` activations quantised per 32-block to int8, with the
/// per-lane scale and block-sum vectors the kernels multiply by.
pub struct Activations {
    pub(super) tokens: usize,
    pub(super) cols: usize,
    pub(super) q: Vec<i8>,
    pub(super) scales: Vec<f32>,
    pub(super) sums: Vec<i32>,
    /// Per token and 64-chunk: 16 lanes, the first 8 block 0's scale, the rest block 1's.
    pub(super) lane_scales: Vec<f32>,
    /// Per token and 64-chunk: 16 lanes holding the 5-bit layout's offset
    /// correction `−16·Σq` of each block in its first lane, zeros elsewhere.
    pub(super) lane_corr_5: Vec<i32>,
    /// Likewise for the 8-bit layout's offset.
    pub(super) lane_corr_8: Vec<i32>,
}

impl Activations {
    /// Quantises `x` (`tokens × cols`, row-major).
    pub fn quantise(x: &[f32], cols: usize) -> Activations {
        assert!(cols.is_multiple_of(CHUNK) && x.len().is_multiple_of(cols));
        let tokens = x.len() / cols;
        let nb = cols / QK;
        let mut a = Activations {
            tokens,
            cols,
            q: vec![0; x.len()],
            scales: vec![0.0; tokens * nb],
            sums: vec![0; tokens * nb],
            lane_scales: vec![0.0; tokens * nb * 8],
            lane_corr_5: vec![0; tokens * nb * 8],
            lane_corr_8: vec![0; tokens * nb * 8],
        };
        let iter = x
            .chunks(cols)
            .zip(a.q.chunks_mut(cols))
            .zip(a.scales.chunks_mut(nb).zip(a.sums.chunks_mut(nb)))
            .zip(
                a.lane_scales.chunks_mut(nb * 8).zip(
                    a.lane_corr_5
                        .chunks_mut(nb * 8)
                        .zip(a.lane_corr_8.chunks_mut(nb * 8)),
                ),
            );
        if tokens > 4 {
            iter.par_bridge()
                .for_each(|(((x, q), (s, sum)), (ls, (c5, c8)))| {
                    quantise_row(x, q, s, sum, ls, c5, c8)
                });
        } else {
            iter.for_each(|(((x, q), (s, sum)), (ls, (c5, c8)))| {
                quantise_row(x, q, s, sum, ls, c5, c8)
            });
        }
        a
    }
}
