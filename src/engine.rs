//! The two things kbqa asks of a model, as traits: embed text
//! ([`Embedder`]) and write a chat reply ([`Generator`]).
//!
//! Indexing, retrieval and answering are written against these traits
//! only, so they cannot tell an in-process model (`crate::models`, the only
//! code that knows candle) from a model server (`crate::remote`, the
//! OpenAI protocol). Both implement them; `crate::backend` picks one from
//! the config.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, Result};

/// Something that embeds queries and passages into unit vectors.
pub trait Embedder: Send + Sync {
    /// Output dimension.
    fn dim(&self) -> usize;
    /// The vector of a search query.
    fn embed_query(&self, query: &str) -> Result<Vec<f32>>;
    /// The vectors of passages, row-major (`texts.len() * dim()` floats);
    /// `progress(done)` is called as passages are finished.
    fn embed_passages(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Vec<f32>>;
}

/// An embedder that remembers recent vectors. One question is embedded
/// for the search and again to choose the sentences the model is shown
/// (and a client may ask the same question twice): its last [`Self::KEEP`]
/// queries are computed once. Choosing sentences also embeds every
/// sentence of the passages found, and a server's questions keep finding
/// the same passages: up to [`Self::KEEP_PASSAGES`] passage texts are
/// remembered too, so a warm `kbqa serve` embeds only sentences it has not
/// met. An embedding depends on its text alone, so a remembered vector is
/// the one that would be computed.
pub struct RecentVectors {
    inner: Arc<dyn Embedder>,
    recent: Mutex<VecDeque<(String, Vec<f32>)>>,
    passages: Mutex<Passages>,
}

/// Passage vectors by text, the oldest forgotten first.
#[derive(Default)]
struct Passages {
    vectors: HashMap<String, Arc<[f32]>>,
    order: VecDeque<String>,
}

impl RecentVectors {
    /// How many queries are remembered: a question, its translation and a
    /// few concurrent requests' questions.
    pub const KEEP: usize = 8;
    /// How many passage texts are remembered: the sentences of a few
    /// hundred passages (about 1.6 KB each, for 384 dimensions).
    pub const KEEP_PASSAGES: usize = 8192;
    /// Calls with more passages than this are not remembered: they are an
    /// index build's chunks, not the sentences of a question's passages.
    pub const REMEMBER_UP_TO: usize = 512;

    /// `inner`, remembering its vectors.
    pub fn new(inner: Arc<dyn Embedder>) -> RecentVectors {
        RecentVectors {
            inner,
            recent: Mutex::new(VecDeque::with_capacity(Self::KEEP)),
            passages: Mutex::new(Passages::default()),
        }
    }
}

impl Embedder for RecentVectors {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        let known = |r: &VecDeque<(String, Vec<f32>)>| {
            r.iter().find(|(q, _)| q == query).map(|(_, v)| v.clone())
        };
        if let Some(v) = known(&self.recent.lock().unwrap_or_else(|e| e.into_inner())) {
            tracing::debug!("query vector remembered, not computed again");
            return Ok(v);
        }
        // Computed outside the lock: other queries need not wait for it.
        let v = self.inner.embed_query(query)?;
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if known(&r).is_none() {
            if r.len() == Self::KEEP {
                r.pop_front();
            }
            r.push_back((query.to_string(), v.clone()));
        }
        Ok(v)
    }

    fn embed_passages(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Vec<f32>> {
        if texts.len() > Self::REMEMBER_UP_TO {
            // An index build's chunks: not asked for again.
            return self.inner.embed_passages(texts, progress);
        }
        let known: Vec<Option<Arc<[f32]>>> = {
            let p = self.passages.lock().unwrap_or_else(|e| e.into_inner());
            texts.iter().map(|t| p.vectors.get(*t).cloned()).collect()
        };
        let missing: Vec<&str> = texts
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(t, _)| *t)
            .collect();
        let remembered = texts.len() - missing.len();
        tracing::debug!(remembered, computed = missing.len(), "passage vectors");
        // Computed outside the lock, as queries are.
        let fresh = if missing.is_empty() {
            progress(texts.len());
            Vec::new()
        } else {
            self.inner
                .embed_passages(&missing, &mut |done| progress(remembered + done))?
        };
        let dim = self.dim();
        let out = fill_in(&known, |k| k.as_deref(), &fresh, dim)?;
        let mut p = self.passages.lock().unwrap_or_else(|e| e.into_inner());
        for (text, v) in missing.iter().zip(fresh.chunks_exact(dim)) {
            p.remember(text, v.into());
        }
        Ok(out)
    }
}

