//! Weight matrices repacked at load for fast int8 matrix-vector products.
//!
//! Why not candle's `QMatMul`: candle 0.11 has SIMD kernels only for Q4_0,
//! Q8_0 and the K-quants, while the default Qwen file is mostly Q5_0 (and
//! SmolLM2 all Q4_1), and its CPU matmul streams every weight row once per
//! prompt token, so prefill re-reads the whole model from memory for each
//! token. Here every tensor is converted once into one of two layouts, and
//! one kernel family serves them all:
//!
//! - **5-bit** (`u ∈ 0..32`, weight `= d·(u − 16)`): Q5_0 exactly as stored,
//!   Q4_0 exactly (`u = q + 8`). Per 64 weights: 32 bytes of nibbles (byte
//!   `i` holds weight `i` low and weight `i + 32` high) and a 64-bit mask of
//!   the fifth bits, so unpacking is two shifts/ands and one masked add.
//!   Same 5.5 bits per weight as the file: decode is memory-bound, so the
//!   bytes streamed per token are what matter.
//! - **8-bit** (`u ∈ 0..256`, weight `= d·(u − 128)`): Q8_0 exactly; every
//!   other format (Q4_1, K-quants, f16, f32) is dequantised and requantised
//!   per 32-block to 8 bits, which loses less than the source format did.
//!
//! Activations are quantised per 32-block to int8 (`max|x|/127`), and each
//! 4-product group is one AVX-512 VNNI `dpbusd` (u8 weights × i8
//! activations); the offset `u − o` is folded in through the block sums of
//! the activations. Prompt tokens are processed in tiles so that a weight
//! row, once in L1, serves several tokens. Without AVX-512 (BW + VNNI) a
//! portable scalar path computes the same integers (slowly).

use half::f16;
use rayon::prelude::*;

pub use super::activations::{Activations, CHUNK, QK};
use super::activations::{OFFSET_5, OFFSET_8};
use super::weight_bytes::WeightBytes;

/// How many chunks ahead of the one in use a decode step prefetches a
/// row's weights (measured: decode 23 → 30 tok/s; a prompt's tiles lose by it).
const PREFETCH: usize = 8;
/// Up to this many tokens a product streams its weights (a decode step).
const STREAMING: usize = 8;

/// Prompt tokens per pass over the weights. A batched decode step (2–8
/// tokens, one per sequence) is one tile: the weights are streamed once
/// for all its tokens.
const TILE: usize = 32;

/// How the weights of a [`PackedMatrix`] are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    /// 40 bytes per 64 weights, offset 16.
    Five,
    /// 64 bytes per 64 weights, offset 128.
    Eight,
}

impl Bits {
    fn chunk_bytes(self) -> usize {
        match self {
            Bits::Five => 40,
            Bits::Eight => 64,
        }
    }

    fn offset(self) -> i32 {
        match self {
            Bits::Five => OFFSET_5,
            Bits::Eight => OFFSET_8,
        }
    }
}

/// A `[rows, cols]` matrix (PyTorch `Linear` layout: `y = W x`), repacked.
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    bits: Bits,
    /// Row-major; each row is `cols / 64` chunks of `bits.chunk_bytes()`.
    data: WeightBytes,
    /// One scale per row and 32-block.
    scales: Vec<f16>,
}

fn shape_error(rows: usize, cols: usize) -> Option<String> {
    if rows == 0 || cols == 0 || !cols.is_multiple_of(CHUNK) {
        Some(format!(
            "a {rows}x{cols} matrix is not supported: columns must be a multiple of {CHUNK}"
        ))
    } else {
        None
    }
}

impl PackedMatrix {
    /// Packs a matrix whose chunk `i` (64 weights) has levels `fill(i, &mut u)`
    /// (each `< 32` for [`Bits::Five`]), without materialising all levels.
    fn pack(
        rows: usize,
        cols: usize,
        bits: Bits,
        scales: Vec<f16>,
        fill: impl Fn(usize, &mut [u8; CHUNK]) + Sync,
    ) -> PackedMatrix {
        let chunks = rows * cols / CHUNK;
        let mut data = vec![0u8; chunks * bits.chunk_bytes()];
        data.par_chunks_mut(bits.chunk_bytes())
            .enumerate()
            .for_each(|(i, out)| {
                let mut u = [0u8; CHUNK];
                fill(i, &mut u);
                match bits {
                    Bits::Eight => out.copy_from_slice(&u),
                    Bits::Five => {
                        let mut high = 0u64;
                        for i in 0..32 {
                            out[i] = (u[i] & 0x0F) | ((u[i + 32] & 0x0F) << 4);
                        }
                        for (i, &v) in u.iter().enumerate() {
                            high |= u64::from((v >> 4) & 1) << i;
                        }
                        out[32..40].copy_from_slice(&high.to_le_bytes());
                    }
                }
            });
        PackedMatrix {
            rows,
            cols,
            bits,
            data: data.into(),
            scales,
        }
    }

