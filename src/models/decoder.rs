//! A decoder-only transformer of the Qwen2 / Llama family, read from GGUF.
//!
//! Our own forward pass rather than candle-transformers' `quantized_qwen2`,
//! because that one is where the time and memory went (see MODELS.md): it
//! grows the KV cache with `cat` and copies it for grouped-query attention
//! on every step, expands the 152k-row token embedding to f32 (545 MB), and
//! runs the slow formats through scalar kernels. Here:
//! - weights are [`PackedMatrix`]es (SIMD kernels for every format);
//! - the token embedding stays packed, rows unpacked on lookup, and doubles
//!   as the output layer when the file ties them;
//! - the KV cache ([`KvCache`], in [`super::kv_cache`]) is preallocated per
//!   layer as `[kv_head][position][dim]`, written in place, and read
//!   directly by each query head of its group;
//! - a cache can be copied, so a fixed prompt prefix is computed once.
//!
//! The two architectures differ only in the details GGUF records: Qwen2 has
//! q/k/v biases and rotates dimension pairs `(i, i + d/2)` (NeoX), Llama has
//! no biases and rotates adjacent pairs `(2i, 2i + 1)` (the GGUF converter
//! permutes its q/k rows for that).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use rayon::prelude::*;

use super::attention::{attention, Cached, Heads, Queries};
pub use super::kv_cache::KvCache;
use super::ops::{add_bias, dot, rms_norm};
use super::packed::{Activations, PackedMatrix};
use crate::error::{Error, Result};

/// Architectures this forward pass implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// `qwen2` (Qwen2, Qwen2.5).
    Qwen2,
    /// `llama` (Llama 2, SmolLM2, …).
    Llama,
}

/// Shape and constants, from the file's metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hparams {
    /// The architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub layers: usize,
    /// Embedding width.
    pub dim: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Trained context length.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) q: PackedMatrix,
    pub(super) k: PackedMatrix,
    pub(super) v: PackedMatrix,
    pub(super) bias_q: Option<Vec<f32>>,
    pub(super) bias_k: Option<Vec<f32>>,
    pub(super) bias_v: Option<Vec<f32>>,
    pub(super) o: PackedMatrix,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) gate: PackedMatrix,
    pub(super) up: PackedMatrix,
    pub(super) down: PackedMatrix,
}

/// The weights, ready to run.
pub struct Model {
    /// Shape and constants.
    pub hp: Hparams,
    /// The token embedding; also the output layer when `output` is `None`.
    pub(super) embedding: PackedMatrix,
    pub(super) layers: Vec<Layer>,
    pub(super) out_norm: Vec<f32>,
    /// The output layer, when it differs from the embedding.
    pub(super) output: Option<PackedMatrix>,
    /// RoPE inverse frequencies, one per rotated pair.
    pub(super) inv_freq: Vec<f32>,
}

/// Consecutive rows of one forward pass that belong to one sequence:
/// `t` tokens at positions `p0..p0 + t` of cache `seq`.
struct Run {
    seq: usize,
    p0: usize,
    t: usize,
}

/// The working buffers of one [`Model::forward`] call, for `t` tokens:
/// allocated once and reused by every block, rather than once per block.
struct Scratch {
    /// The normed input of the current half-block, `[t, dim]`.
    h: Vec<f32>,
    /// Queries, `[t, heads · head_dim]`.
    q: Vec<f32>,
    /// New keys and values, `[t, kv_heads · head_dim]`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, before its projection.
    attn: Vec<f32>,
    /// Output of a block's last projection, added to the residual stream.
    proj: Vec<f32>,
    /// Feed-forward activations, `[t, ff]`.
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Scratch {
    fn new(hp: &Hparams, t: usize) -> Scratch {
        let d = hp.dim;
        let kv = hp.kv_heads * hp.head_dim;
        Scratch {
            h: vec![0f32; t * d],
            q: vec![0f32; t * d],
            k: vec![0f32; t * kv],
            v: vec![0f32; t * kv],
            attn: vec![0f32; t * d],
            proj: vec![0f32; t * d],
            gate: vec![0f32; t * hp.ff],
            up: vec![0f32; t * hp.ff],
        }
    }
}

impl KvCache {
    /// Whether this cache fits `model` (layers, heads, head width).
    ///
    /// Here rather than in [`super::kv_cache`] because it needs the
    /// model's shape, and the cache file must not import the model's.
    pub fn fits(&self, model: &Model) -> bool {
        let hp = &model.hp;
        self.has_shape(hp.layers, hp.kv_heads, hp.head_dim)
    }
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelFormat {
        path: path.to_path_buf(),
        format: "GGUF",
        reason: reason.into(),
    }
}

/// Reads a GGUF file's metadata (not its tensors).
pub fn read_content(path: &Path) -> Result<(Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| format_err(path, e.to_string()))?;
    Ok((content, reader))
}