/// The vectors of `items` in order: `known(item)` where it has one, else
/// the next row of `fresh` (the others' vectors, computed in order).
pub fn fill_in<'a, T>(
    items: &'a [T],
    known: impl Fn(&'a T) -> Option<&'a [f32]>,
    fresh: &[f32],
    dim: usize,
) -> Result<Vec<f32>> {
    let mut rows = fresh.chunks_exact(dim);
    let mut out = Vec::with_capacity(items.len() * dim);
    for item in items {
        let v = match known(item) {
            Some(v) => v,
            None => rows
                .next()
                .ok_or_else(|| Error::Model("the embedder returned too few vectors".into()))?,
        };
        out.extend_from_slice(v);
    }
    Ok(out)
}

impl Passages {
    fn remember(&mut self, text: &str, v: Arc<[f32]>) {
        if self.vectors.insert(text.to_string(), v).is_some() {
            return;
        }
        self.order.push_back(text.to_string());
        if self.order.len() > RecentVectors::KEEP_PASSAGES {
            if let Some(old) = self.order.pop_front() {
                self.vectors.remove(&old);
            }
        }
    }
}

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
    /// The natural log of the probability the model gave each token it
    /// wrote, in order (empty when the engine does not report them): how
    /// sure the model was of its own text, a confidence signal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_logprobs: Vec<f32>,
}

impl Generation {
    /// The mean of [`Generation::token_logprobs`], if any were reported.
    pub fn mean_logprob(&self) -> Option<f32> {
        let n = self.token_logprobs.len();
        (n > 0).then(|| self.token_logprobs.iter().sum::<f32>() / n as f32)
    }
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
/// (`crate::answer`) are built on this, so the prompt, citation and
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

    /// Writes a reply to each of several prompts (several readings of one
    /// question), prompt `i` sampled with `params[i]`, calling
    /// `on_text(i, piece)` for its text. The in-process model prefills
    /// equal prompts once and decodes all as one batch, each weight read
    /// once per step for all of them; this default writes them one after
    /// another (a model server batches concurrent requests itself).
    fn generate_many(
        &self,
        prompts: &[ChatPrompt],
        params: &[SamplingParams],
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Vec<Generation>> {
        prompts
            .iter()
            .zip(params)
            .enumerate()
            .map(|(i, (p, s))| self.generate(p, s, gate, &mut |t| on_text(i, t)))
            .collect()
    }
}

/// How often a waiting generator checks whether its caller cancelled.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the queries and the passages it really embeds.
    struct Counting(AtomicUsize, AtomicUsize);

    impl Embedder for Counting {
        fn dim(&self) -> usize {
            1
        }
        fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(vec![query.len() as f32])
        }
        fn embed_passages(&self, texts: &[&str], _: &mut dyn FnMut(usize)) -> Result<Vec<f32>> {
            self.1.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts.iter().map(|t| t.len() as f32).collect())
        }
    }

    #[test]
    fn a_recent_query_is_embedded_once_and_old_ones_are_forgotten() {
        let inner = Arc::new(Counting(AtomicUsize::new(0), AtomicUsize::new(0)));
        let e = RecentVectors::new(inner.clone());
        let calls = || inner.0.load(Ordering::SeqCst);
        assert_eq!(e.embed_query("什么是RLHF？").unwrap(), vec![16.0]);
        assert_eq!(e.embed_query("什么是RLHF？").unwrap(), vec![16.0]);
        assert_eq!(calls(), 1);
        for i in 0..RecentVectors::KEEP {
            e.embed_query(&format!("q{i}")).unwrap();
        }
        assert_eq!(calls(), 1 + RecentVectors::KEEP);
        e.embed_query("什么是RLHF？").unwrap();
        assert_eq!(
            calls(),
            2 + RecentVectors::KEEP,
            "forgotten after KEEP others"
        );
        e.embed_passages(&["a", "a"], &mut |_| {}).unwrap();
        assert_eq!(calls(), 2 + RecentVectors::KEEP, "passages are not queries");
    }

    #[test]
    fn passages_met_before_are_not_embedded_again_and_keep_their_order() {
        let inner = Arc::new(Counting(AtomicUsize::new(0), AtomicUsize::new(0)));
        let e = RecentVectors::new(inner.clone());
        let passages = || inner.1.load(Ordering::SeqCst);
        assert_eq!(
            e.embed_passages(&["ab", "abc"], &mut |_| {}).unwrap(),
            vec![2.0, 3.0]
        );
        assert_eq!(passages(), 2);
        // One new text among known ones: only it is computed, and every
        // vector is in its text's place.
        assert_eq!(
            e.embed_passages(&["abc", "a", "ab"], &mut |_| {}).unwrap(),
            vec![3.0, 1.0, 2.0]
        );
        assert_eq!(passages(), 3);
        for i in 0..RecentVectors::KEEP_PASSAGES {
            e.embed_passages(&[&format!("p{i}")], &mut |_| {}).unwrap();
        }
        let before = passages();
        e.embed_passages(&["ab"], &mut |_| {}).unwrap();
        assert_eq!(
            passages(),
            before + 1,
            "forgotten after KEEP_PASSAGES others"
        );
    }
}
