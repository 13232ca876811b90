//! Questions asked in the other language than the knowledge base's: the
//! generator translates them before retrieval. It also translates answers
//! written in the other language than their passages, for the grounding
//! checks, and answers written in the other language than their question,
//! to show them in the question's ([`translate_answer`]).
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

use crate::answer::Lang;
use crate::error::Result;
use crate::kb::Kb;
use crate::llm::{ChatPrompt, Generator, SamplingParams};
use crate::retrieve::{check_query, SearchHit, SearchMode};

/// The language most of the knowledge base's passages are written in
/// (glossary entries hold both, and count for the one they have more of).
pub fn main_language(kb: &Kb) -> Lang {
    let chunks = &kb.generation().chunks;
    let zh = chunks
        .iter()
        .filter(|c| Lang::detect(&c.text) == Lang::Zh)
        .count();
    if zh * 2 >= chunks.len() && zh > 0 {
        Lang::Zh
    } else {
        Lang::En
    }
}

const SYSTEM_TO_ZH: &str = "Translate the user's question into Chinese. Reply with the translation only. Do not answer it.";
const SYSTEM_TO_EN: &str = "Translate the user's question into English. Reply with the translation only. Do not answer it.";

/// Worked examples: the model copies their form (a translation, not an
/// answer). Their topics are not in the shipped knowledge base, so their
/// words cannot leak into a translation as search terms that match.
const EXAMPLES_TO_ZH: &[(&str, &str)] = &[
    (
        "What does the author say about green tea?",
        "作者对绿茶有什么看法？",
    ),
    (
        "How long is the Great Wall, and when was it built?",
        "长城有多长？是什么时候修建的？",
    ),
];
const EXAMPLES_TO_EN: &[(&str, &str)] = &[
    (
        "作者对绿茶有什么看法？",
        "What does the author say about green tea?",
    ),
    (
        "长城有多长？是什么时候修建的？",
        "How long is the Great Wall, and when was it built?",
    ),
];

const SYSTEM_ANSWER_TO_ZH: &str =
    "Translate the user's text into Chinese. Reply with the translation only.";
const SYSTEM_ANSWER_TO_EN: &str =
    "Translate the user's text into English. Reply with the translation only.";

/// Worked examples for statements (an answer to be checked), on topics
/// outside the shipped knowledge base for the same reason as above.
const ANSWER_EXAMPLES_TO_ZH: &[(&str, &str)] = &[(
    "The author says green tea is best brewed at 80 degrees, not with boiling water.",
    "作者说绿茶最好用80度的水冲泡，而不是用开水。",
)];
const ANSWER_EXAMPLES_TO_EN: &[(&str, &str)] = &[(
    "作者说绿茶最好用80度的水冲泡，而不是用开水。",
    "The author says green tea is best brewed at 80 degrees, not with boiling water.",
)];

/// The question in `to`, by `generator` (greedy, one line); `None` when
/// what it wrote is not a question in `to` (a small model sometimes
/// answers instead, in the question's language), or is far longer than
/// the question.
pub fn translate(generator: &dyn Generator, question: &str, to: Lang) -> Result<Option<String>> {
    let (system, examples) = match to {
        Lang::Zh => (SYSTEM_TO_ZH, EXAMPLES_TO_ZH),
        Lang::En => (SYSTEM_TO_EN, EXAMPLES_TO_EN),
    };
    one_line(generator, system, examples, question, to, MAX_TOKENS)
}

/// An answer in `to`, by `generator`, so that it can be checked word by
/// word against passages written in `to` ([`crate::answer::check`]);
/// `None` when the model did not translate it (or not in one line).
pub fn translate_answer(
    generator: &dyn Generator,
    answer: &str,
    to: Lang,
) -> Result<Option<String>> {
    let (system, examples) = match to {
        Lang::Zh => (SYSTEM_ANSWER_TO_ZH, ANSWER_EXAMPLES_TO_ZH),
        Lang::En => (SYSTEM_ANSWER_TO_EN, ANSWER_EXAMPLES_TO_EN),
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
        && out.finish != crate::llm::Finish::Length
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

/// The question's translation into the knowledge base's main language
/// when it is written in the other one and `enabled`; `None` otherwise, or
/// when the model did not translate it.
pub fn for_search(
    kb: &Kb,
    generator: &dyn Generator,
    question: &str,
    lang: Lang,
    enabled: bool,
) -> Result<Option<String>> {
    if !enabled {
        return Ok(None);
    }
    let target = main_language(kb);
    if target == lang {
        return Ok(None);
    }
    translate(generator, question, target)
}

/// The `k` best passages for `question`: with a translation, the hits for
/// the question alone and for the question with its translation, fused by
/// reciprocal rank. The question's own hits keep their say: searched for
/// with the translation only, an English question lost the English
/// glossary definitions the model answers English questions best from
/// (BENCHMARKS.md, "Questions in the other language").
pub fn search(
    kb: &Kb,
    question: &str,
    translation: Option<&str>,
    k: usize,
    mode: SearchMode,
) -> Result<Vec<SearchHit>> {
    let own = kb.search(question, k, mode)?;
    let Some(t) = translation else {
        return Ok(own);
    };
    let both = format!("{question}\n{t}");
    if check_query(&both, k).is_err() {
        return Ok(own);
    }
    let with = kb.search(&both, k, mode)?;
    let mut fused: Vec<(f32, SearchHit)> = Vec::new();
    for list in [own, with] {
        for (i, hit) in list.into_iter().enumerate() {
            let share = 1.0 / (FUSE_K + (i + 1) as f32);
            match fused.iter_mut().find(|(_, h)| h.chunk_id == hit.chunk_id) {
                Some((score, _)) => *score += share,
                None => fused.push((share, hit)),
            }
        }
    }
    // Stable: ties keep the question's own order.
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(fused
        .into_iter()
        .take(k)
        .enumerate()
        .map(|(i, (_, mut hit))| {
            hit.rank = i + 1;
            hit
        })
        .collect())
}

/// The reciprocal-rank constant of [`search`]'s fusion: small, so the top
/// of each list counts for much more than its tail.
const FUSE_K: f32 = 10.0;
