//! Retrieval: a query in, ranked chunks out.

use serde::{Deserialize, Serialize};

use crate::chunk::{Chunk, ChunkKind};
use crate::config::SearchConfig;
use crate::error::{Error, Result};
use crate::index::Generation;

/// Which retriever ranks the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Lexical BM25 over the Chinese-aware analyzer.
    #[default]
    Bm25,
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bm25" => Ok(SearchMode::Bm25),
            "vector" | "hybrid" => Err(format!(
                "search mode {s:?} needs the vector index, which this build does not have yet (use bm25)"
            )),
            _ => Err(format!("unknown search mode {s:?} (expected bm25)")),
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SearchMode::Bm25 => "bm25",
        })
    }
}

/// One ranked chunk. Serialises to the `--json` / HTTP result shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// The chunk's stable id.
    pub chunk_id: String,
    /// Source path relative to the corpus root.
    pub source: String,
    /// Heading path.
    pub section: String,
    /// The chunk's text.
    pub text: String,
    /// The retriever's score (BM25: higher is better, not normalised).
    pub score: f32,
}

/// Longest query accepted, in chars: a question, not a document.
pub const MAX_QUERY_CHARS: usize = 2000;

/// Ranks the chunks of `generation` for `query`: the `k` best, with at most
/// `config.max_glossary_hits` glossary entries among them, so that short,
/// term-dense definitions do not crowd out the passages that discuss a term.
pub fn search(
    generation: &Generation,
    query: &str,
    k: usize,
    mode: SearchMode,
    config: &SearchConfig,
) -> Result<Vec<SearchHit>> {
    let query = query.trim();
    if query.is_empty() {
        return Err(Error::InvalidQuery("the query is empty".into()));
    }
    let n = query.chars().count();
    if n > MAX_QUERY_CHARS {
        return Err(Error::InvalidQuery(format!(
            "the query has {n} characters; the limit is {MAX_QUERY_CHARS}"
        )));
    }
    if k == 0 {
        return Err(Error::InvalidQuery("k must be at least 1".into()));
    }
    // Over-fetch so the glossary cap can skip entries and still return k;
    // fetch deeper while the cap leaves fewer than k and more may exist.
    let total = generation.chunks.len().max(1);
    let mut depth = k
        .saturating_add(k.max(config.max_glossary_hits).saturating_mul(2))
        .min(total);
    let ranked = loop {
        let ranked = match mode {
            SearchMode::Bm25 => generation
                .bm25
                .search(query, depth, config.expand_queries)?,
        };
        let passages = ranked
            .iter()
            .filter(|(ord, _)| {
                generation
                    .chunks
                    .get(*ord)
                    .is_some_and(|c| c.kind != ChunkKind::Glossary)
            })
            .count();
        if ranked.len() < depth
            || depth >= total
            || passages.saturating_add(config.max_glossary_hits) >= k
        {
            break ranked;
        }
        depth = depth.saturating_mul(4).min(total);
    };
    let mut glossary = 0;
    Ok(ranked
        .into_iter()
        .filter_map(|(ord, score)| Some((generation.chunks.get(ord)?, score)))
        .filter(|(c, _)| {
            let keep = c.kind != ChunkKind::Glossary || glossary < config.max_glossary_hits;
            glossary += usize::from(keep && c.kind == ChunkKind::Glossary);
            keep
        })
        .take(k)
        .enumerate()
        .map(|(i, (c, score)): (usize, (&Chunk, f32))| SearchHit {
            rank: i + 1,
            chunk_id: c.id.clone(),
            source: c.source.clone(),
            section: c.section.clone(),
            text: c.text.clone(),
            score,
        })
        .collect())
}
