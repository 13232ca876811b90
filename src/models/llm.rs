//! The local chat model: a GGUF file's weights, tokenizer and chat format,
//! and a generation loop that streams text as it is decoded.
//!
//! One [`Llm`] is loaded per process and shared; each generation uses its
//! own KV cache, seeded from a cached copy of the fixed system-prompt
//! prefix so that prefix is computed once, not per question.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::decoder::{self as model, KvCache, Model};
use super::fetch::{self, FetchEvent};
use super::gguf_tokenizer::GgufTokenizer;
use crate::engine::{
    ChatPrompt, Finish, FirstTokenGate, Generation, Generator, RefusalGate, SamplingParams,
};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Bumped whenever the forward pass's numbers change (kernels, RoPE, …),
/// so cached prompt prefixes from before are not reused.
const NUMERICS_VERSION: u32 = 2;

/// Prompt prefixes kept in memory: the answer's, the question
/// translation's and the answer translation's (`crate::answer::translate`)
/// alternate in a session.
const PREFIXES_KEPT: usize = 3;

/// Special tokens of the ChatML format both supported model families use.
struct ChatMl {
    im_start: u32,
    im_end: u32,
}

/// A loaded chat model.
pub struct Llm {
    /// The weights.
    pub model: Model,
    /// The tokenizer from the same file.
    pub tokenizer: GgufTokenizer,
    chat: ChatMl,
    path: PathBuf,
    context: usize,
    /// The system-prompt prefixes last used (the answer's and the
    /// translations'), most recent first, and their caches.
    prefix: Mutex<Vec<(Vec<u32>, KvCache)>>,
    /// Where prefix caches are kept between processes (`kbqa ask` is one
    /// question per process; the prefix is the same every time).
    prefix_dir: Option<PathBuf>,
}

