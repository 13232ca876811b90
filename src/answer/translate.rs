//! Translation by the generator: questions asked in the other language
//! than the knowledge base's, before retrieval ([`translate`], used by
//! [`super::retrieve`]); answers written in the other language than their
//! passages, for the grounding checks, and answers written in the other
//! language than their question, to show them in the question's
//! ([`translate_answer`]). The translating model sees only the text.
//!
//! The shipped knowledge base is mostly Chinese. An English question
//! shares no words with a Chinese passage, so BM25 cannot help, and e5's
//! cross-language similarity ranks the right passage first for only half
//! of the English eval questions (0.52, against 0.90 for Chinese ones).
//! Searching with the question *and* its translation puts both retrievers
//! back on their home ground; the model still answers the question as
//! asked, in its own language. The translation is a hint for retrieval,
//! never shown as a fact: a bad one costs recall, not honesty. An answer's
//! translation for the checks is only compared with the passages; the
//! model translating it does not see them, so the words compared are the
//! answer's, not borrowed from the passages. One into the question's
//! language is shown only once it passed the same checks itself.
//!
//! Translating questions is off by default (`answer.translate`): it lifts
//! English recall@1 from 0.522 to 0.657, but the 0.5B default model answers
//! English questions best from the English glossary definitions, which
//! lose places to Chinese sentences once the translation is searched for,
//! and its English answers did not improve (BENCHMARKS.md). A stronger
//! generator may differ.

use std::sync::LazyLock;

use crate::engine::{ChatPrompt, Finish, Generator, SamplingParams};
use crate::error::Result;
use crate::text::Lang;

/// A prompt file's text (files end in a newline; prompts do not).
fn prompt(file: &'static str) -> &'static str {
    file.trim_end_matches('\n')
}

const QUESTION_TO_ZH: &str = include_str!("../../prompts/translate/question-to-zh.system.txt");
const QUESTION_TO_EN: &str = include_str!("../../prompts/translate/question-to-en.system.txt");
const ANSWER_TO_ZH: &str = include_str!("../../prompts/translate/answer-to-zh.system.txt");
const ANSWER_TO_EN: &str = include_str!("../../prompts/translate/answer-to-en.system.txt");

/// Worked examples, in both languages: the model copies their form (a
/// translation, not an answer). Their topics are not in the shipped
/// knowledge base, so their words cannot leak into a translation as search
/// terms that match.
const QUESTIONS: [(&str, &str); 2] = [
    (
        include_str!("../../prompts/translate/example-question-1.en.txt"),
        include_str!("../../prompts/translate/example-question-1.zh.txt"),
    ),
    (
        include_str!("../../prompts/translate/example-question-2.en.txt"),
        include_str!("../../prompts/translate/example-question-2.zh.txt"),
    ),
];

/// A worked example for statements (an answer to be checked), on a topic
/// outside the shipped knowledge base for the same reason.
const ANSWERS: [(&str, &str); 1] = [(
    include_str!("../../prompts/translate/example-answer-1.en.txt"),
    include_str!("../../prompts/translate/example-answer-1.zh.txt"),
)];

type Examples = Vec<(&'static str, &'static str)>;

/// `(from, to)` pairs of `pairs` (given as `(en, zh)`), into `to`.
fn examples(pairs: &[(&'static str, &'static str)], to: Lang) -> Examples {
    pairs
        .iter()
        .map(|&(en, zh)| match to {
            Lang::Zh => (prompt(en), prompt(zh)),
            Lang::En => (prompt(zh), prompt(en)),
        })
        .collect()
}

static QUESTION_EXAMPLES_TO_ZH: LazyLock<Examples> =
    LazyLock::new(|| examples(&QUESTIONS, Lang::Zh));
static QUESTION_EXAMPLES_TO_EN: LazyLock<Examples> =
    LazyLock::new(|| examples(&QUESTIONS, Lang::En));
static ANSWER_EXAMPLES_TO_ZH: LazyLock<Examples> = LazyLock::new(|| examples(&ANSWERS, Lang::Zh));
static ANSWER_EXAMPLES_TO_EN: LazyLock<Examples> = LazyLock::new(|| examples(&ANSWERS, Lang::En));

/// The question in `to`, by `generator` (greedy, one line); `None` when
/// what it wrote is not a question in `to` (a small model sometimes
/// answers instead, in the question's language), or is far longer than
/// the question.
pub fn translate(generator: &dyn Generator, question: &str, to: Lang) -> Result<Option<String>> {
    let (system, examples) = match to {
        Lang::Zh => (prompt(QUESTION_TO_ZH), &*QUESTION_EXAMPLES_TO_ZH),
        Lang::En => (prompt(QUESTION_TO_EN), &*QUESTION_EXAMPLES_TO_EN),
    };
    one_line(generator, system, examples, question, to, MAX_TOKENS)
}

/// An answer in `to`, by `generator`, so that it can be checked word by
/// word against passages written in `to` ([`super::check`]);
/// `None` when the model did not translate it (or not in one line).
pub fn translate_answer(
    generator: &dyn Generator,
    answer: &str,
    to: Lang,
) -> Result<Option<String>> {
    let (system, examples) = match to {
        Lang::Zh => (prompt(ANSWER_TO_ZH), &*ANSWER_EXAMPLES_TO_ZH),
        Lang::En => (prompt(ANSWER_TO_EN), &*ANSWER_EXAMPLES_TO_EN),
    };
    one_line(generator, system, examples, answer, to, MAX_ANSWER_TOKENS)
}

/// `text` translated by one greedy line of `generator`'s; `None` when the
/// line is cut off, not in `to`, or far longer than `text`.
fn one_line(
    generator: &dyn Generator,
    system: &str,
    examples: &[(&str, &str)],
    text: &str,
    to: Lang,
    max_new_tokens: usize,
) -> Result<Option<String>> {
    let prompt = ChatPrompt {
        system,
        examples,
        user: text,
    };
    let params = SamplingParams {
        max_new_tokens,
        stop: vec!["\n".into()],
        ..SamplingParams::default()
    };
    let out = generator.generate(&prompt, &params, None, &mut |_| true)?;
    let line = out.text.trim();
    let ok = !line.is_empty()
        && out.finish != Finish::Length
        && Lang::detect(line) == to
        && line.chars().count() <= 3 * text.chars().count() + 16;
    tracing::debug!(from = %text, translation = %line, ok, "translated");
    Ok(ok.then(|| line.to_string()))
}

/// Most tokens of a translation; a question longer than that is not
/// translated in full, and the cut-off translation is not used.
const MAX_TOKENS: usize = 96;

/// The same for an answer (answers run to 1-3 sentences; a longer one is
/// not checked this way).
const MAX_ANSWER_TOKENS: usize = 192;
