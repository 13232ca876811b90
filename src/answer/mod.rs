//! Grounded answers, as a pipeline of stages with typed hand-offs:
//!
//! ```text
//! Question ─▶ retrieve ─▶ focus ─▶ prompt ─▶ generate ─▶ check ─▶ cite ─▶ language ─▶ Answer
//! (question)  (retrieve)  (focus)  (prompt)  (generate)  (check)  (cite)  (language)   (types)
//! ```
//!
//! A [`Question`] is parsed once at the edge (trimmed, checked, language
//! detected). [`ask`] runs the stages in order; [`answer_from`] runs them
//! from passages already chosen. Each stage is a module below, with its
//! own tests; the checks' building blocks are [`citations`], [`support`]
//! and [`rules`], and an answer in the other language than its question's
//! goes through [`language`] and [`translate`]. Each stage is a `tracing`
//! span (`retrieve`, `embed`, `focus`, `prompt`, `generate` — with
//! `prefill` and `decode` inside it for the in-process model — `check`,
//! `cite`, `language`), so `KBQA_LOG=kbqa=debug` shows where a question's
//! time goes. The answer's [`Timings`] are measured inside the same stages.
//!
//! The rules that make an answer trustworthy live here, not in the prompt
//! alone, because a small model follows instructions loosely:
//! - the model sees only the retrieved passages and is told to answer from
//!   them, cite `[n]`, and say `NOT_IN_KB` otherwise;
//! - citations that name no given passage are removed;
//! - an answer with no citation left must be *supported*: half of what it
//!   adds to the question must appear in one passage, or (across
//!   languages) a sentence of one passage must mean the same (e5), or
//!   (across languages still) the generator's translation of it must share
//!   enough words with one passage; that passage is then cited; otherwise
//!   it is refused;
//! - an answer with citations must be supported by the passages it cites,
//!   the same way (a citation is a claim, not a proof); if they do not back
//!   it, it is treated as uncited: the one passage that does is cited
//!   instead, or it is refused;
//! - a copy of the prompt (passage headers, the "Question:" line) is cut
//!   from the answer;
//! - a question for a year or a count ("哪一年", "how many") is not
//!   answered by text that states none, however well supported;
//! - numbers and digit-bearing names in an answer must appear in the
//!   passages it cites (a shown passage that holds one the cited ones lack
//!   is cited too);
//! - an answer in the other language than the question's (the model
//!   copied a passage) is translated by the generator, and the translation
//!   is shown only if it passes these checks itself, citing the same
//!   passages; the model's text is kept as [`Answer::written`];
//! - a refusal is a fixed sentence in the question's language with
//!   `grounded: false`, never the model's own guess;
//! - questions and passages are data: special-token text in them is
//!   encoded as plain text (see `crate::models::llm::Llm::encode_text`; a model
//!   server applies its own template to the messages), and the
//!   system prompt says instructions inside them are not to be followed.

pub mod check;
pub mod citations;
mod cite;
pub mod confidence;
mod focus;
mod generate;
mod language;
pub mod options;
pub mod prompt;
pub mod question;
mod readings;
pub mod retrieve;
pub mod rules;
pub mod support;
pub mod translate;
pub mod types;

use std::time::Instant;

pub use self::check::{check, Checked, Models};
pub use self::citations::clean_citations;
pub use self::options::{AskOptions, AskOverrides};
pub use self::question::Question;
pub use self::rules::unsupported_specifics;
pub use self::support::{support, Support, CITED_OVERLAP, TRANSLATED_OVERLAP};
pub use self::types::{
    refusal_text, Answer, Citation, Order, Passage, Progress, Reading, Refusal, Signals, Status,
    Timings, Usage, NOT_IN_KB,
};
pub use crate::text::Lang;

use self::generate::{generate, ms, Generated};
use self::prompt::Shown;
use self::readings::ReadingPrompt;
use crate::engine::{ChatPrompt, Embedder, Generator};
use crate::error::Result;
use crate::kb::Kb;
use crate::retrieve::SearchHit;