/// The chat model `setting` names (a known name, fetched and verified on
/// first use into `home`, or a GGUF path), loaded with `context` positions
/// and its prompt-prefix cache kept under `home/cache`.
pub fn load_named(
    setting: &str,
    home: &Path,
    python: &str,
    context: usize,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<Llm> {
    let path = fetch::resolve(setting, home, python, events)?;
    Ok(Llm::load(&path, context)?.with_prefix_dir(home.join("cache")))
}

impl Llm {
    /// Loads a GGUF chat model. `context` caps the positions per
    /// conversation (the KV cache size).
    pub fn load(path: &Path, context: usize) -> Result<Llm> {
        // The architecture first: an unsupported model is named as such,
        // not as a tokenizer or tensor problem.
        let (content, _) = model::read_content(path)?;
        model::Hparams::from_metadata(&content.metadata).map_err(|reason| Error::ModelFormat {
            path: path.to_path_buf(),
            format: "GGUF",
            reason,
        })?;
        drop(content);
        let tokenizer = GgufTokenizer::from_gguf(path)?;
        let bad = |reason: String| Error::ModelFormat {
            path: path.to_path_buf(),
            format: "GGUF",
            reason,
        };
        let chat = match (
            tokenizer.token_id("<|im_start|>"),
            tokenizer.token_id("<|im_end|>"),
        ) {
            (Some(im_start), Some(im_end)) => ChatMl { im_start, im_end },
            _ => {
                return Err(bad(
                    "the model has no <|im_start|>/<|im_end|> tokens: only ChatML chat models are supported"
                        .into(),
                ))
            }
        };
        let model = Model::load(path)?;
        let context = context.min(model.hp.context).max(16);
        Ok(Llm {
            model,
            tokenizer,
            chat,
            path: path.to_path_buf(),
            context,
            prefix: Mutex::new(Vec::new()),
            prefix_dir: None,
        })
    }

    /// Keeps computed prompt prefixes in `dir` (e.g. `<home>/cache`), keyed
    /// by the model file's identity and the prefix tokens.
    pub fn with_prefix_dir(mut self, dir: PathBuf) -> Llm {
        self.prefix_dir = Some(dir);
        self
    }

    /// The on-disk name of a prefix's cache: model path, size, mtime and
    /// tokens, hashed.
    fn prefix_file(&self, prefix: &[u32]) -> Option<PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = self.prefix_dir.as_ref()?;
        let meta = std::fs::metadata(&self.path).ok()?;
        let mut h = Sha256::new();
        // Keys/values depend on our numerics too: a new kbqa never reuses
        // an old kbqa's cache.
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(NUMERICS_VERSION.to_le_bytes());
        h.update(self.path.canonicalize().ok()?.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        if let Ok(t) = meta.modified() {
            h.update(format!("{t:?}").as_bytes());
        }
        for id in prefix {
            h.update(id.to_le_bytes());
        }
        let hex = crate::hash::hex(&h.finalize()[..12]);
        Some(dir.join(format!("prefix-{hex}.kv")))
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Positions per conversation.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Tokens of plain text. Text that looks like a special token
    /// (`<|im_end|>` in a document or question) stays text: prompt
    /// injection cannot forge turns.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The prompt as (fixed prefix, per-request rest) for a system message,
    /// example turns (user, assistant) and a user message, in the model's
    /// ChatML format. Everything before the user message is the prefix, so
    /// a long system prompt with worked examples is computed once.
    pub fn chat_prompt(
        &self,
        system: &str,
        examples: &[(&str, &str)],
        user: &str,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let nl = self.encode_text("\n")?;
        let turn = |ids: &mut Vec<u32>, role: &str, text: &str| -> Result<()> {
            ids.push(self.chat.im_start);
            ids.extend(self.encode_text(&format!("{role}\n{text}"))?);
            ids.push(self.chat.im_end);
            ids.extend(&nl);
            Ok(())
        };
        let mut prefix = Vec::new();
        turn(&mut prefix, "system", system)?;
        for (u, a) in examples {
            turn(&mut prefix, "user", u)?;
            turn(&mut prefix, "assistant", a)?;
        }
        prefix.push(self.chat.im_start);
        prefix.extend(self.encode_text("user\n")?);
        let mut rest = self.encode_text(user)?;
        rest.push(self.chat.im_end);
        rest.extend(&nl);
        rest.push(self.chat.im_start);
        rest.extend(self.encode_text("assistant\n")?);
        Ok((prefix, rest))
    }

    /// A cache holding `prefix`: from memory, else from disk, else computed
    /// (and then kept in both). Returns how many positions were reused.
    fn cache_for(&self, prefix: &[u32]) -> Result<(KvCache, usize)> {
        let mut cache = self.model.new_cache(self.context);
        let mut memo = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = memo.iter().position(|(ids, _)| ids == prefix) {
            let hit = memo.remove(i);
            cache.copy_prefix_from(&hit.1);
            memo.insert(0, hit);
            return Ok((cache, prefix.len()));
        }
        let keep = |memo: &mut Vec<(Vec<u32>, KvCache)>, c: KvCache| {
            memo.insert(0, (prefix.to_vec(), c));
            memo.truncate(PREFIXES_KEPT);
        };
        let file = self.prefix_file(prefix);
        let stored = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| KvCache::from_bytes(&b))
            .filter(|c| c.len() == prefix.len() && c.fits(&self.model));
        if let Some(c) = stored {
            cache.copy_prefix_from(&c);
            keep(&mut memo, c);
            return Ok((cache, prefix.len()));
        }
        self.model.forward(prefix, &mut cache, false)?;
        let snapshot = cache.snapshot();
        if let Some(f) = file {
            // Best effort, atomically: a cache is an optimisation, never a failure.
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            let written = std::fs::create_dir_all(f.parent().unwrap_or(Path::new(".")))
                .and_then(|_| std::fs::write(&tmp, snapshot.to_bytes()))
                .and_then(|_| std::fs::rename(&tmp, &f));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(
                    "could not keep the prompt prefix cache {}: {e}",
                    f.display()
                );
            }
        }
        keep(&mut memo, snapshot);
        Ok((cache, 0))
    }

    /// The first tokens `marker` starts with as the model would write it
    /// (at the start of a reply, after a space, after a newline).
    pub fn marker_tokens(&self, marker: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for form in [
            marker.to_string(),
            format!(" {marker}"),
            format!("\n{marker}"),
        ] {
            if let Some(&t) = self.encode_text(&form)?.first() {
                if !out.contains(&t) && self.tokenizer.decode(&[t])?.trim().len() >= 2 {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// The KV cache after `prefix + rest` (the prefix from the prefix
    /// cache when it can be), how many positions were reused, and the
    /// logits of the next token.
    fn prefill(&self, prefix: &[u32], rest: &[u32]) -> Result<(KvCache, usize, Vec<f32>)> {
        if rest.is_empty() {
            return Err(Error::Model("the prompt has no per-request part".into()));
        }
        let prompt_tokens = prefix.len() + rest.len();
        if prompt_tokens + 1 > self.context {
            return Err(Error::Model(format!(
                "the prompt has {prompt_tokens} tokens; the context holds {}",
                self.context
            )));
        }
        let _span = tracing::debug_span!("prefill", tokens = rest.len()).entered();
        let (mut cache, cached) = self.cache_for(prefix)?;
        let logits = self
            .model
            .forward(rest, &mut cache, true)?
            .expect("logits were requested");
        Ok((cache, cached, logits))
    }

    /// Generates the assistant's reply to `prefix + rest`, calling `on_text`
    /// with each piece of text as soon as it is complete UTF-8; `on_text`
    /// returns `false` to cancel.
    pub fn generate_tokens(
        &self,
        prefix: &[u32],
        rest: &[u32],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let start = Instant::now();
        let prompt_tokens = prefix.len() + rest.len();
        let (mut cache, cached, mut logits) = self.prefill(prefix, rest)?;
        let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        let decode_start = Instant::now();
        let _decode = tracing::debug_span!("decode").entered();

        let mut rng = Rng(params.seed);
        let mut ids: Vec<u32> = Vec::new();
        let mut emitted = 0usize; // bytes of `text` already given to `on_text`
        let mut text = String::new();
        let mut finish = Finish::Length;
        let hold = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let gate_probability = params.gate.as_ref().map(|g| apply_gate(g, &mut logits));
        let mut token_logprobs = Vec::new();
        while ids.len() < params.max_new_tokens {
            let next = sample(&logits, params, &mut rng);
            if self.tokenizer.stop_ids.contains(&next) {
                finish = Finish::Stop;
                break;
            }
            token_logprobs.push(logprob(&logits, next));
            ids.push(next);
            text = self.tokenizer.decode(&ids)?;
            if let Some(at) = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(at);
                finish = Finish::Stop;
                break;
            }
            if let Some(safe) = emittable(&text, hold).filter(|&safe| safe > emitted) {
                let go_on = on_text(&text[emitted..safe]);
                emitted = safe;
                if !go_on {
                    finish = Finish::Cancelled;
                    break;
                }
            }
            if ids.len() >= params.max_new_tokens || cache.len() + 1 > cache.capacity() {
                break;
            }
            logits = self
                .model
                .forward(&[next], &mut cache, true)?
                .expect("logits were requested");
        }
        let text = text.trim_end_matches('\u{FFFD}').to_string();
        if finish != Finish::Cancelled && text.len() > emitted {
            on_text(&text[emitted..]);
        }
        Ok(Generation {
            text,
            finish,
            prompt_tokens,
            cached_prompt_tokens: cached,
            generated_tokens: ids.len(),
            prefill_ms,
            decode_ms: decode_start.elapsed().as_secs_f64() * 1e3,
            gate_probability,
            token_logprobs,
        })
    }
}

impl Generator for Llm {
    fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.encode_text(text)?.len())
    }

    fn fixed_tokens(&self, system: &str, examples: &[(&str, &str)]) -> Result<usize> {
        Ok(self.chat_prompt(system, examples, "")?.0.len())
    }

    fn generate(
        &self,
        prompt: &ChatPrompt,
        params: &SamplingParams,
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let (prefix, rest) = self.chat_prompt(prompt.system, prompt.examples, prompt.user)?;
        let mut params = params.clone();
        if let Some(g) = gate {
            params.gate = Some(FirstTokenGate {
                tokens: self.marker_tokens(g.marker)?,
                threshold: g.threshold,
            });
        }
        self.generate_tokens(&prefix, &rest, &params, on_text)
    }
}

/// The natural log of the probability `logits` give `token` (a
/// log-softmax at one index; excluded tokens are at minus infinity).
fn logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let total: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&v| v - max - total.ln())
}

