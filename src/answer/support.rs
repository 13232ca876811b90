//! How well passages back an answer: shared content (words and Chinese
//! bigrams of what the answer adds to the question), and across languages
//! meaning (e5 cosine with a sentence that states something).

use std::collections::HashSet;

use serde::Serialize;

use super::citations::strip_markers;
use crate::engine::Embedder;
use crate::text::{is_cjk, sentences, Lang};

/// Content units of text for overlap: lowercase words (letters/digits) and
/// Chinese character bigrams (and single characters of one-character runs).
pub(super) fn units(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let flush_cjk = |cjk: &mut Vec<char>, out: &mut HashSet<String>| {
        if cjk.len() == 1 {
            out.insert(cjk[0].to_string());
        }
        for w in cjk.windows(2) {
            out.insert(w.iter().collect());
        }
        cjk.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_cjk(&mut cjk, &mut out);
            if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
        }
    }
    flush_cjk(&mut cjk, &mut out);
    if !word.is_empty() {
        out.insert(word);
    }
    out.retain(|u| !STOP.contains(&u.as_str()));
    out
}

const STOP: &[&str] = &[
    "the", "a", "an", "of", "to", "in", "is", "are", "and", "or", "for", "on", "it", "its", "by",
    "as", "be", "that", "this", "with", "was", "were", "which", "from", "at", "what", "how",
];

/// The share of what `answer` adds to `question` (its content units not
/// already in the question) that `passage` contains; `None` when the
/// answer adds nothing.
pub(super) fn overlap(answer: &str, question: &str, passage: &str) -> Option<f32> {
    let q = units(question);
    let a: HashSet<String> = units(&strip_markers(answer))
        .into_iter()
        .filter(|u| !q.contains(u))
        .collect();
    if a.is_empty() {
        return None;
    }
    let p = units(passage);
    Some(a.iter().filter(|u| p.contains(*u)).count() as f32 / a.len() as f32)
}

/// The passage (index into `given`) that supports most of what the
/// answer adds to the question, if it supports at least `min` of it.
pub(super) fn best_support(
    answer: &str,
    question: &str,
    given: &[&str],
    min: f32,
) -> Option<usize> {
    given
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, overlap(answer, question, p)?)))
        .filter(|&(_, s)| s >= min)
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(i, _)| i)
}

/// Share of what an uncited answer adds to the question that one passage
/// must hold.
pub(super) const UNCITED_OVERLAP: f32 = 0.5;

/// Share of a translated answer's additions one passage must hold
/// ([`super::check`]). Lower than [`UNCITED_OVERLAP`] because a 0.5B model's
/// translation loses words (基础模型 comes back as 基座模型). On the eval
/// set (BENCHMARKS.md) the two right answers it wins back scored 0.61 and
/// 0.40, the out-of-scope answers at most 0.125: few answers either side,
/// so a judgement more than a calibration.
pub const TRANSLATED_OVERLAP: f32 = 0.4;

/// How well passages back an answer, by the two measures the checks use
/// (public so the thresholds can be calibrated: `examples/support_calibration.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Support {
    /// Share of what the answer adds to the question (words, Chinese
    /// bigrams) found in the passages together; `None`: it adds nothing.
    pub overlap: Option<f32>,
    /// Best e5 cosine of the answer with one sentence of the passages in
    /// the other language (`None`: there is none).
    pub cosine: Option<f32>,
}

/// Both measures of how `passages` back `answer` to `question`.
pub fn support(
    answer: &str,
    question: &str,
    passages: &[&str],
    embedder: Option<&dyn Embedder>,
) -> Support {
    Support {
        overlap: overlap(answer, question, &passages.join("\n")),
        cosine: embedding_support(answer, passages, embedder).map(|(_, c)| c),
    }
}

/// Share of an answer's additions its cited passages must hold, unless the
/// meaning matches (`answer.cited_support_cosine`). Calibrated on the eval set (BENCHMARKS.md).
pub const CITED_OVERLAP: f32 = 0.5;

/// Whether the cited passages back the answer: most of its words, or
/// (the embedding is only computed when the words fall short) its meaning.
pub(super) fn cited_support(
    answer: &str,
    question: &str,
    cited: &[&str],
    embedder: Option<&dyn Embedder>,
    cosine: f32,
) -> bool {
    let words = overlap(answer, question, &cited.join("\n"));
    if words.is_some_and(|o| o >= CITED_OVERLAP) {
        return true;
    }
    let meaning = embedding_support(answer, cited, embedder).map(|(_, c)| c);
    tracing::debug!(?words, ?meaning, "support of a cited answer");
    meaning.is_some_and(|c| c >= cosine)
}

/// The passage with the sentence most similar to the answer, among the
/// sentences that state something in the other language, and that similarity.
pub(super) fn embedding_support(
    answer: &str,
    given: &[&str],
    embedder: Option<&dyn Embedder>,
) -> Option<(usize, f32)> {
    let answer = strip_markers(answer);
    let lang = Lang::detect(&answer);
    let mut owner = Vec::new();
    let mut sents: Vec<&str> = Vec::new();
    for (i, shown) in given.iter().enumerate() {
        for (a, b) in sentences(shown, 0, shown.len()) {
            let t = shown[a..b].trim();
            // In the answer's own language the words must match: meaning
            // alone is topic, not fact ("OpenAI的创始人是马云" is close to
            // any sentence about OpenAI).
            if is_statement(t) && Lang::detect(t) != lang {
                owner.push(i);
                sents.push(t);
            }
        }
    }
    if sents.is_empty() {
        return None;
    }
    let embedder = embedder?;
    let q = embedder.embed_query(&answer).ok()?;
    let vs = embedder.embed_passages(&sents, &mut |_| {}).ok()?;
    let best = vs
        .chunks_exact(embedder.dim())
        .zip(&owner)
        .map(|(v, &i)| (i, v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>()))
        .max_by(|x, y| x.1.total_cmp(&y.1));
    tracing::debug!(?best, "embedding support");
    best
}

/// Whether a sentence states something. A heading or a glossary term line
/// ("OpenAI (openAI / open AI)") only names a topic, so any answer about
/// that topic is close to it in meaning, true or not ("OpenAI的创始人是马云"):
/// such lines never back an answer by meaning.
pub(super) fn is_statement(s: &str) -> bool {
    let s = s.trim();
    if s.starts_with('#') {
        return false;
    }
    let han = s.chars().filter(|&c| is_cjk(c)).count();
    let words = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .count();
    let ends = s
        .trim_end_matches(|c: char| c.is_whitespace() || "”’」』）)】\"'》".contains(c))
        .ends_with(['。', '！', '？', '.', '!', '?', '；', ';', '：', ':', '…']);
    han + words >= 4 && (ends || han + words >= 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_and_term_lines_are_not_statements() {
        assert!(!is_statement("OpenAI (openAI / open AI)"));
        assert!(!is_statement("## 一、通过了解chatGPT来理解什么是大模型"));
        assert!(!is_statement("RLHF"));
        assert!(is_statement(
            "OpenAI是一家美国人工智能研究公司,开发了GPT系列模型和ChatGPT。"
        ));
        assert!(is_statement("Green tea is not fermented."));
        assert!(is_statement("一块A100的FP16算力是312TFLOPS"));
    }

    #[test]
    fn units_mix_words_and_chinese_bigrams() {
        let u = units("RLHF是人类反馈 the Model");
        assert!(u.contains("rlhf") && u.contains("model") && u.contains("人类"));
        assert!(!u.contains("the"));
    }
}