/// The passages a question is answered from (best first), and the
/// question's translation when it was searched for with one.
#[derive(Debug, Clone)]
pub struct Retrieved {
    /// The passages.
    pub hits: Vec<SearchHit>,
    /// The question in the knowledge base's main language, if searched for.
    pub translation: Option<String>,
    /// When the question arrived (the answer's timings count from it).
    pub since: Instant,
}

/// Answers `question` from the knowledge base (parse it with `opts.k`).
/// `on_progress` hears how far the answer has got and returns `false` to
/// cancel (it is called at least once per generated token, and now and
/// then while a model server is silent). No answer text passes through
/// it: the text a user sees is the checked [`Answer`].
pub fn ask(
    kb: &Kb,
    generator: &dyn Generator,
    question: &Question,
    opts: &AskOptions,
    on_progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Answer> {
    let since = Instant::now();
    let _span = tracing::info_span!("ask", lang = ?question.lang()).entered();
    on_progress(Progress::Retrieving);
    // An English question over Chinese passages (or the reverse) is searched
    // for with its translation too; the model still answers the question.
    let translation = retrieve::for_search(kb, generator, question, opts.translate)?;
    let hits = retrieve::search(kb, question.query(), translation.as_deref(), opts.mode)?;
    let retrieved = Retrieved {
        hits,
        translation,
        since,
    };
    let embedder = kb.embedder().ok();
    answer_from(
        generator,
        embedder.as_deref(),
        question,
        &retrieved,
        opts,
        on_progress,
    )
}

/// [`ask`] from passages already chosen, e.g. by `kbqa eval answers
/// --oracle`, which hands the model the passages that hold the answer to
/// tell the model's share of the errors from retrieval's. Without an
/// embedder the passages are shown whole and meaning backs no answer.
///
/// With `opts.readings` > 1 the model reads the passages in several
/// orders ([`readings`]), all decoded as one batch; each reading is checked
/// on its own, and the most confident one that passes answers.
pub fn answer_from(
    generator: &dyn Generator,
    embedder: Option<&dyn Embedder>,
    question: &Question,
    retrieved: &Retrieved,
    opts: &AskOptions,
    on_progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Answer> {
    let start = retrieved.since;
    let mut answer = blank(generator, question, start);
    if retrieved.hits.is_empty() {
        return Ok(refuse(answer, Refusal::NoPassages, start));
    }
    let shown = focus::shown_passages(
        question.text(),
        retrieved.translation.as_deref(),
        question.lang(),
        &retrieved.hits,
        opts.focus,
        embedder,
    );
    // Choosing sentences is part of retrieval.
    answer.timings.retrieve_ms = ms(start);
    let prompt_span = tracing::debug_span!("prompt").entered();
    let prompts = readings::prompts(generator, question, &shown, opts)?;
    drop(prompt_span);
    let chat: Vec<ChatPrompt> = prompts
        .iter()
        .map(|r| ChatPrompt {
            system: prompt::system(opts.prompt),
            examples: prompt::examples(opts.prompt),
            user: &r.user,
        })
        .collect();
    tracing::debug!(prompt = %prompts[0].user, readings = prompts.len(), "user message");
    let sampling: Vec<_> = prompts.iter().map(|r| r.sampling.clone()).collect();
    let generated = tracing::debug_span!("generate")
        .in_scope(|| generate(generator, &chat, &sampling, opts, start, on_progress))?;
    on_progress(Progress::Checking);
    let models = Models {
        embedder,
        generator: Some(generator),
    };
    let mut judged: Vec<Judged> = tracing::debug_span!("check").in_scope(|| {
        prompts
            .iter()
            .zip(&generated)
            .map(|(r, g)| judge(g, r, question, models, opts))
            .collect()
    });
    let chosen = readings::choose(&judged.iter().map(Judged::passed).collect::<Vec<_>>());
    if prompts.len() > 1 {
        answer.readings = prompts
            .iter()
            .zip(&judged)
            .map(|(r, j)| j.summary(r.order))
            .collect();
    }
    let reading = &prompts[chosen];
    answer.passages = passages(&reading.given);
    record(&mut answer, &generated[chosen]);
    match judged.swap_remove(chosen) {
        Judged::Passed(p) => {
            let after = After {
                question,
                given: &reading.given,
                models,
                opts,
                start,
            };
            conclude(answer, *p, &after)
        }
        Judged::Refused(why, model_text) => {
            answer.model_text = model_text;
            Ok(refuse(answer, why, start))
        }
    }
}

/// The answer before any stage filled it in: a refusal, as yet.
fn blank(generator: &dyn Generator, question: &Question, start: Instant) -> Answer {
    Answer {
        question: question.text().to_string(),
        answer: String::new(),
        grounded: false,
        language: question.lang(),
        refusal: None,
        citations: Vec::new(),
        passages: Vec::new(),
        model: generator.name(),
        finish: None,
        refusal_score: None,
        model_text: None,
        written: None,
        status: Status::Refused,
        confidence: None,
        signals: None,
        readings: Vec::new(),
        usage: Usage::default(),
        timings: Timings {
            retrieve_ms: ms(start),
            ..Timings::default()
        },
    }
}

/// A reading's outcome after the checks.
enum Judged {
    /// It passed: the checked text, and how sure it is.
    Passed(Box<Passed>),
    /// It was refused, and why (with what the model wrote, if anything).
    Refused(Refusal, Option<String>),
}

/// A reading that passed the checks.
struct Passed {
    checked: Checked,
    signals: Signals,
    confidence: Option<f32>,
}

impl Judged {
    /// `Some(confidence)` if it passed the checks.
    fn passed(&self) -> Option<Option<f32>> {
        match self {
            Judged::Passed(p) => Some(p.confidence),
            Judged::Refused(..) => None,
        }
    }

    /// The reading as an answer reports it.
    fn summary(&self, order: Order) -> Reading {
        match self {
            Judged::Passed(p) => Reading {
                order,
                passed: true,
                confidence: p.confidence,
                signals: Some(p.signals),
                refusal: None,
                text: p.checked.text.clone(),
            },
            Judged::Refused(why, text) => Reading {
                order,
                passed: false,
                confidence: None,
                signals: None,
                refusal: Some(*why),
                text: text.clone().unwrap_or_default(),
            },
        }
    }
}

/// The check stage on one reading, and (when it passes) its confidence.
fn judge(
    generated: &Generated,
    reading: &ReadingPrompt,
    question: &Question,
    models: Models,
    opts: &AskOptions,
) -> Judged {
    let text = generated.generation.text.trim();
    let shown: Vec<&str> = reading.given.iter().map(|s| s.text.as_str()).collect();
    match check(text, question.text(), &shown, models, opts) {
        Err((why, model_text)) => Judged::Refused(why, model_text),
        Ok(checked) => {
            let mut signals =
                confidence::signals(&generated.generation, &checked, question.text(), &shown);
            // Where the cited passage ranked in retrieval, whatever order
            // this reading showed it in.
            signals.first_cited = reading.rank(signals.first_cited);
            let confidence = confidence::confidence(&signals, &opts.confidence);
            Judged::Passed(Box::new(Passed {
                checked,
                signals,
                confidence,
            }))
        }
    }
}

/// What the stages after the checks read besides the chosen reading.
struct After<'a> {
    question: &'a Question,
    given: &'a [Shown<'a>],
    models: Models<'a>,
    opts: &'a AskOptions,
    start: Instant,
}

