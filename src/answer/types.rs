//! What an answer is: the types every stage hands on and every front end
//! shows. Plain data with serde, so the CLI's `--json`, the HTTP API and
//! the eval reports are one shape.

use serde::{Deserialize, Serialize};

use crate::engine::Finish;
use crate::text::Lang;

/// What the model writes when the passages do not hold the answer.
pub const NOT_IN_KB: &str = "NOT_IN_KB";

/// The fixed "not in the knowledge base" answer, in `lang`: a refusal is
/// never the model's own wording.
pub fn refusal_text(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "知识库中没有这个问题的答案。",
        Lang::En => "The knowledge base does not contain the answer to this question.",
    }
}

/// A cited passage and the sentences of it that support the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The passage's number in the prompt (`[n]` in the answer).
    pub n: usize,
    /// The chunk's stable id.
    pub chunk_id: String,
    /// Source file, relative to the corpus.
    pub source: String,
    /// Heading path.
    pub section: String,
    /// The start of the passage.
    pub snippet: String,
    /// The passage as the model saw it.
    #[serde(default)]
    pub text: String,
    /// Its retrieval score.
    #[serde(default)]
    pub score: f32,
    /// Sentences of the passage, verbatim, that best support the answer.
    pub evidence: Vec<String>,
    /// Sentences of the passage, verbatim, that best answer the
    /// *question* (e5 and shared words), best first: a reader sees the
    /// fact even when the answer's phrasing is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_question: Vec<String>,
    /// True when the model did not cite it (or cited a passage that does
    /// not back the answer) and the support check found it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

/// A passage as given to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Its number in the prompt.
    pub n: usize,
    /// The chunk's stable id.
    pub chunk_id: String,
    /// Source file.
    pub source: String,
    /// Heading path.
    pub section: String,
    /// Retrieval score.
    pub score: f32,
}

/// Why an answer is not grounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Retrieval found nothing usable.
    NoPassages,
    /// The model said the passages do not hold the answer.
    ModelDeclined,
    /// The model answered without citing, and no passage contains most of
    /// what it said.
    Unsupported,
    /// The answer has numbers or model names that neither its cited
    /// passages nor (at most two) other shown passages hold.
    Invented,
    /// The answer was cut off before it said anything.
    Empty,
    /// The question asks for a year or a count and the answer states none
    /// (a passage about the topic, copied, is not an answer to "哪一年").
    Unanswered,
}

/// What became of a question.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A checked answer, asserted with its citations.
    Answered,
    /// The checks passed but the confidence is below the threshold: the
    /// answer is not asserted; the evidence sentence is quoted instead.
    NotSure,
    /// No answer: the knowledge base does not hold one, or the model's
    /// text failed the checks.
    #[default]
    Refused,
}

/// The signals an answer's confidence is computed from, recorded so the
/// weights can be fitted (`tests/eval/calibrate.py`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Mean natural-log probability of the tokens the model wrote.
    pub mean_logprob: Option<f32>,
    /// The least likely token's log-probability.
    pub min_logprob: Option<f32>,
    /// The model's probability of starting with `NOT_IN_KB`.
    pub refusal_score: Option<f32>,
    /// Share of what the answer adds to the question that its cited
    /// passages hold (words and Chinese bigrams).
    pub overlap: Option<f32>,
    /// The checks chose the citation (the model cited nothing, or a
    /// passage that does not back the answer).
    pub inferred: bool,
    /// The number of the first cited passage in the prompt (1 = the best
    /// ranked).
    pub first_cited: usize,
}

/// Time spent per stage, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Retrieval (including the query embedding).
    pub retrieve_ms: f64,
    /// Prompt processing.
    pub prefill_ms: f64,
    /// Token generation.
    pub decode_ms: f64,
    /// From the start of `ask` to the model's first answer text (not shown
    /// to anyone yet: text reaches a user only once checked, at `total_ms`).
    pub first_token_ms: Option<f64>,
    /// All of `ask`.
    pub total_ms: f64,
    /// Prompt tokens (as in `usage`, here with the times they took).
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Generated tokens.
    #[serde(default)]
    pub generated_tokens: usize,
    /// Prompt tokens processed per second (the cached prefix excluded).
    #[serde(default)]
    pub prefill_tok_per_s: f64,
    /// Tokens generated per second.
    #[serde(default)]
    pub decode_tok_per_s: f64,
}

