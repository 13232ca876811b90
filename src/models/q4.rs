//! A linear layer over Q4_0 weights, as a candle custom op: `y = x Wᵀ + b`.
//!
//! candle 0.11's quantized matmuls take a slow generic path when the inner
//! dimension is not a multiple of 256 (e5's is 384), and f32 weights are 8×
//! the bytes to stream for every token. So this does what the reference
//! engine does, in our own code: activations are quantised per 32-block to
//! int8 (scale `max|x|/127`), weights stay 4-bit (unpacked once, at load,
//! to one unsigned byte per weight), and each block's dot product is an
//! int8×uint8 multiply-add (AVX2 `maddubs`), scaled into f32 accumulators.
//! The `−8` nibble offset is folded in through the activation block sums.
//! Output rows are split over the rayon pool in groups of 8.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

const QK: usize = 32;
const BLOCK: usize = 18;
/// Output rows computed together (each activation block is loaded once for them).
const GROUP: usize = 8;
/// Tokens processed per pass over the weights (their int8 activations,
/// up to 64 × 1536 bytes, stay in L2 while all weight groups pass).
const TILE_TOKENS: usize = 64;

/// A `[rows, cols]` Q4_0 matrix (PyTorch `Linear` layout) and its bias.
pub struct Q4Linear {
    rows: usize,
    cols: usize,
    /// Unpacked nibbles, 0..=15, row-major.
    weights: Vec<u8>,
    /// One scale per 32-weight block, laid out `[row group][block][8 rows]`
    /// (the last group zero-padded), so a block's 8 row scales are one load.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// Where row `o`'s scale for block `b` lives.
fn scale_index(nb: usize, o: usize, b: usize) -> usize {
    ((o / GROUP) * nb + b) * GROUP + o % GROUP
}

/// Activations quantised per 32-block.
struct Quantised {
    q: Vec<i8>,
    scale: Vec<f32>,
    sum: Vec<i32>,
}

fn quantise(x: &[f32], t: usize, cols: usize) -> Quantised {
    let nb = cols / QK;
    let mut out = Quantised {
        q: vec![0; t * cols],
        scale: vec![0.0; t * nb],
        sum: vec![0; t * nb],
    };
    x.par_chunks(cols)
        .zip(out.q.par_chunks_mut(cols))
        .zip(out.scale.par_chunks_mut(nb).zip(out.sum.par_chunks_mut(nb)))
        .for_each(|((xr, qr), (sr, sumr))| {
            for (((xb, qb), s), sum) in xr
                .chunks_exact(QK)
                .zip(qr.chunks_exact_mut(QK))
                .zip(sr)
                .zip(sumr)
            {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let mut total = 0i32;
                for (q, v) in qb.iter_mut().zip(xb) {
                    let r = (v * inv).round_ties_even().clamp(-128.0, 127.0) as i32;
                    *q = r as i8;
                    total += r;
                }
                *s = d;
                *sum = total;
            }
        });
    out
}

impl Q4Linear {
    /// Unpacks Q4_0 bytes of a `[rows, cols]` matrix.
    pub fn new(rows: usize, cols: usize, blocks: &[u8], bias: Vec<f32>) -> Result<Self, String> {
        if rows == 0
            || cols == 0
            || !cols.is_multiple_of(QK)
            || blocks.len() != rows * cols / QK * BLOCK
            || bias.len() != rows
        {
            return Err(format!(
                "bad Q4_0 matrix: {rows}x{cols}, {} bytes, {} biases",
                blocks.len(),
                bias.len()
            ));
        }
        let nb = cols / QK;
        let mut weights = vec![0u8; rows * cols];
        let mut scales = vec![0f32; rows.div_ceil(GROUP) * GROUP * nb];
        for (i, (b, w)) in blocks
            .chunks_exact(BLOCK)
            .zip(weights.chunks_exact_mut(QK))
            .enumerate()
        {
            scales[scale_index(nb, i / nb, i % nb)] =
                half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            for j in 0..16 {
                w[j] = b[2 + j] & 0x0F;
                w[j + 16] = b[2 + j] >> 4;
            }
        }
        Ok(Q4Linear {
            rows,
            cols,
            weights,
            scales,
            bias,
        })
    }

    /// Applies the layer to `x` (`[t, cols]`, f32, contiguous).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// `out[ti * GROUP + r]` for rows `o0..o0 + GROUP` and every token.
    fn group(&self, a: &Quantised, t: usize, o0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if o0 + GROUP <= self.rows
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            // Safety: the CPU has the features the function is compiled for.
            unsafe { self.group_avx2(a, t, o0, out) };
            return;
        }
        self.group_scalar(a, t, o0, out);
    }