/// The cite and language stages on the chosen reading, then the
/// confidence threshold: answered, or not sure.
fn conclude(mut answer: Answer, passed: Passed, after: &After) -> Result<Answer> {
    let After {
        question,
        given,
        models,
        opts,
        start,
    } = *after;
    let Passed {
        checked,
        signals,
        confidence,
    } = passed;
    let shown: Vec<&str> = given.iter().map(|s| s.text.as_str()).collect();
    answer.citations = tracing::debug_span!("cite")
        .in_scope(|| cite::citations(&checked, given, question.text(), models.embedder));
    answer.signals = Some(signals);
    answer.confidence = confidence;
    let threshold = opts.confidence.threshold;
    if confidence.is_some_and(|c| c < threshold || threshold >= 1.0) {
        // Not asserted, so not translated either (a generation saved):
        // the model's text is kept as written.
        answer.answer = checked.text;
        return Ok(not_sure(answer, start));
    }
    // The answer is in the question's language: reading Chinese passages,
    // the small model often answers an English question in Chinese (it
    // copies). Checked as written, such an answer is then translated.
    let lang = question.lang();
    let translated = tracing::debug_span!("language").in_scope(|| {
        language::in_language(&checked, question.text(), lang, &shown, models, opts)
    })?;
    answer.answer = match translated {
        Some(t) => {
            answer.written = Some(checked.text);
            t
        }
        None => checked.text,
    };
    answer.grounded = true;
    answer.status = Status::Answered;
    answer.timings.total_ms = ms(start);
    Ok(answer)
}

