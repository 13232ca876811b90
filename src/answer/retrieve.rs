//! The retrieve stage: the passages for a question, searched for with the
//! question and, when it is written in the other language than the
//! knowledge base's and `answer.translate` is on, its translation too.
//!
//! The shipped knowledge base is mostly Chinese. An English question
//! shares no words with a Chinese passage, so BM25 cannot help, and e5's
//! cross-language similarity ranks the right passage first for only half
//! of the English eval questions (0.52, against 0.90 for Chinese ones).
//! Searching with the question *and* its translation puts both retrievers
//! back on their home ground; the model still answers the question as
//! asked. The translation is a hint for retrieval, never shown as a fact:
//! a bad one costs recall, not honesty.
//!
//! Translating questions is off by default: it lifts English recall@1
//! from 0.522 to 0.657, but the 0.5B default model answers English
//! questions best from the English glossary definitions, which lose
//! places to Chinese sentences once the translation is searched for, and
//! its English answers did not improve (BENCHMARKS.md). A stronger
//! generator may differ.

use super::question::Question;
use super::translate::translate;
use crate::engine::Generator;
use crate::error::Result;
use crate::kb::Kb;
use crate::retrieve::{Query, SearchHit, SearchMode};
use crate::text::Lang;

/// The language most of the knowledge base's passages are written in
/// ([`Kb::main_language`]).
pub fn main_language(kb: &Kb) -> Lang {
    kb.main_language()
}

/// The question's translation into the knowledge base's main language
/// when it is written in the other one and `enabled`; `None` otherwise, or
/// when the model did not translate it.
pub fn for_search(
    kb: &Kb,
    generator: &dyn Generator,
    question: &Question,
    enabled: bool,
) -> Result<Option<String>> {
    if !enabled {
        return Ok(None);
    }
    let target = main_language(kb);
    if target == question.lang() {
        return Ok(None);
    }
    translate(generator, question.text(), target)
}

/// The `k` best passages for `question`: with a translation, the hits for
/// the question alone and for the question with its translation, fused by
/// reciprocal rank. The question's own hits keep their say: searched for
/// with the translation only, an English question lost the English
/// glossary definitions the model answers English questions best from
/// (BENCHMARKS.md, "Questions in the other language").
pub fn search(
    kb: &Kb,
    query: &Query,
    translation: Option<&str>,
    mode: SearchMode,
) -> Result<Vec<SearchHit>> {
    let own = kb.search(query, mode)?;
    let Some(t) = translation else {
        return Ok(own);
    };
    let k = query.k();
    let Ok(both) = Query::parse(&format!("{}\n{t}", query.text()), k) else {
        return Ok(own);
    };
    let with = kb.search(&both, mode)?;
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
