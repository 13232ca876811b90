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
use super::packed_file;
use super::sampling::{apply_gate, emittable, logprob, sample};
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
/// and its prompt-prefix cache kept under `home/cache` (its repacked
/// weights too, with `keep_packed`).
pub fn load_named(
    setting: &str,
    home: &Path,
    python: &str,
    context: usize,
    keep_packed: bool,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<Llm> {
    let path = fetch::resolve(setting, home, python, events)?;
    let cache = home.join("cache");
    let packed = keep_packed.then_some(cache.as_path());
    Ok(Llm::load_with(&path, context, packed)?.with_prefix_dir(cache))
}

/// The model at `path`, from its packed copy in `packed_dir` when there
/// is one; otherwise repacked from the GGUF and, with a `packed_dir`,
/// saved there for the next process (a failure to save costs only time).
fn load_model(path: &Path, packed_dir: Option<&Path>) -> Result<Model> {
    let cached = packed_dir.and_then(|dir| packed_file::path_for(dir, path));
    if let Some(model) = cached.as_deref().and_then(packed_file::read) {
        return Ok(model);
    }
    let model = Model::load(path)?;
    if let Some(file) = &cached {
        if let Err(e) = packed_file::write(&model, file) {
            tracing::warn!("cannot keep the packed weights in {}: {e}", file.display());
        }
    }
    Ok(model)
}

impl Llm {
    /// Loads a GGUF chat model. `context` caps the positions per
    /// conversation (the KV cache size).
    pub fn load(path: &Path, context: usize) -> Result<Llm> {
        Llm::load_with(path, context, None)
    }

    /// [`Llm::load`], keeping the repacked weights in `packed_dir` after
    /// the first load and reading them from there after that
    /// ([`super::packed_file`]).
    pub fn load_with(path: &Path, context: usize, packed_dir: Option<&Path>) -> Result<Llm> {
        // The architecture first: an unsupported model is named as such,
        // not as a tokenizer or tensor problem.
        let _span = tracing::debug_span!("load_model").entered();
        let (content, _) =
            tracing::debug_span!("read_metadata").in_scope(|| model::read_content(path))?;
        model::Hparams::from_metadata(&content.metadata).map_err(|reason| Error::ModelFormat {
            path: path.to_path_buf(),
            format: "GGUF",
            reason,
        })?;
        let bad = |reason: String| Error::ModelFormat {
            path: path.to_path_buf(),
            format: "GGUF",
            reason,
        };
        // The metadata once: it is 300,000 strings (vocabulary and merges).
        let tokenizer = tracing::debug_span!("build_tokenizer")
            .in_scope(|| GgufTokenizer::from_metadata(&content.metadata))
            .map_err(bad)?;
        drop(content);
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
        let model =
            tracing::debug_span!("load_weights").in_scope(|| load_model(path, packed_dir))?;
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
        let mut out = self.generate_batch(
            &[(prefix, rest)],
            std::slice::from_ref(params),
            &mut |_, piece| on_text(piece),
        )?;
        Ok(out.remove(0))
    }

    /// Replies to several prompts at once, prompt `i` sampled with
    /// `params[i]`: each distinct prompt is prefilled once (sharing the
    /// cached system prefix; an equal prompt's cache is copied), then all
    /// are decoded together, one [`Model::forward_batch`] step for the rows
    /// still writing, so each weight is read once per step for all of them.
    /// Each row decodes exactly what it would alone. `on_text(row, piece)`
    /// gets each row's text as it is complete UTF-8; `false` cancels them
    /// all.
    pub fn generate_batch(
        &self,
        prompts: &[(&[u32], &[u32])],
        params: &[SamplingParams],
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Vec<Generation>> {
        let mut rows = self.prefill_rows(prompts, params)?;
        let decode_start = Instant::now();
        let _decode = tracing::debug_span!("decode", rows = rows.len()).entered();
        let mut cancelled = false;
        loop {
            let mut next = Vec::new();
            for (i, row) in rows.iter_mut().enumerate() {
                if row.finish.is_some() {
                    continue;
                }
                match row.step(self, &params[i])? {
                    Step::Piece(piece) => {
                        if !on_text(i, &piece) {
                            cancelled = true;
                            break;
                        }
                    }
                    Step::Done => continue,
                    Step::Quiet => {}
                }
                if row.finish.is_none() {
                    next.push(i);
                }
            }
            if cancelled || next.is_empty() {
                break;
            }
            let tokens: Vec<u32> = next.iter().map(|&i| *rows[i].ids.last().unwrap()).collect();
            let mut caches: Vec<&mut KvCache> = rows
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| next.contains(i))
                .map(|(_, r)| &mut r.cache)
                .collect();
            let logits = self.model.forward_batch(&tokens, &mut caches)?;
            for (&i, l) in next.iter().zip(logits) {
                rows[i].logits = l;
            }
        }
        let decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| row.end(cancelled, decode_ms, &mut |piece| on_text(i, piece)))
            .collect())
    }

    /// The rows of [`Self::generate_batch`], prefilled: each distinct
    /// prompt once, an equal prompt's cache copied.
    fn prefill_rows(
        &self,
        prompts: &[(&[u32], &[u32])],
        params: &[SamplingParams],
    ) -> Result<Vec<Row>> {
        assert_eq!(prompts.len(), params.len(), "sampling for each prompt");
        let mut rows: Vec<Row> = Vec::with_capacity(prompts.len());
        // Each distinct prompt's state after prefill: (row, logits).
        let mut prefilled: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, (&(prefix, rest), params)) in prompts.iter().zip(params).enumerate() {
            let start = Instant::now();
            let same = prefilled
                .iter()
                .find(|(j, _)| prompts[*j] == (prefix, rest));
            let (cache, cached, mut logits) = match same {
                Some((j, logits)) => {
                    let mut cache = self.model.new_cache(self.context);
                    cache.copy_prefix_from(&rows[*j].cache);
                    (cache, prefix.len() + rest.len(), logits.clone())
                }
                None => {
                    let (cache, cached, logits) = self.prefill(prefix, rest)?;
                    prefilled.push((i, logits.clone()));
                    (cache, cached, logits)
                }
            };
            let gate_probability = params.gate.as_ref().map(|g| apply_gate(g, &mut logits));
            rows.push(Row {
                cache,
                logits,
                rng: Rng(params.seed),
                ids: Vec::new(),
                text: String::new(),
                emitted: 0,
                finish: None,
                token_logprobs: Vec::new(),
                prompt_tokens: prefix.len() + rest.len(),
                cached,
                gate_probability,
                prefill_ms: start.elapsed().as_secs_f64() * 1e3,
            });
        }
        Ok(rows)
    }
}