impl Hparams {
    /// From GGUF metadata; unsupported architectures are named.
    pub fn from_metadata(md: &HashMap<String, Value>) -> std::result::Result<Hparams, String> {
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or("metadata has no general.architecture")?
            .clone();
        let arch = match arch_name.as_str() {
            "qwen2" => Arch::Qwen2,
            "llama" => Arch::Llama,
            other => {
                return Err(format!(
                    "architecture {other:?} is not supported (supported: qwen2, llama)"
                ))
            }
        };
        let int = |k: &str| -> std::result::Result<usize, String> {
            let key = format!("{arch_name}.{k}");
            let v = md
                .get(&key)
                .ok_or_else(|| format!("metadata has no {key}"))?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| format!("{key}: {e}"))
        };
        let float = |k: &str, default: f32| -> f32 {
            md.get(&format!("{arch_name}.{k}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let dim = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || dim % heads != 0 {
            return Err(format!(
                "bad head counts: {heads} heads, {kv_heads} kv heads"
            ));
        }
        let head_dim = dim / heads;
        if !head_dim.is_multiple_of(2) {
            return Err(format!("odd head width {head_dim}"));
        }
        let vocab = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map_or(0, |v| v.len());
        let layers = int("block_count")?;
        if layers == 0 || layers > 1024 || dim > 65536 {
            return Err(format!("implausible shape: {layers} blocks of width {dim}"));
        }
        Ok(Hparams {
            arch,
            layers,
            dim,
            ff: int("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            rope_base: float("rope.freq_base", 10_000.0),
            eps: float(
                "attention.layer_norm_rms_epsilon",
                if arch == Arch::Qwen2 { 1e-6 } else { 1e-5 },
            ),
            context: int("context_length").unwrap_or(4096),
            vocab,
        })
    }
}

struct Loader<'a> {
    path: &'a Path,
    content: &'a Content,
    reader: BufReader<File>,
}

impl Loader<'_> {
    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(format_err(self.path, format!("tensor {name} is missing")));
        }
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| format_err(self.path, format!("{name}: {e}")))
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.qtensor(name)?;
        let v = t
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format_err(self.path, format!("{name}: {e}")))?;
        if v.len() != len {
            return Err(format_err(
                self.path,
                format!("{name} has {} values, expected {len}", v.len()),
            ));
        }
        Ok(v)
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<PackedMatrix> {
        let t = self.qtensor(name)?;
        let dims = t.shape().dims().to_vec();
        if dims != [rows, cols] {
            return Err(format_err(
                self.path,
                format!("{name} is {dims:?}, expected [{rows}, {cols}]"),
            ));
        }
        let bad = |e: String| format_err(self.path, format!("{name}: {e}"));
        let bytes = || t.data().map_err(|e| bad(e.to_string()));
        match t.dtype() {
            GgmlDType::Q5_0 => PackedMatrix::from_q5_0(rows, cols, &bytes()?),
            GgmlDType::Q4_0 => PackedMatrix::from_q4_0(rows, cols, &bytes()?),
            GgmlDType::Q8_0 => PackedMatrix::from_q8_0(rows, cols, &bytes()?),
            _ => {
                let values = t
                    .dequantize(&Device::Cpu)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| bad(e.to_string()))?;
                PackedMatrix::from_f32(rows, cols, &values)
            }
        }
        .map_err(bad)
    }
}