/// Token counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, reused from the system-prompt cache.
    pub cached_prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
}

/// The result of `kbqa ask` (and the HTTP API's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question, trimmed.
    pub question: String,
    /// The answer text with `[n]` markers, or the refusal sentence. It can
    /// differ from the streamed text: a refusal replaces it, a citation of
    /// a passage that does not back the answer is replaced by one of the
    /// passage that does, and an answer in the other language than the
    /// question's is replaced by its checked translation.
    pub answer: String,
    /// Whether the answer is backed by cited passages and asserted (only
    /// when `status` is `answered`).
    pub grounded: bool,
    /// Answered, not sure (the evidence is quoted instead of an answer), or
    /// refused.
    #[serde(default)]
    pub status: Status,
    /// How likely the answer is right, in [0, 1]: the calibrated
    /// combination of [`Answer::signals`] (`answer.confidence`). Below the
    /// threshold kbqa does not assert the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// What the confidence was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Signals>,
    /// The question's (and answer's) language.
    pub language: Lang,
    /// Why it is not grounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// The passages behind the answer.
    pub citations: Vec<Citation>,
    /// Every passage the model was given.
    pub passages: Vec<Passage>,
    /// The model file's name.
    pub model: String,
    /// Why generation ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Token counts.
    pub usage: Usage,
    /// Stage timings.
    pub timings: Timings,
    /// The model's probability of answering `NOT_IN_KB` (the refusal score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_score: Option<f32>,
    /// When an answer was refused after generation: what the model wrote,
    /// for inspection (never shown as the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_text: Option<String>,
    /// When the model answered in the other language than the question's:
    /// its checked answer as written, of which `answer` is the translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// With several readings: each one, in order, for inspection (the
    /// answer is the chosen one's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readings: Vec<Reading>,
}

/// The order a reading shows the passages in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Retrieval's, best first.
    Given,
    /// Best last.
    Reversed,
    /// The second best first, the best last.
    Rotated,
    /// Retrieval's order, the reply sampled rather than greedy (the
    /// `samples` reading style).
    Sampled,
}

/// One reading of a question, as the answer reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// How it showed the passages.
    pub order: Order,
    /// It passed the checks.
    pub passed: bool,
    /// Its confidence, if it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// What its confidence was computed from, if it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Signals>,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// Its checked text, or what the model wrote when refused (never shown
    /// as the answer unless chosen and checked).
    pub text: String,
}

/// Where an answer is, for a caller that shows it while it works. It
/// carries no answer text, by design: what the model writes reaches a
/// user only once it is checked, as the [`Answer`]. A caller that showed
/// text as it came would show claims the checks then withdraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Progress {
    /// Searching the knowledge base (with the question's translation too,
    /// when it needs one).
    Retrieving,
    /// The model is writing.
    Writing {
        /// Pieces of text written so far: about one per token (a
        /// character split over two tokens comes as one piece).
        tokens: usize,
    },
    /// A model server is silent (it may be reading a long prompt). Sent
    /// now and then so a caller can cancel meanwhile.
    Waiting,
    /// The checks, citations and language stages.
    Checking,
}

impl std::fmt::Display for Progress {
    /// A short line for a person watching: "retrieving", "writing, 16
    /// tokens", "waiting for the model", "checking".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Retrieving => f.write_str("retrieving"),
            Progress::Writing { tokens } => write!(f, "writing, {tokens} tokens"),
            Progress::Waiting => f.write_str("waiting for the model"),
            Progress::Checking => f.write_str("checking"),
        }
    }
}