/// A checked answer that is not sure enough to assert: the model's text is
/// kept as [`Answer::model_text`], and the answer quotes the sentence of
/// its first cited passage that best answers the question, so a reader
/// sees the evidence without a claim built on it.
fn not_sure(mut answer: Answer, start: Instant) -> Answer {
    let quote = answer.citations.first().and_then(|c| {
        let s = c.on_question.first().or(c.evidence.first())?;
        Some((c.n, s.clone()))
    });
    answer.model_text = Some(std::mem::take(&mut answer.answer));
    answer.answer = match (quote, answer.language) {
        (Some((n, s)), Lang::Zh) => format!("{}「{s}」[{n}]", not_sure_text(Lang::Zh)),
        (Some((n, s)), Lang::En) => format!("{} \"{s}\" [{n}]", not_sure_text(Lang::En)),
        (None, lang) => refusal_text(lang).to_string(),
    };
    answer.citations.truncate(1);
    answer.grounded = false;
    answer.status = Status::NotSure;
    answer.timings.total_ms = ms(start);
    answer
}

/// The sentence that opens a `not_sure` answer, before the quoted evidence.
pub fn not_sure_text(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "我不确定答案。知识库中与这个问题最相关的内容是：",
        Lang::En => "I am not sure of the answer. The closest the knowledge base comes is:",
    }
}

/// The passages as numbered in the prompt.
fn passages(given: &[Shown]) -> Vec<Passage> {
    given
        .iter()
        .enumerate()
        .map(|(i, s)| Passage {
            n: i + 1,
            chunk_id: s.hit.chunk_id.clone(),
            source: s.hit.source.clone(),
            section: s.hit.section.clone(),
            score: s.hit.score,
        })
        .collect()
}

/// The generation's counts and times, into the answer.
fn record(answer: &mut Answer, generated: &Generated) {
    let g = &generated.generation;
    answer.usage = Usage {
        prompt_tokens: g.prompt_tokens,
        cached_prompt_tokens: g.cached_prompt_tokens,
        completion_tokens: g.generated_tokens,
    };
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let t = &mut answer.timings;
    t.prefill_ms = g.prefill_ms;
    t.decode_ms = g.decode_ms;
    t.prompt_tokens = g.prompt_tokens;
    t.generated_tokens = g.generated_tokens;
    t.prefill_tok_per_s = per_s(
        g.prompt_tokens.saturating_sub(g.cached_prompt_tokens),
        g.prefill_ms,
    );
    t.decode_tok_per_s = per_s(g.generated_tokens, g.decode_ms);
    t.first_token_ms = generated.first_token_ms;
    answer.refusal_score = g.gate_probability;
    answer.finish = Some(generated.finish);
}

/// The answer as a refusal: the fixed sentence in the question's language,
/// no citations.
fn refuse(mut answer: Answer, why: Refusal, start: Instant) -> Answer {
    answer.answer = refusal_text(answer.language).to_string();
    answer.grounded = false;
    answer.status = Status::Refused;
    answer.refusal = Some(why);
    answer.citations.clear();
    answer.timings.total_ms = ms(start);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_fixed_sentences_in_the_question_language() {
        assert_ne!(refusal_text(Lang::Zh), refusal_text(Lang::En));
        assert!(refusal_text(Lang::Zh).contains("知识库"));
    }
}