    /// From GGML Q5_0 blocks (22 bytes: f16 d, u32 high bits, 16 nibble bytes): exact.
    pub fn from_q5_0(rows: usize, cols: usize, bytes: &[u8]) -> Result<PackedMatrix, String> {
        Self::from_blocks(rows, cols, bytes, 22, Bits::Five, |b, u| {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let q = b[6 + j];
                u[j] = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
                u[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
        })
    }

    /// From GGML Q4_0 blocks (18 bytes: f16 d, 16 nibble bytes): exact.
    pub fn from_q4_0(rows: usize, cols: usize, bytes: &[u8]) -> Result<PackedMatrix, String> {
        Self::from_blocks(rows, cols, bytes, 18, Bits::Five, |b, u| {
            for j in 0..16 {
                u[j] = (b[2 + j] & 0x0F) + 8;
                u[j + 16] = (b[2 + j] >> 4) + 8;
            }
        })
    }

    /// From GGML Q8_0 blocks (34 bytes: f16 d, 32 i8): exact.
    pub fn from_q8_0(rows: usize, cols: usize, bytes: &[u8]) -> Result<PackedMatrix, String> {
        Self::from_blocks(rows, cols, bytes, 34, Bits::Eight, |b, u| {
            for j in 0..32 {
                u[j] = (b[2 + j] as i8 as i16 + 128) as u8;
            }
        })
    }

    fn from_blocks(
        rows: usize,
        cols: usize,
        bytes: &[u8],
        block_bytes: usize,
        bits: Bits,
        unpack: impl Fn(&[u8], &mut [u8]) + Sync,
    ) -> Result<PackedMatrix, String> {
        if let Some(e) = shape_error(rows, cols) {
            return Err(e);
        }
        let blocks = rows * cols / QK;
        if bytes.len() != blocks * block_bytes {
            return Err(format!(
                "a {rows}x{cols} matrix needs {} bytes, the tensor has {}",
                blocks * block_bytes,
                bytes.len()
            ));
        }
        let scales = bytes
            .chunks_exact(block_bytes)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Self::pack(rows, cols, bits, scales, |i, u| {
            let (lo, hi) = u.split_at_mut(QK);
            unpack(&bytes[2 * i * block_bytes..][..block_bytes], lo);
            unpack(&bytes[(2 * i + 1) * block_bytes..][..block_bytes], hi);
        }))
    }

    /// Its dimensions, layout and bytes, to write it to disk ([`super::packed_file`]).
    pub(super) fn parts(&self) -> (usize, usize, Bits, &[u8], &[f16]) {
        (self.rows, self.cols, self.bits, &self.data, &self.scales)
    }

    /// The data bytes of a `rows × cols` matrix of `bits` (`None`: a shape
    /// the kernels do not take).
    pub(super) fn data_len(rows: usize, cols: usize, bits: Bits) -> Option<usize> {
        shape_error(rows, cols)
            .is_none()
            .then(|| rows * cols / CHUNK * bits.chunk_bytes())
    }

    /// The scales of a `rows × cols` matrix (one per 32-block).
    pub(super) fn scales_len(rows: usize, cols: usize) -> Option<usize> {
        shape_error(rows, cols).is_none().then(|| rows * cols / QK)
    }

    /// A matrix from [`PackedMatrix::parts`] read back; the caller checked
    /// the lengths against [`PackedMatrix::data_len`] and `scales_len`.
    pub(super) fn from_parts(
        rows: usize,
        cols: usize,
        bits: Bits,
        data: WeightBytes,
        scales: Vec<f16>,
    ) -> PackedMatrix {
        PackedMatrix {
            rows,
            cols,
            bits,
            data,
            scales,
        }
    }

