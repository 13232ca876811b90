//! The focus stage: what the model is shown of the retrieved passages.

use std::collections::HashSet;

use super::support::units;
use crate::engine::Embedder;
use crate::retrieve::SearchHit;
use crate::text::{sentences, Lang};

/// What the model is shown: the passages focused on the question (see
/// [`focus`]) when `keep > 0` and there is an embedder, else the whole
/// passages (a glossary entry with its definition in `lang` only).
pub(super) fn shown_passages<'h>(
    question: &str,
    translation: Option<&str>,
    lang: Lang,
    hits: &'h [SearchHit],
    keep: usize,
    embedder: Option<&dyn Embedder>,
) -> Vec<(&'h SearchHit, String)> {
    let _span = tracing::debug_span!("focus", keep).entered();
    let focused = match embedder {
        Some(e) if keep > 0 => focus(question, translation, lang, hits, keep, e),
        _ => None,
    };
    focused.unwrap_or_else(|| hits.iter().map(|h| (h, passage_text(h, lang))).collect())
}

/// The passages cut down to the `keep` sentences closest to the question
/// (e5 cosine, plus a share of the question's words and bigrams), each
/// passage keeping its chosen sentences in their order, the passages ordered
/// by their best sentence. A 0.5B model copies whatever sentence is nearest
/// the top of its prompt; fewer, closer sentences leave it less to confuse.
/// `None` when the passages hold no more sentences than that, or the
/// embedder fails.
fn focus<'h>(
    question: &str,
    translation: Option<&str>,
    lang: Lang,
    hits: &'h [SearchHit],
    keep: usize,
    embedder: &dyn Embedder,
) -> Option<Vec<(&'h SearchHit, String)>> {
    let texts: Vec<String> = hits.iter().map(|h| passage_text(h, lang)).collect();
    // (passage, sentence start, end)
    let mut spans = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        for (a, b) in sentences(text, 0, text.len()) {
            let t = text[a..b].trim();
            if !t.starts_with('#') && t.chars().filter(|c| c.is_alphanumeric()).count() >= 4 {
                spans.push((i, a, b));
            }
        }
    }
    if spans.len() <= keep {
        return None;
    }
    let sents: Vec<&str> = spans
        .iter()
        .map(|&(i, a, b)| texts[i][a..b].trim())
        .collect();
    let queries: Vec<&str> = std::iter::once(question).chain(translation).collect();
    let scores = sentence_scores(&queries, &sents, embedder)?;
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]));
    let mut chosen = order[..keep].to_vec();
    chosen.sort_unstable();
    Some(assemble(&chosen, &spans, &scores, &texts, hits))
}

/// Each sentence scored against each query (the question and its
/// translation, if any): e5 cosine plus [`FOCUS_WORDS`] times the share of
/// the query's words it holds; the better score counts, so a sentence in
/// either language can win.
pub(super) fn sentence_scores(
    queries: &[&str],
    sents: &[&str],
    embedder: &dyn Embedder,
) -> Option<Vec<f32>> {
    let queries: Vec<(Vec<f32>, HashSet<String>)> = queries
        .iter()
        .map(|q| Some((embedder.embed_query(q).ok()?, units(q))))
        .collect::<Option<_>>()?;
    let vs = embedder.embed_passages(sents, &mut |_| {}).ok()?;
    Some(
        vs.chunks_exact(embedder.dim())
            .zip(sents)
            .map(|(v, s)| {
                let u = units(s);
                queries
                    .iter()
                    .map(|(q, q_units)| {
                        let cos: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                        let shared = q_units.iter().filter(|x| u.contains(*x)).count();
                        cos + FOCUS_WORDS * shared as f32 / q_units.len().max(1) as f32
                    })
                    .fold(f32::MIN, f32::max)
            })
            .collect(),
    )
}

/// The `chosen` sentences (indexes into `spans`, in text order) put back
/// into their passages, adjacent ones running on and gaps marked `…`; the
/// passages ordered by their best sentence.
fn assemble<'h>(
    chosen: &[usize],
    spans: &[(usize, usize, usize)],
    scores: &[f32],
    texts: &[String],
    hits: &'h [SearchHit],
) -> Vec<(&'h SearchHit, String)> {
    let mut out: Vec<(f32, &'h SearchHit, String)> = Vec::new();
    let mut last: Option<(usize, usize)> = None; // (passage, end of the previous chosen sentence)
    for &c in chosen {
        let (i, a, b) = spans[c];
        let text = &texts[i];
        match last {
            Some((p, end)) if p == i => {
                let entry = out.last_mut().expect("a passage was started");
                if text[end..a].trim().is_empty() {
                    entry.2.push_str(&text[end..b]);
                } else {
                    entry.2.push_str(" … ");
                    entry.2.push_str(&text[a..b]);
                }
                entry.0 = entry.0.max(scores[c]);
            }
            _ => out.push((scores[c], &hits[i], text[a..b].to_string())),
        }
        last = Some((i, b));
    }
    out.sort_by(|x, y| y.0.total_cmp(&x.0));
    out.into_iter()
        .map(|(_, h, t)| (h, t.trim().to_string()))
        .collect()
}

/// Weight of the question's words (share found in a sentence) against the
/// e5 cosine when choosing sentences.
const FOCUS_WORDS: f32 = 0.1;

/// What the model sees of a passage. A glossary entry holds its term line
/// and a definition per language; the model gets the term line and the
/// definition in the question's language (the other one only invites a
/// mixed-language answer). Other passages are shown whole.
fn passage_text(hit: &SearchHit, lang: Lang) -> String {
    if !hit.source.ends_with("glossary.toml") {
        return hit.text.clone();
    }
    let mut lines = hit.text.lines().filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next() else {
        return hit.text.clone();
    };
    let body: Vec<&str> = lines.collect();
    let same: Vec<&str> = body
        .iter()
        .copied()
        .filter(|l| Lang::detect(l) == lang)
        .collect();
    let chosen = if same.is_empty() { body } else { same };
    std::iter::once(head)
        .chain(chosen)
        .collect::<Vec<_>>()
        .join("\n")
}
