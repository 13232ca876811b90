//! The local chat model: a GGUF file's weights, tokenizer and chat format,
//! and a generation loop that streams text as it is decoded.
//!
//! One [`Llm`] is loaded per process and shared; each generation uses its
//! own KV cache, seeded from a cached copy of the fixed system-prompt
//! prefix so that prefix is computed once, not per question.

pub mod model;
pub mod openai;
pub mod packed;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::models::gguf_tokenizer::GgufTokenizer;
use crate::synth::Rng;
use model::{KvCache, Model};

/// How text is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// 0 = greedy (deterministic); otherwise softmax temperature.
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off); only with a temperature.
    pub top_p: f32,
    /// Seed for sampling (same seed, same text).
    pub seed: u64,
    /// Extra strings that end generation (not included in the text).
    pub stop: Vec<String>,
    /// A gate on the first token (see [`FirstTokenGate`]).
    pub gate: Option<FirstTokenGate>,
}

/// Lets the first token be one of `tokens` only if the model gives them
/// probability ≥ `threshold` together; otherwise they are excluded and the
/// model says what it would say instead (a gate never forces them). This turns "reply NOT_IN_KB if
/// the passages do not answer" from a greedy yes/no, which a small model
/// gets wrong in both directions, into a score with a threshold calibrated
/// on the evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstTokenGate {
    /// The tokens that start the gated reply.
    pub tokens: Vec<u32>,
    /// Probability needed to allow them.
    pub threshold: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            gate: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn, or a stop string appeared.
    Stop,
    /// `max_new_tokens` or the context ran out.
    Length,
    /// The caller asked to stop (e.g. the client went away).
    Cancelled,
}

/// What a generation produced, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The text (stop strings and end-of-turn tokens removed).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Prompt tokens, including the reused prefix.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys/values came from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// New tokens.
    pub generated_tokens: usize,
    /// Time to process the prompt.
    pub prefill_ms: f64,
    /// Time to generate (after the prompt).
    pub decode_ms: f64,
    /// The gated tokens' probability at the first step, if gated.
    pub gate_probability: Option<f32>,
}

/// A chat prompt as messages, the form every backend takes: the in-process
/// model renders it in ChatML, a model server with its own template.
#[derive(Debug, Clone, Copy)]
pub struct ChatPrompt<'a> {
    /// The system message.
    pub system: &'a str,
    /// Worked examples, as (user, assistant) turns before the question.
    pub examples: &'a [(&'a str, &'a str)],
    /// The user message.
    pub user: &'a str,
}

/// "Start the reply with `marker` only if the model is at least this
/// sure": see [`FirstTokenGate`], which is how the in-process model does it;
/// a model server does it with log-probabilities and a logit bias.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalGate {
    /// The reply that is gated (`NOT_IN_KB`).
    pub marker: &'static str,
    /// Probability the marker's first token needs.
    pub threshold: f32,
}

/// Something that writes the assistant's reply to a chat prompt. Answers
/// ([`crate::answer::ask`]) are built on this, so the prompt, citation and
/// refusal rules are the same whichever engine generates.
pub trait Generator: Send + Sync {
    /// The model's name, as answers report it.
    fn name(&self) -> String;
    /// Tokens `text` takes, for fitting passages into the prompt budget
    /// (an engine without a local tokenizer estimates high).
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Tokens of a prompt's fixed part: the system message, the examples
    /// and the chat template around them.
    fn fixed_tokens(&self, system: &str, examples: &[(&str, &str)]) -> Result<usize>;
    /// Writes the reply, calling `on_text` with each new piece of text;
    /// `on_text` returns `false` to cancel. An engine that may wait on
    /// something else (a server) also calls `on_text("")` every
    /// [`HEARTBEAT`] while it waits, so cancelling never waits for it.
    fn generate(
        &self,
        prompt: &ChatPrompt,
        params: &SamplingParams,
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation>;
}

/// How often a waiting generator checks whether its caller cancelled.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// The configured generator: the in-process model (`models.generator`,
/// fetched on first use) or a model server (`generator.backend = "openai"`).
pub fn load_generator(
    config: &crate::Config,
    events: &mut dyn FnMut(crate::models::fetch::FetchEvent),
) -> Result<std::sync::Arc<dyn Generator>> {
    Ok(match config.generator.backend {
        crate::config::Backend::Local => std::sync::Arc::new(load_configured(config, events)?),
        crate::config::Backend::Openai => {
            let tokenizer = match config.generator.tokenizer.trim() {
                "" => None,
                setting => {
                    let path = crate::models::fetch::resolve(
                        setting,
                        &config.home,
                        &config.python,
                        events,
                    )?;
                    Some(GgufTokenizer::from_gguf(&path)?)
                }
            };
            std::sync::Arc::new(openai::OpenAiGenerator::new(
                &config.generator.openai,
                tokenizer,
            )?)
        }
    })
}

/// Bumped whenever the forward pass's numbers change (kernels, RoPE, …),
/// so cached prompt prefixes from before are not reused.
const NUMERICS_VERSION: u32 = 2;

/// Prompt prefixes kept in memory: the answer's, the question
/// translation's and the answer translation's ([`crate::translate`])
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

/// The configured generator (`models.generator`: a known name, fetched
/// and verified on first use, or a GGUF path), loaded.
pub fn load_configured(
    config: &crate::Config,
    events: &mut dyn FnMut(crate::models::fetch::FetchEvent),
) -> Result<Llm> {
    let path = crate::models::fetch::resolve(
        &config.models.generator,
        &config.home,
        &config.python,
        events,
    )?;
    Ok(Llm::load(&path, config.answer.context)?.with_prefix_dir(config.home.join("cache")))
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
        let hex: String = h.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
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
        let (mut cache, cached) = self.cache_for(prefix)?;
        let mut logits = self
            .model
            .forward(rest, &mut cache, true)?
            .expect("logits were requested");
        let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        let decode_start = Instant::now();

        let mut rng = Rng(params.seed);
        let mut ids: Vec<u32> = Vec::new();
        let mut emitted = 0usize; // bytes of `text` already given to `on_text`
        let mut text = String::new();
        let mut finish = Finish::Length;
        let hold = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut gate_probability = None;
        if let Some(gate) = &params.gate {
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let total: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
            let p: f32 = gate
                .tokens
                .iter()
                .filter_map(|&t| logits.get(t as usize))
                .map(|&v| (v - max).exp() / total)
                .sum();
            gate_probability = Some(p);
            if p < gate.threshold {
                for &t in &gate.tokens {
                    if let Some(v) = logits.get_mut(t as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
        }
        while ids.len() < params.max_new_tokens {
            let next = sample(&logits, params, &mut rng);
            if self.tokenizer.stop_ids.contains(&next) {
                finish = Finish::Stop;
                break;
            }
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
            // Hold back an incomplete character and a possible stop string's start.
            if !text.ends_with('\u{FFFD}') {
                let mut safe = text.len().saturating_sub(hold);
                while !text.is_char_boundary(safe) {
                    safe -= 1;
                }
                if safe > emitted {
                    if !on_text(&text[emitted..safe]) {
                        finish = Finish::Cancelled;
                        emitted = safe;
                        break;
                    }
                    emitted = safe;
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
