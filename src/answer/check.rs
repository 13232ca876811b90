//! The check stage: the grounding checks on what the model wrote, for the
//! passages as the model saw them. The rules (see the module doc of
//! [`super`]) live here rather than in the prompt alone, because a small
//! model follows instructions loosely.

use super::citations::{clean_citations, copied_prompt_cut, marker_suffix, strip_markers};
use super::options::AskOptions;
use super::rules::{asks_for, declines, squash, states, unsupported_specifics};
use super::support::{
    best_support, cited_support, embedding_support, TRANSLATED_OVERLAP, UNCITED_OVERLAP,
};
use super::translate::translate_answer;
use super::types::{Refusal, NOT_IN_KB};
use crate::engine::{Embedder, Generator};
use crate::text::Lang;

/// The models the checks may use: the embedder for meaning across
/// languages, the generator to translate an answer (both optional: without
/// them those checks find no support).
#[derive(Clone, Copy, Default)]
pub struct Models<'a> {
    /// Embeds answers and passage sentences.
    pub embedder: Option<&'a dyn Embedder>,
    /// Translates an answer into its passages' language.
    pub generator: Option<&'a dyn Generator>,
}

/// The model's text once it passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The answer, its `[n]` markers naming only passages that back it.
    pub text: String,
    /// The cited passages' numbers (1-based, as in the prompt).
    pub cited: Vec<usize>,
    /// The checks chose the citation: the model cited nothing, or passages
    /// that do not back the answer.
    pub inferred: bool,
    /// The model's own markers were replaced (so `text` differs from the
    /// text the model wrote, not only by `appended`).
    pub recited: bool,
    /// Passages the checks cited because they hold a number or name of the
    /// answer that the other cited passages lack.
    pub added: Vec<usize>,
    /// The markers the checks added at the end of the model's text, if any.
    pub appended: String,
}

/// Most passages cited for the numbers and names they hold (see [`Checked::added`]).
pub(super) const MAX_ADDED_CITATIONS: usize = 2;

/// The grounding checks on what the model wrote (`raw`, trimmed) for
/// `question` from the passages it was `shown` (as shown): the answer with checked
/// citations, or why it is refused (with the model's text, when it said
/// something other than the refusal).
///
/// With a generator, an answer in the other language than its passages
/// that neither their words nor their meaning back (e5's cross-language
/// similarity is weak) is translated into the other language and its words
/// checked again ([`TRANSLATED_OVERLAP`]).
pub fn check(
    raw: &str,
    question: &str,
    shown: &[&str],
    models: Models,
    opts: &AskOptions,
) -> Result<Checked, Refused> {
    let (text, cited) = read(raw, question, shown.len())?;
    let mut checked = cite_backing(text, cited, question, shown, models, opts)?;
    cite_specifics(&mut checked, shown)?;
    let markers: Vec<usize> = checked
        .inferred
        .then_some(checked.cited[0])
        .into_iter()
        .chain(checked.added.iter().copied())
        .collect();
    if !markers.is_empty() {
        checked.appended = marker_suffix(&checked.text, &markers);
        checked.text.push_str(&checked.appended);
    }
    Ok(checked)
}

/// Why an answer was refused, and what the model wrote when it said
/// something other than the refusal.
pub type Refused = (Refusal, Option<String>);

/// The answer's text and the passages it cites, once it is an answer at
/// all: not the marker or a refusal in words, not empty, and stating the
/// year or count its question asks for.
fn read(raw: &str, question: &str, passages: usize) -> Result<(String, Vec<usize>), Refused> {
    if raw.starts_with(NOT_IN_KB) {
        return Err((Refusal::ModelDeclined, None));
    }
    let (text, cited) = clean_citations(&copied_prompt_cut(raw).replace(NOT_IN_KB, ""), passages);
    let text = text.trim().to_string();
    // "The passages do not mention…" without a citation is a refusal in words.
    if cited.is_empty() && declines(&text) {
        return Err((Refusal::ModelDeclined, Some(text)));
    }
    if strip_markers(&text).trim().is_empty() {
        return Err((Refusal::Empty, None));
    }
    if let Some(wanted) = asks_for(question) {
        if !states(&strip_markers(&text), wanted) {
            return Err((Refusal::Unanswered, Some(text)));
        }
    }
    Ok((text, cited))
}