    fn group_scalar(&self, a: &Quantised, t: usize, o0: usize, out: &mut [f32]) {
        let nb = self.cols / QK;
        let ro = GROUP.min(self.rows - o0);
        for ti in 0..t {
            for r in 0..ro {
                let o = o0 + r;
                let mut acc = 0f32;
                for b in 0..nb {
                    let w = &self.weights[o * self.cols + b * QK..][..QK];
                    let q = &a.q[ti * self.cols + b * QK..][..QK];
                    let dot: i32 = w
                        .iter()
                        .zip(q)
                        .map(|(&w, &q)| i32::from(w) * i32::from(q))
                        .sum();
                    let s = a.sum[ti * nb + b];
                    acc += self.scales[scale_index(nb, o, b)]
                        * a.scale[ti * nb + b]
                        * (dot - 8 * s) as f32;
                }
                out[ti * GROUP + r] = acc + self.bias[o];
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_avx2(&self, a: &Quantised, t: usize, o0: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let nb = self.cols / QK;
        // A full group: constant trip counts, so the accumulators live in registers.
        let ro = GROUP;
        let ones = _mm256_set1_epi16(1);
        let hsum = |v: __m256| {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        };
        // Two tokens at a time: each weight vector loaded once serves both.
        let mut sc0 = [0f32; GROUP];
        let mut sc1 = [0f32; GROUP];
        let mut ti = 0;
        while ti < t {
            let pair = ti + 1 < t;
            let t1 = if pair { ti + 1 } else { ti };
            let mut acc0 = [_mm256_setzero_ps(); GROUP];
            let mut acc1 = [_mm256_setzero_ps(); GROUP];
            let mut corr0 = _mm256_setzero_ps();
            let mut corr1 = _mm256_setzero_ps();
            for b in 0..nb {
                // Safety: offsets are within `a.q`, `self.weights` and
                // `self.scales` (lengths checked at construction; a full group).
                let av0 = unsafe {
                    _mm256_loadu_si256(a.q.as_ptr().add(ti * self.cols + b * QK) as *const __m256i)
                };
                let av1 = unsafe {
                    _mm256_loadu_si256(a.q.as_ptr().add(t1 * self.cols + b * QK) as *const __m256i)
                };
                // The 8 rows' scales times each token's block scale, and the
                // nibble-offset corrections, as vectors over the rows.
                let sw =
                    unsafe { _mm256_loadu_ps(self.scales.as_ptr().add(scale_index(nb, o0, b))) };
                let s0 = _mm256_mul_ps(sw, _mm256_set1_ps(a.scale[ti * nb + b]));
                let s1 = _mm256_mul_ps(sw, _mm256_set1_ps(a.scale[t1 * nb + b]));
                corr0 = _mm256_fmadd_ps(s0, _mm256_set1_ps(a.sum[ti * nb + b] as f32), corr0);
                corr1 = _mm256_fmadd_ps(s1, _mm256_set1_ps(a.sum[t1 * nb + b] as f32), corr1);
                unsafe {
                    _mm256_storeu_ps(sc0.as_mut_ptr(), s0);
                    _mm256_storeu_ps(sc1.as_mut_ptr(), s1);
                }
                for r in 0..ro {
                    let o = o0 + r;
                    let wv = unsafe {
                        _mm256_loadu_si256(
                            self.weights.as_ptr().add(o * self.cols + b * QK) as *const __m256i
                        )
                    };
                    let dot0 = dot_u8_i8(wv, av0, ones);
                    let dot1 = dot_u8_i8(wv, av1, ones);
                    acc0[r] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(dot0),
                        _mm256_broadcast_ss(&sc0[r]),
                        acc0[r],
                    );
                    acc1[r] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(dot1),
                        _mm256_broadcast_ss(&sc1[r]),
                        acc1[r],
                    );
                }
            }
            let (mut c0, mut c1) = ([0f32; GROUP], [0f32; GROUP]);
            unsafe {
                _mm256_storeu_ps(c0.as_mut_ptr(), corr0);
                _mm256_storeu_ps(c1.as_mut_ptr(), corr1);
            }
            for r in 0..ro {
                out[ti * GROUP + r] = hsum(acc0[r]) - 8.0 * c0[r] + self.bias[o0 + r];
                if pair {
                    out[t1 * GROUP + r] = hsum(acc1[r]) - 8.0 * c1[r] + self.bias[o0 + r];
                }
            }
            ti += 2;
        }
    }
}

/// Eight i32 sums of four u8×i8 products each: one VNNI instruction where
/// the build targets it (e.g. `target-cpu=native` on AVX-512 VNNI CPUs),
/// else AVX2's `maddubs` then `madd` (no overflow: |15·(−128)·2| < 2¹⁵).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot_u8_i8(
    w: std::arch::x86_64::__m256i,
    a: std::arch::x86_64::__m256i,
    ones: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    {
        let _ = ones;
        // Safety: the build enables these features for the whole crate.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a) }
    }
    #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
    // Safety: only called from `group_avx2`, which requires AVX2.
    unsafe {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones)
    }
}

