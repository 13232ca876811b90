//! The cite stage: the passages an answer cites, each with the sentences
//! that back it, quoted verbatim so a reader can check the answer.

use super::check::Checked;
use super::citations::strip_markers;
use super::focus::sentence_scores;
use super::prompt::Shown;
use super::support::units;
use super::types::Citation;
use crate::engine::Embedder;
use crate::text::{sentences, snippet};

/// The citations of a checked answer, in the order it cites them.
pub(super) fn citations(
    checked: &Checked,
    given: &[Shown],
    question: &str,
    embedder: Option<&dyn Embedder>,
) -> Vec<Citation> {
    checked
        .cited
        .iter()
        .map(|&n| {
            let shown = &given[n - 1];
            let hit = shown.hit;
            Citation {
                n,
                chunk_id: hit.chunk_id.clone(),
                source: hit.source.clone(),
                section: hit.section.clone(),
                snippet: snippet(&hit.text, 160),
                text: shown.text.clone(),
                score: hit.score,
                evidence: evidence(&checked.text, question, &shown.text, embedder),
                on_question: on_question(question, &shown.text, embedder, 3),
                inferred: checked.inferred || checked.added.contains(&n),
            }
        })
        .collect()
}

/// The `keep` sentences of `passage` that best answer `question`, best
/// first: ranked as the focus stage ranks them (e5 cosine plus shared
/// words), so the evidence a reader sees is chosen by the question, not
/// by the model's possibly wrong answer. Empty without an embedder.
fn on_question(
    question: &str,
    passage: &str,
    embedder: Option<&dyn Embedder>,
    keep: usize,
) -> Vec<String> {
    let sents: Vec<&str> = sentences(passage, 0, passage.len())
        .into_iter()
        .map(|(s, e)| passage[s..e].trim())
        .filter(|s| s.chars().filter(|c| c.is_alphanumeric()).count() >= 4)
        .collect();
    let Some(scores) = embedder.and_then(|e| sentence_scores(&[question], &sents, e)) else {
        return Vec::new();
    };
    let mut order: Vec<usize> = (0..sents.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
        .into_iter()
        .take(keep)
        .map(|i| sents[i].to_string())
        .collect()
}

/// The sentence(s) of `passage` that best support `answer`: by shared
/// content with the answer (and the question, which names the topic); when
/// nothing is shared (e.g. an English answer from a Chinese passage), by
/// embedding similarity with the answer.
fn evidence(
    answer: &str,
    question: &str,
    passage: &str,
    embedder: Option<&dyn Embedder>,
) -> Vec<String> {
    let spans = sentences(passage, 0, passage.len());
    let sents: Vec<&str> = spans
        .iter()
        .map(|&(s, e)| passage[s..e].trim())
        .filter(|s| s.chars().filter(|c| c.is_alphanumeric()).count() >= 4)
        .collect();
    if sents.len() <= 1 {
        return sents.iter().map(|s| s.to_string()).collect();
    }
    let a = units(&strip_markers(answer));
    let q = units(question);
    let scores: Vec<f32> = sents
        .iter()
        .map(|s| {
            let u = units(s);
            if u.is_empty() {
                return 0.0;
            }
            let shared_a = a.iter().filter(|x| u.contains(*x)).count() as f32;
            let shared_q = q.iter().filter(|x| u.contains(*x)).count() as f32;
            (shared_a + 0.5 * shared_q) / (u.len() as f32).sqrt()
        })
        .collect();
    let best = scores.iter().cloned().fold(0f32, f32::max);
    let pick = if best > 0.0 && a.iter().any(|x| sents.iter().any(|s| units(s).contains(x))) {
        scores
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    } else {
        embedding_pick(answer, &sents, embedder)
    };
    let Some(i) = pick else {
        return vec![sents[0].to_string()];
    };
    let mut out = vec![sents[i].to_string()];
    // A second sentence when it is nearly as good (two-part answers).
    if let Some((j, _)) = scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| j != i && s > 0.0 && s >= 0.8 * scores[i])
        .max_by(|x, y| x.1.total_cmp(y.1))
    {
        out.push(sents[j].to_string());
    }
    out
}

/// The sentence most similar in meaning to the answer.
fn embedding_pick(answer: &str, sents: &[&str], embedder: Option<&dyn Embedder>) -> Option<usize> {
    let embedder = embedder?;
    let q = embedder.embed_query(&strip_markers(answer)).ok()?;
    let vs = embedder.embed_passages(sents, &mut |_| {}).ok()?;
    vs.chunks_exact(embedder.dim())
        .enumerate()
        .map(|(i, v)| (i, v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>()))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(i, _)| i)
}