impl Model {
    /// Loads and repacks every tensor (one at a time, to bound peak memory).
    pub fn load(path: &Path) -> Result<Model> {
        let (content, reader) = read_content(path)?;
        let mut hp = Hparams::from_metadata(&content.metadata).map_err(|e| format_err(path, e))?;
        // The embedding's row count is the vocabulary the model computes
        // over (it may exceed the tokenizer's list, e.g. padding rows).
        if let Some(info) = content.tensor_infos.get("token_embd.weight") {
            if let [rows, _] = info.shape.dims() {
                hp.vocab = *rows;
            }
        }
        let mut ld = Loader {
            path,
            content: &content,
            reader,
        };
        let (d, kv) = (hp.dim, hp.kv_heads * hp.head_dim);
        let mut embedding = ld.matrix("token_embd.weight", hp.vocab, d)?;
        let mut output = if ld.has("output.weight") {
            Some(ld.matrix("output.weight", hp.vocab, d)?)
        } else {
            None
        };
        // Models trained with tied embeddings (Qwen2.5-0.5B) may still ship
        // both tensors, at two precisions. Keep one copy, the more precise:
        // ~100–150 MB less memory, and less to stream per decoded token.
        if let Some(out) = output.take_if(|out| same_rows(&embedding, out)) {
            if out.bytes() >= embedding.bytes() {
                embedding = out;
            }
        }
        let mut layers = Vec::with_capacity(hp.layers);
        for i in 0..hp.layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |ld: &mut Loader, s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                let name = n(s);
                if ld.has(&name) {
                    ld.vector(&name, len).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: ld.vector(&n("attn_norm.weight"), d)?,
                q: ld.matrix(&n("attn_q.weight"), d, d)?,
                k: ld.matrix(&n("attn_k.weight"), kv, d)?,
                v: ld.matrix(&n("attn_v.weight"), kv, d)?,
                bias_q: bias(&mut ld, "attn_q.bias", d)?,
                bias_k: bias(&mut ld, "attn_k.bias", kv)?,
                bias_v: bias(&mut ld, "attn_v.bias", kv)?,
                o: ld.matrix(&n("attn_output.weight"), d, d)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), d)?,
                gate: ld.matrix(&n("ffn_gate.weight"), hp.ff, d)?,
                up: ld.matrix(&n("ffn_up.weight"), hp.ff, d)?,
                down: ld.matrix(&n("ffn_down.weight"), d, hp.ff)?,
            });
        }
        let out_norm = ld.vector("output_norm.weight", d)?;
        let half = hp.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / hp.rope_base.powf(2.0 * i as f32 / hp.head_dim as f32))
            .collect();
        Ok(Model {
            hp,
            embedding,
            layers,
            out_norm,
            output,
            inv_freq,
        })
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|m| m.bytes())
                    .sum::<usize>()
            })
            .sum();
        l + self.embedding.bytes() + self.output.as_ref().map_or(0, |m| m.bytes())
    }

    /// An empty cache for up to `capacity` positions (memory is committed
    /// only as positions are written).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let hp = &self.hp;
        KvCache::new(hp.layers, hp.kv_heads, hp.head_dim, capacity)
    }

    /// Runs `tokens` at the next positions of `cache` and returns the
    /// logits of the last one (when `logits` is set).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: bool,
    ) -> Result<Option<Vec<f32>>> {
        let t = tokens.len();
        if t == 0 {
            return Ok(None);
        }
        let runs = [Run {
            seq: 0,
            p0: cache.len(),
            t,
        }];
        let x = self.run(tokens, &mut [cache], &runs)?;
        if !logits {
            return Ok(None);
        }
        let d = self.hp.dim;
        Ok(self.logits(&x[(t - 1) * d..]).pop())
    }

    /// One decode step for several sequences at once: `tokens[i]` at the
    /// next position of `caches[i]`; returns each one's next-token logits.
    /// Every weight is read once for the whole step (decode is bound by
    /// memory bandwidth, so k rows cost little more than one), and each
    /// row's numbers are exactly those of [`Self::forward`] on its own.
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<Vec<f32>>> {
        assert_eq!(tokens.len(), caches.len(), "one token per sequence");
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let runs: Vec<Run> = caches
            .iter()
            .enumerate()
            .map(|(seq, c)| Run {
                seq,
                p0: c.len(),
                t: 1,
            })
            .collect();
        let x = self.run(tokens, caches, &runs)?;
        Ok(self.logits(&x))
    }

    /// The transformer over `tokens`, whose rows belong to sequences as
    /// `runs` say (consecutive rows of one sequence, at consecutive
    /// positions); each sequence's cache advances by its rows. Returns the
    /// final hidden states, `[tokens, dim]`.
    fn run(&self, tokens: &[u32], caches: &mut [&mut KvCache], runs: &[Run]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        for r in runs {
            let c = &caches[r.seq];
            if c.len() + r.t > c.capacity() {
                return Err(Error::Model(format!(
                    "the prompt and answer need {} positions; the context holds {}",
                    c.len() + r.t,
                    c.capacity()
                )));
            }
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= hp.vocab) {
            return Err(Error::Model(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        let (d, t) = (hp.dim, tokens.len());
        let mut x = vec![0f32; t * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            self.embedding.row(id as usize, row);
        }
        let positions: Vec<usize> = runs.iter().flat_map(|r| r.p0..r.p0 + r.t).collect();
        let mut s = Scratch::new(hp, t);
        for (l, layer) in self.layers.iter().enumerate() {
            self.attention_block(layer, l, caches, runs, &positions, &mut x, &mut s);
            self.feed_forward_block(layer, &mut x, &mut s);
        }
        for r in runs {
            caches[r.seq].advance(r.t);
        }
        Ok(x)
    }

    /// Next-token logits for each row of final hidden states `x`.
    fn logits(&self, x: &[f32]) -> Vec<Vec<f32>> {
        let d = self.hp.dim;
        let mut normed = vec![0f32; x.len()];
        rms_norm(x, &self.out_norm, self.hp.eps, &mut normed);
        let out = self.output.as_ref().unwrap_or(&self.embedding);
        let mut logits = vec![0f32; x.len() / d * out.rows()];
        out.matmul(&Activations::quantise(&normed, d), &mut logits);
        logits
            .chunks_exact(out.rows())
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// The attention half of block `l`: norm, q/k/v projections (biases,
    /// RoPE at each row's position), each sequence's new keys and values
    /// into its cache and its rows' attention over it, the output
    /// projection added to the residual stream `x`.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        layer: &Layer,
        l: usize,
        caches: &mut [&mut KvCache],
        runs: &[Run],
        positions: &[usize],
        x: &mut [f32],
        s: &mut Scratch,
    ) {
        let hp = &self.hp;
        let d = hp.dim;
        let kv = hp.kv_heads * hp.head_dim;
        rms_norm(x, &layer.attn_norm, hp.eps, &mut s.h);
        let a = Activations::quantise(&s.h, d);
        layer.q.matmul(&a, &mut s.q);
        layer.k.matmul(&a, &mut s.k);
        layer.v.matmul(&a, &mut s.v);
        add_bias(&mut s.q, layer.bias_q.as_deref());
        add_bias(&mut s.k, layer.bias_k.as_deref());
        add_bias(&mut s.v, layer.bias_v.as_deref());
        self.rope(&mut s.q, hp.heads, positions);
        self.rope(&mut s.k, hp.kv_heads, positions);
        let mut row = 0;
        for r in runs {
            let cache = &mut caches[r.seq];
            let rows = row..row + r.t;
            cache.store(
                l,
                r.p0,
                hp.kv_heads,
                &s.k[rows.start * kv..rows.end * kv],
                &s.v[rows.start * kv..rows.end * kv],
            );
            let (keys, values) = cache.layer(l);
            attention(
                Heads {
                    heads: hp.heads,
                    kv_heads: hp.kv_heads,
                    dim: hp.head_dim,
                },
                Queries {
                    q: &s.q[rows.start * d..rows.end * d],
                    p0: r.p0,
                    t: r.t,
                },
                Cached {
                    keys,
                    values,
                    capacity: cache.capacity(),
                },
                &mut s.attn[rows.start * d..rows.end * d],
            );
            row += r.t;
        }
        layer
            .o
            .matmul(&Activations::quantise(&s.attn, d), &mut s.proj);
        x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
    }

    /// The feed-forward half of a block: norm, SwiGLU (`silu(gate) · up`),
    /// the down projection added to the residual stream `x`.
    fn feed_forward_block(&self, layer: &Layer, x: &mut [f32], s: &mut Scratch) {
        let hp = &self.hp;
        let d = hp.dim;
        rms_norm(x, &layer.ffn_norm, hp.eps, &mut s.h);
        let a = Activations::quantise(&s.h, d);
        layer.gate.matmul(&a, &mut s.gate);
        layer.up.matmul(&a, &mut s.up);
        s.gate
            .par_chunks_mut(4096)
            .zip(s.up.par_chunks(4096))
            .for_each(|(g, u)| {
                for (g, u) in g.iter_mut().zip(u) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            });
        layer
            .down
            .matmul(&Activations::quantise(&s.gate, hp.ff), &mut s.proj);
        x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
    }

    /// Rotates each head of each token row by its position.
    fn rope(&self, x: &mut [f32], heads: usize, positions: &[usize]) {
        let hd = self.hp.head_dim;
        let half = hd / 2;
        for (tok, &pos) in x.chunks_exact_mut(heads * hd).zip(positions) {
            let pos = pos as f32;
            let (sin, cos): (Vec<f32>, Vec<f32>) =
                self.inv_freq.iter().map(|f| (pos * f).sin_cos()).unzip();
            for head in tok.chunks_exact_mut(hd) {
                for j in 0..half {
                    let (a, b) = match self.hp.arch {
                        Arch::Qwen2 => (j, j + half),
                        Arch::Llama => (2 * j, 2 * j + 1),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[j] - x1 * sin[j];
                    head[b] = x0 * sin[j] + x1 * cos[j];
                }
            }
        }
    }
}

/// Whether two `[vocab, dim]` matrices hold the same weights (up to
/// quantisation): rows spread over the vocabulary all have cosine ≥ 0.98.
/// Unrelated matrices are near 0.
fn same_rows(a: &PackedMatrix, b: &PackedMatrix) -> bool {
    if a.rows() != b.rows() || a.cols() != b.cols() {
        return false;
    }
    let (mut x, mut y) = (vec![0f32; a.cols()], vec![0f32; a.cols()]);
    (0..16).all(|i| {
        let r = (i * 7919 + 13) * 31 % a.rows();
        a.row(r, &mut x);
        b.row(r, &mut y);
        let (xx, yy) = (dot(&x, &x), dot(&y, &y));
        xx > 0.0 && yy > 0.0 && dot(&x, &y) / (xx * yy).sqrt() >= 0.98
    })
}