    /// From f32 values (any other format, dequantised): 8 bits per weight,
    /// symmetric per 32-block.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Result<PackedMatrix, String> {
        if let Some(e) = shape_error(rows, cols) {
            return Err(e);
        }
        if values.len() != rows * cols {
            return Err(format!(
                "a {rows}x{cols} matrix needs {} values, got {}",
                rows * cols,
                values.len()
            ));
        }
        let scales: Vec<f16> = values
            .chunks_exact(QK)
            .map(|x| f16::from_f32(x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0))
            .collect();
        let scales_ref = &scales;
        let fill = |i: usize, u: &mut [u8; CHUNK]| {
            for (h, u) in u.chunks_exact_mut(QK).enumerate() {
                let b = 2 * i + h;
                let d = scales_ref[b].to_f32();
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                for (u, v) in u.iter_mut().zip(&values[b * QK..][..QK]) {
                    *u = ((v * inv).round().clamp(-127.0, 127.0) as i16 + 128) as u8;
                }
            }
        };
        let mut m = Self::pack(rows, cols, Bits::Eight, Vec::new(), fill);
        m.scales = scales;
        Ok(m)
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input size.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (weights and scales).
    pub fn bytes(&self) -> usize {
        self.data.len() + 2 * self.scales.len()
    }

    fn row_bytes(&self) -> usize {
        self.cols / CHUNK * self.bits.chunk_bytes()
    }

    /// The level `u` of weight `(r, c)`.
    fn level(&self, r: usize, c: usize) -> i32 {
        let chunk = &self.data[r * self.row_bytes() + c / CHUNK * self.bits.chunk_bytes()..]
            [..self.bits.chunk_bytes()];
        let i = c % CHUNK;
        match self.bits {
            Bits::Eight => i32::from(chunk[i]),
            Bits::Five => {
                let nib = if i < 32 {
                    chunk[i] & 0x0F
                } else {
                    chunk[i - 32] >> 4
                };
                let high = u64::from_le_bytes(chunk[32..40].try_into().unwrap());
                i32::from(nib) | ((((high >> i) & 1) as i32) << 4)
            }
        }
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let o = self.bits.offset();
        for (c, v) in out.iter_mut().enumerate().take(self.cols) {
            let d = self.scales[r * self.cols / QK + c / QK].to_f32();
            *v = d * (self.level(r, c) - o) as f32;
        }
    }

    /// `out[t, rows] = x[t, cols] · Wᵀ` for quantised activations.
    pub fn matmul(&self, x: &Activations, out: &mut [f32]) {
        assert_eq!(x.cols, self.cols, "activation width");
        assert_eq!(out.len(), x.tokens * self.rows, "output size");
        if x.tokens == 1 {
            // Decode: one pass over the weights, rows split across threads.
            out.par_chunks_mut(16)
                .enumerate()
                .for_each(|(i, o)| self.rows_dot(x, 0, i * 16, o));
            return;
        }
        // Prefill: token tiles × row blocks; the tile's activations stay in
        // cache while row blocks pass, each row serving the whole tile.
        const ROWS: usize = 16;
        let tiles = x.tokens.div_ceil(TILE);
        let row_blocks = self.rows.div_ceil(ROWS);
        let mut tmp = vec![0f32; tiles * row_blocks * TILE * ROWS];
        tmp.par_chunks_mut(TILE * ROWS)
            .enumerate()
            .for_each(|(i, o)| {
                let (tile, rb) = (i / row_blocks, i % row_blocks);
                let t0 = tile * TILE;
                let nt = TILE.min(x.tokens - t0);
                let r0 = rb * ROWS;
                let nr = ROWS.min(self.rows - r0);
                // `o` is [token][row] within the tile.
                let mut r = 0;
                while r < nr {
                    let pair = if r + 4 <= nr {
                        4
                    } else if r + 2 <= nr {
                        2
                    } else {
                        1
                    };
                    let mut cols = [[0f32; TILE]; 4];
                    self.rows_tokens(x, t0, nt, r0 + r, &mut cols[..pair]);
                    for (j, col) in cols[..pair].iter().enumerate() {
                        for t in 0..nt {
                            o[t * ROWS + r + j] = col[t];
                        }
                    }
                    r += pair;
                }
            });
        for (i, o) in tmp.chunks_exact(TILE * ROWS).enumerate() {
            let (tile, rb) = (i / row_blocks, i % row_blocks);
            let t0 = tile * TILE;
            let nt = TILE.min(x.tokens - t0);
            let r0 = rb * ROWS;
            let nr = ROWS.min(self.rows - r0);
            for t in 0..nt {
                out[(t0 + t) * self.rows + r0..][..nr].copy_from_slice(&o[t * ROWS..][..nr]);
            }
        }
    }

    /// Rows `r0..r0 + out.len()` for token `t` (decode).
    fn rows_dot(&self, x: &Activations, t: usize, r0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if simd() {
            // Safety: `simd()` checked the CPU features.
            unsafe { self.rows_dot_avx512(x, t, r0, out) };
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dot_scalar(x, t, r0 + i);
        }
    }