/// How much of `text` may be shown: all but an incomplete character at
/// its end (`None`) and the last `hold` bytes, which may be the start of a
/// stop string.
fn emittable(text: &str, hold: usize) -> Option<usize> {
    if text.ends_with('\u{FFFD}') {
        return None;
    }
    let mut safe = text.len().saturating_sub(hold);
    while !text.is_char_boundary(safe) {
        safe -= 1;
    }
    Some(safe)
}

/// The gated tokens' probability at the first step; below the gate's
/// threshold they are excluded from it.
fn apply_gate(gate: &FirstTokenGate, logits: &mut [f32]) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let total: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    let p: f32 = gate
        .tokens
        .iter()
        .filter_map(|&t| logits.get(t as usize))
        .map(|&v| (v - max).exp() / total)
        .sum();
    if p < gate.threshold {
        for &t in &gate.tokens {
            if let Some(v) = logits.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    p
}

/// The next token: argmax when greedy, else temperature + top-p sampling.
fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if params.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v - max) / params.temperature).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0f32;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= params.top_p.clamp(0.0, 1.0) {
            break;
        }
    }
    let probs = &probs[..kept];
    let kept_total: f32 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f32() * kept_total;
    for &(id, p) in probs {
        if r < p {
            return id;
        }
        r -= p;
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_logprob_is_its_log_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let z: f32 = logits.iter().map(|v| v.exp()).sum();
        for t in 0..3 {
            let want = (logits[t].exp() / z).ln();
            assert!((logprob(&logits, t as u32) - want).abs() < 1e-6);
        }
        assert_eq!(logprob(&logits, 9), f32::NEG_INFINITY);
    }

    #[test]
    fn greedy_is_argmax_and_sampling_is_seeded() {
        let logits = vec![0.1, 3.0, 2.9, -1.0];
        let greedy = SamplingParams::default();
        assert_eq!(sample(&logits, &greedy, &mut Rng(1)), 1);
        let hot = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..50)
                .map(|_| sample(&logits, &hot, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let d = draw(7);
        assert!(d.contains(&1) && d.contains(&2), "{d:?}");
        // top_p small enough keeps only the best token.
        let narrow = SamplingParams {
            temperature: 1.0,
            top_p: 0.1,
            ..Default::default()
        };
        let mut rng = Rng(3);
        assert!((0..20).all(|_| sample(&logits, &narrow, &mut rng) == 1));
    }
}