impl CustomOp1 for Q4Linear {
    fn name(&self) -> &'static str {
        "q4_0-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("q4_0-linear wants f32 input");
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("q4_0-linear wants a contiguous input".into())
        })?;
        let (t, cols) = layout.shape().dims2()?;
        if cols != self.cols {
            candle_core::bail!("q4_0-linear: input width {cols}, weights {}", self.cols);
        }
        let x = &data[start..end];
        let groups = self.rows.div_ceil(GROUP);
        let mut out = vec![0f32; t * self.rows];
        // Tokens in tiles whose quantised activations stay in cache while
        // every group of weight rows passes over them.
        for (tile, out_tile) in x
            .chunks(TILE_TOKENS * cols)
            .zip(out.chunks_mut(TILE_TOKENS * self.rows))
        {
            let tt = tile.len() / cols;
            let a = quantise(tile, tt, cols);
            let mut grouped = vec![0f32; groups * tt * GROUP];
            grouped
                .par_chunks_mut(tt * GROUP)
                .enumerate()
                .for_each(|(g, chunk)| self.group(&a, tt, g * GROUP, chunk));
            for (g, chunk) in grouped.chunks_exact(tt * GROUP).enumerate() {
                let ro = GROUP.min(self.rows - g * GROUP);
                for ti in 0..tt {
                    out_tile[ti * self.rows + g * GROUP..][..ro]
                        .copy_from_slice(&chunk[ti * GROUP..][..ro]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((t, self.rows))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn matrix(rows: usize, cols: usize) -> (Q4Linear, Vec<f32>) {
        let mut blocks = Vec::new();
        let mut s = 7u32;
        let mut next = || {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            s >> 16
        };
        for _ in 0..rows * cols / QK {
            blocks.extend(half::f16::from_f32(0.01 + (next() % 1000) as f32 / 1e5).to_le_bytes());
            for _ in 0..16 {
                blocks.push(next() as u8);
            }
        }
        let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.1).collect();
        // The exact f32 weights, for the reference product.
        let mut w = vec![0f32; rows * cols];
        for (b, o) in blocks.chunks_exact(BLOCK).zip(w.chunks_exact_mut(QK)) {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            for j in 0..16 {
                o[j] = ((b[2 + j] & 15) as f32 - 8.0) * d;
                o[j + 16] = ((b[2 + j] >> 4) as f32 - 8.0) * d;
            }
        }
        (Q4Linear::new(rows, cols, &blocks, bias).unwrap(), w)
    }

    #[test]
    fn matches_an_f32_matmul_within_int8_rounding() {
        let (q, w) = matrix(100, 96);
        let wt = Tensor::from_vec(w, (100, 96), &Device::Cpu).unwrap();
        let b = Tensor::from_slice(&q.bias, 100, &Device::Cpu).unwrap();
        for t in [1, 7, 40] {
            let x: Vec<f32> = (0..t * 96)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let x = Tensor::from_vec(x, (t, 96), &Device::Cpu).unwrap();
            let want = x
                .matmul(&wt.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let got = q.forward(&x).unwrap();
            let max_abs = |t: &Tensor| -> f32 {
                t.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let scale = max_abs(&want);
            let diff = max_abs(&(want - &got).unwrap());
            assert!(
                diff <= 0.01 * scale,
                "t = {t}: max diff {diff} (scale {scale})"
            );
            // The SIMD and scalar paths agree exactly up to float summation order.
            let a = quantise(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), t, 96);
            let (mut fast, mut slow) = (vec![0f32; t * GROUP], vec![0f32; t * GROUP]);
            q.group(&a, t, 0, &mut fast);
            q.group_scalar(&a, t, 0, &mut slow);
            for (f, s) in fast.iter().zip(&slow) {
                assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "{f} vs {s}");
            }
        }
    }
}