/// One sequence of [`Llm::generate_batch`].
struct Row {
    cache: KvCache,
    /// The logits of its next token.
    logits: Vec<f32>,
    rng: Rng,
    ids: Vec<u32>,
    text: String,
    /// Bytes of `text` already passed on.
    emitted: usize,
    /// Set once it has ended.
    finish: Option<Finish>,
    token_logprobs: Vec<f32>,
    prompt_tokens: usize,
    cached: usize,
    gate_probability: Option<f32>,
    prefill_ms: f64,
}

/// What one step of a row produced.
enum Step {
    /// New text to pass on.
    Piece(String),
    /// A token, but no complete text to pass on yet.
    Quiet,
    /// It ended without a new token.
    Done,
}

impl Row {
    /// The row's generation, once decoding stopped (`cancelled`: by the
    /// caller); text not yet passed on goes to `on_text` first.
    fn end(
        self,
        cancelled: bool,
        decode_ms: f64,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Generation {
        let finish = if cancelled {
            Finish::Cancelled
        } else {
            self.finish.unwrap_or(Finish::Length)
        };
        let text = self.text.trim_end_matches('\u{FFFD}').to_string();
        if finish != Finish::Cancelled && text.len() > self.emitted {
            on_text(&text[self.emitted..]);
        }
        Generation {
            text,
            finish,
            prompt_tokens: self.prompt_tokens,
            cached_prompt_tokens: self.cached,
            generated_tokens: self.ids.len(),
            prefill_ms: self.prefill_ms,
            decode_ms,
            gate_probability: self.gate_probability,
            token_logprobs: self.token_logprobs,
        }
    }

    /// Samples the row's next token from its logits and updates its text;
    /// sets `finish` when it ends (end of turn, a stop string, the token
    /// limit or a full cache).
    fn step(&mut self, llm: &Llm, params: &SamplingParams) -> Result<Step> {
        let hold = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        if self.ids.len() >= params.max_new_tokens {
            self.finish = Some(Finish::Length);
            return Ok(Step::Done);
        }
        let next = sample(&self.logits, params, &mut self.rng);
        if llm.tokenizer.stop_ids.contains(&next) {
            self.finish = Some(Finish::Stop);
            return Ok(Step::Done);
        }
        self.token_logprobs.push(logprob(&self.logits, next));
        self.ids.push(next);
        self.text = llm.tokenizer.decode(&self.ids)?;
        if let Some(at) = params
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(at);
            self.finish = Some(Finish::Stop);
        } else if self.ids.len() >= params.max_new_tokens
            || self.cache.len() + 1 > self.cache.capacity()
        {
            self.finish = Some(Finish::Length);
        }
        if self.finish.is_some() {
            return Ok(Step::Quiet); // the rest is passed on at the end
        }
        match emittable(&self.text, hold).filter(|&safe| safe > self.emitted) {
            Some(safe) => {
                let piece = self.text[self.emitted..safe].to_string();
                self.emitted = safe;
                Ok(Step::Piece(piece))
            }
            None => Ok(Step::Quiet),
        }
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
        let mut out = self.generate_many(
            std::slice::from_ref(prompt),
            std::slice::from_ref(params),
            gate,
            &mut |_, piece| on_text(piece),
        )?;
        Ok(out.remove(0))
    }

    fn generate_many(
        &self,
        prompts: &[ChatPrompt],
        params: &[SamplingParams],
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Vec<Generation>> {
        let encoded = prompts
            .iter()
            .map(|p| self.chat_prompt(p.system, p.examples, p.user))
            .collect::<Result<Vec<_>>>()?;
        let gate = match gate {
            Some(g) => Some(FirstTokenGate {
                tokens: self.marker_tokens(g.marker)?,
                threshold: g.threshold,
            }),
            None => None,
        };
        let params: Vec<SamplingParams> = params
            .iter()
            .map(|p| SamplingParams {
                gate: gate.clone().or_else(|| p.gate.clone()),
                ..p.clone()
            })
            .collect();
        let pairs: Vec<(&[u32], &[u32])> = encoded
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        self.generate_batch(&pairs, &params, on_text)
    }
}