/// The answer citing passages that back it: its own citations when they
/// do, else the one passage that does (or it is refused as unsupported).
fn cite_backing(
    text: String,
    cited: Vec<usize>,
    question: &str,
    shown: &[&str],
    models: Models,
    opts: &AskOptions,
) -> Result<Checked, Refused> {
    // Cited: the cited passages must back what the answer adds to the
    // question ("OpenAI的创始人是李彦宏[1]" cites a passage about OpenAI
    // that never names a founder).
    let mut translated = Translated::new(models.generator, &text);
    let backed = !cited.is_empty() && {
        let texts: Vec<&str> = cited.iter().map(|&n| shown[n - 1]).collect();
        cited_support(
            &text,
            question,
            &texts,
            models.embedder,
            opts.cited_support_cosine,
        ) || translated.support(question, &[&texts.join("\n")]).is_some()
    };
    let mut checked = Checked {
        recited: !backed && !cited.is_empty(),
        text,
        cited,
        inferred: false,
        added: Vec::new(),
        appended: String::new(),
    };
    if backed {
        return Ok(checked);
    }
    // Uncited, or citing the wrong passage: accept only what one passage
    // visibly supports, and cite that one instead.
    let cosine = if checked.recited {
        opts.cited_support_cosine
    } else {
        opts.support_cosine
    };
    let found = best_support(&checked.text, question, shown, UNCITED_OVERLAP)
        .or_else(|| {
            // Across languages words cannot be matched; meaning can.
            embedding_support(&checked.text, shown, models.embedder)
                .filter(|&(_, cos)| cos >= cosine)
                .map(|(i, _)| i)
        })
        .or_else(|| translated.support(question, shown));
    let Some(i) = found else {
        return Err((Refusal::Unsupported, Some(checked.text)));
    };
    checked.inferred = true;
    checked.cited = vec![i + 1];
    if checked.recited {
        checked.text = strip_markers(&checked.text).trim_end().to_string();
    }
    Ok(checked)
}

/// Numbers and model names are where a small model invents facts ("GPT-4
/// has 1750亿 parameters" from a passage about GPT-3): every one in the
/// answer must appear in a cited passage (as shown to the model: glossary
/// lines and trimmed passages). An answer may take one from a passage it
/// did not cite ("…312 TFLOPS for the A100" from [1], "H100" from [2]):
/// that passage is cited too, at most [`MAX_ADDED_CITATIONS`] of them.
fn cite_specifics(checked: &mut Checked, shown: &[&str]) -> Result<(), Refused> {
    let mut cited_text = checked
        .cited
        .iter()
        .map(|&n| shown[n - 1])
        .collect::<Vec<_>>()
        .join("\n");
    let mut invented = unsupported_specifics(&checked.text, &cited_text);
    while !invented.is_empty() && checked.added.len() < MAX_ADDED_CITATIONS {
        let holds = |i: usize| {
            let hay = squash(shown[i]);
            invented.iter().filter(|t| hay.contains(t.as_str())).count()
        };
        let best = (0..shown.len())
            .filter(|i| !checked.cited.contains(&(i + 1)))
            .map(|i| (i, holds(i)))
            .filter(|&(_, n)| n > 0)
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((i, _)) = best else { break };
        checked.cited.push(i + 1);
        checked.added.push(i + 1);
        cited_text.push('\n');
        cited_text.push_str(shown[i]);
        invented = unsupported_specifics(&checked.text, &cited_text);
    }
    if !invented.is_empty() {
        tracing::debug!(?invented, "answer has specifics its passages lack");
        return Err((Refusal::Invented, Some(checked.text.clone())));
    }
    Ok(())
}

/// An answer's translation into the other language, made at most once and
/// only when a check needs it (it costs a generation).
struct Translated<'a> {
    generator: Option<&'a dyn Generator>,
    answer: String,
    text: Option<Option<String>>,
}

impl<'a> Translated<'a> {
    fn new(generator: Option<&'a dyn Generator>, answer: &str) -> Translated<'a> {
        Translated {
            generator,
            answer: strip_markers(answer).trim().to_string(),
            text: None,
        }
    }

    /// The passage that holds at least [`TRANSLATED_OVERLAP`] of what the
    /// translated answer adds to `question`, the best one; `None` without
    /// passages in the other language than the answer's, or when the
    /// answer is not in the question's language: the model was told to
    /// answer in it, and the eval's answers that ignored that and passed
    /// only in translation (2 of 2) were wrong.
    fn support(&mut self, question: &str, passages: &[&str]) -> Option<usize> {
        let from = Lang::detect(&self.answer);
        let to = from.other();
        if from != Lang::detect(question) || !passages.iter().any(|p| Lang::detect(p) == to) {
            return None;
        }
        let generator = self.generator?;
        let answer = &self.answer;
        let text = self.text.get_or_insert_with(|| {
            translate_answer(generator, answer, to).unwrap_or_else(|e| {
                tracing::warn!("could not translate an answer for the checks: {e}");
                None
            })
        });
        let text = text.as_deref()?;
        let best = best_support(text, question, passages, TRANSLATED_OVERLAP);
        tracing::debug!(translation = %text, ?best, "support of the translated answer");
        best
    }
}