    /// Rows `r..r + out.len()` (one, two or four) for tokens `t0..t0 + nt`
    /// (prefill); `out[j]` is row `r + j`'s results.
    fn rows_tokens(
        &self,
        x: &Activations,
        t0: usize,
        nt: usize,
        r: usize,
        out: &mut [[f32; TILE]],
    ) {
        #[cfg(target_arch = "x86_64")]
        if simd() {
            // Safety: `simd()` checked the CPU features.
            unsafe { self.rows_tokens_avx512(x, t0, nt, r, out) };
            return;
        }
        for (j, o) in out.iter_mut().enumerate() {
            for (i, o) in o.iter_mut().enumerate().take(nt) {
                *o = self.dot_scalar(x, t0 + i, r + j);
            }
        }
    }

    /// The reference: exact integer block dots, then scales.
    fn dot_scalar(&self, x: &Activations, t: usize, r: usize) -> f32 {
        let nb = self.cols / QK;
        let o = self.bits.offset();
        let mut acc = 0f32;
        for b in 0..nb {
            let mut dot = 0i32;
            for j in 0..QK {
                let c = b * QK + j;
                dot += self.level(r, c) * i32::from(x.q[t * self.cols + c]);
            }
            dot -= o * x.sums[t * nb + b];
            acc += self.scales[r * nb + b].to_f32() * x.scales[t * nb + b] * dot as f32;
        }
        acc
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows_dot_avx512(&self, x: &Activations, t: usize, r0: usize, out: &mut [f32]) {
        let mut r = 0;
        while r + 4 <= out.len() {
            // Safety: rows r0 + r .. r0 + r + 4 exist; t < x.tokens.
            let v = unsafe { self.block_avx512::<4, 1>(x, t, r0 + r) };
            out[r..r + 4].copy_from_slice(&v.map(|v| v[0]));
            r += 4;
        }
        while r < out.len() {
            // Safety: as above, one row.
            out[r] = unsafe { self.block_avx512::<1, 1>(x, t, r0 + r) }[0][0];
            r += 1;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows_tokens_avx512(
        &self,
        x: &Activations,
        t0: usize,
        nt: usize,
        r: usize,
        out: &mut [[f32; TILE]],
    ) {
        let mut t = 0;
        while t + 4 <= nt {
            // Safety: tokens t0 + t .. t0 + t + 4 exist; rows r .. r + out.len() exist.
            unsafe {
                if out.len() == 4 {
                    let v = self.block_avx512::<4, 4>(x, t0 + t, r);
                    for (o, v) in out.iter_mut().zip(&v) {
                        o[t..t + 4].copy_from_slice(v);
                    }
                } else if out.len() == 2 {
                    let v = self.block_avx512::<2, 4>(x, t0 + t, r);
                    out[0][t..t + 4].copy_from_slice(&v[0]);
                    out[1][t..t + 4].copy_from_slice(&v[1]);
                } else {
                    let v = self.block_avx512::<1, 4>(x, t0 + t, r);
                    out[0][t..t + 4].copy_from_slice(&v[0]);
                }
            }
            t += 4;
        }
        // The last 1–3 tokens: each weight chunk still unpacked once for them all.
        let rest = nt - t;
        if rest > 0 {
            // Safety: as above, `rest` tokens and `out.len()` rows.
            unsafe {
                match (out.len(), rest) {
                    (4, 1) => self.tail::<4, 1>(x, t0 + t, r, t, out),
                    (4, 2) => self.tail::<4, 2>(x, t0 + t, r, t, out),
                    (4, 3) => self.tail::<4, 3>(x, t0 + t, r, t, out),
                    (2, 1) => self.tail::<2, 1>(x, t0 + t, r, t, out),
                    (2, 2) => self.tail::<2, 2>(x, t0 + t, r, t, out),
                    (2, 3) => self.tail::<2, 3>(x, t0 + t, r, t, out),
                    (_, 1) => self.tail::<1, 1>(x, t0 + t, r, t, out),
                    (_, 2) => self.tail::<1, 2>(x, t0 + t, r, t, out),
                    _ => self.tail::<1, 3>(x, t0 + t, r, t, out),
                }
            }
        }
    }

    /// Rows `r..r + R` × tokens `x0..x0 + T` into `out[j][at..at + T]`.
    ///
    /// # Safety
    /// As [`Self::block_avx512`]; `out.len() == R`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tail<const R: usize, const T: usize>(
        &self,
        x: &Activations,
        x0: usize,
        r: usize,
        at: usize,
        out: &mut [[f32; TILE]],
    ) {
        // Safety: the caller's.
        let v = unsafe { self.block_avx512::<R, T>(x, x0, r) };
        for (o, v) in out.iter_mut().zip(&v) {
            o[at..at + T].copy_from_slice(v);
        }
    }

    /// Dot products of rows `r..r + R` with tokens `t..t + T`: each weight
    /// chunk is unpacked once for all `T` tokens, each activation chunk
    /// loaded once for all `R` rows.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `r + R <= rows`, `t + T <= x.tokens`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block_avx512<const R: usize, const T: usize>(
        &self,
        x: &Activations,
        t: usize,
        r: usize,
    ) -> [[f32; T]; R] {
        use std::arch::x86_64::*;
        let chunks = self.cols / CHUNK;
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let xq: [*const i8; T] =
            std::array::from_fn(|i| unsafe { x.q.as_ptr().add((t + i) * self.cols) });
        let xs: [*const f32; T] =
            std::array::from_fn(|i| unsafe { x.lane_scales.as_ptr().add((t + i) * chunks * 16) });
        // The offset correction `−o·Σq` per block, as the dot products'
        // starting value (exact integers, no extra instruction per product).
        let corr = match self.bits {
            Bits::Five => &x.lane_corr_5,
            Bits::Eight => &x.lane_corr_8,
        };
        let xc: [*const i32; T] =
            std::array::from_fn(|i| unsafe { corr.as_ptr().add((t + i) * chunks * 16) });
        // Once per block, not per chunk: the bytes may be a mapped file's.
        let data = self.data.as_ptr();
        // A decode step (a few tokens) reads each weight once, straight from
        // memory, and waits on it: ask for the row's next chunks early. A
        // prompt's tiles read the same weights again from cache, where
        // prefetching only adds work.
        let streaming = x.tokens <= STREAMING;
        let (row_bytes, cb) = (self.row_bytes(), self.bits.chunk_bytes());
        for c in 0..chunks {
            // Safety (whole loop body): c < chunks, rows and tokens in range.
            // The R weight chunks are unpacked once; each token's
            // activations are then loaded once and applied to all R rows.
            unsafe {
                if streaming {
                    for j in 0..R {
                        let ahead = (r + j) * row_bytes + (c + PREFETCH) * cb;
                        _mm_prefetch::<_MM_HINT_T0>(data.wrapping_add(ahead) as *const i8);
                    }
                }
                let wv: [(__m512i, __m512); R] =
                    std::array::from_fn(|j| self.load_chunk(data, r + j, c));
                for i in 0..T {
                    let a = _mm512_loadu_si512(xq[i].add(c * CHUNK) as *const _);
                    let s = _mm512_loadu_ps(xs[i].add(c * 16));
                    let k = _mm512_loadu_si512(xc[i].add(c * 16) as *const _);
                    for (j, (w, ws)) in wv.iter().enumerate() {
                        let dot = _mm512_dpbusd_epi32(k, *w, a);
                        acc[j][i] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_mul_ps(*ws, s),
                            acc[j][i],
                        );
                    }
                }
            }
        }
        acc.map(|row| row.map(|v| _mm512_reduce_add_ps(v)))
    }

    /// Chunk `c` of row `r` (`data` is the matrix's bytes) as 64 unsigned
    /// levels, and its two block scales spread over the 8 lanes of each block.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn load_chunk(
        &self,
        data: *const u8,
        r: usize,
        c: usize,
    ) -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let cb = self.bits.chunk_bytes();
        // Safety (whole block): the caller keeps r < rows and c < cols / 64.
        unsafe {
            let p = data.add(r * self.row_bytes() + c * cb);
            let w = match self.bits {
                Bits::Eight => _mm512_loadu_si512(p as *const _),
                Bits::Five => {
                    let v = _mm256_loadu_si256(p as *const __m256i);
                    let low = _mm256_set1_epi8(0x0F);
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                    let mask = (p.add(32) as *const u64).read_unaligned();
                    _mm512_mask_add_epi8(w, mask, w, _mm512_set1_epi8(16))
                }
            };
            let sp = self.scales.as_ptr().add((r * self.cols + c * CHUNK) / QK);
            let pair = _mm_cvtph_ps(_mm_cvtsi32_si128((sp as *const i32).read_unaligned()));
            let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let ws = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(pair));
            (w, ws)
        }
    }
}

/// Whether the AVX-512 kernels can run here.
#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
