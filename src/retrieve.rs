//! Retrieval: a query in, ranked chunks out — BM25, vector, or both fused
//! with reciprocal rank fusion (RRF).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkKind;
use crate::config::{SearchConfig, VectorConfig};
use crate::error::{Error, Result};
use crate::index::Generation;

pub use crate::config::SearchMode;

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
    /// The ranking score: BM25 score, cosine similarity, or the RRF sum.
    pub score: f32,
    /// Rank BM25 gave this chunk (hybrid only; absent if BM25 did not find it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25_rank: Option<usize>,
    /// Rank the vector search gave this chunk (hybrid only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
}

/// Longest query accepted, in chars: a question, not a document.
pub const MAX_QUERY_CHARS: usize = 2000;

/// Most passages one request may ask for (the HTTP API's and `ask`'s limit).
pub const MAX_K: usize = 50;

/// A query that every retriever can use: trimmed, not empty, not too
/// long, asking for at least one passage. Made once at the edge
/// ([`Query::parse`]); what takes a `Query` need not check it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    text: String,
    k: usize,
}

impl Query {
    /// Checks `text` and `k`.
    pub fn parse(text: &str, k: usize) -> Result<Query> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::InvalidQuery("the query is empty".into()));
        }
        let n = text.chars().count();
        if n > MAX_QUERY_CHARS {
            return Err(Error::InvalidQuery(format!(
                "the query has {n} characters; the limit is {MAX_QUERY_CHARS}"
            )));
        }
        if k == 0 {
            return Err(Error::InvalidQuery("k must be at least 1".into()));
        }
        Ok(Query {
            text: text.to_string(),
            k,
        })
    }

    /// The text, trimmed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How many passages are wanted.
    pub fn k(&self) -> usize {
        self.k
    }
}

struct Ranked {
    ord: usize,
    score: f32,
    bm25_rank: Option<usize>,
    vector_rank: Option<usize>,
}

/// Ranks the chunks of `generation` for `query` (and its embedding, for
/// vector and hybrid modes): the `k` best, with at most
/// `config.max_glossary_hits` glossary entries among them, so that short,
/// term-dense definitions do not crowd out the passages that discuss a term.
pub fn search(
    generation: &Generation,
    query: &Query,
    query_vector: Option<&[f32]>,
    mode: SearchMode,
    config: &SearchConfig,
    vector_config: &VectorConfig,
) -> Result<Vec<SearchHit>> {
    let (query, k) = (query.text(), query.k());
    let total = generation.chunks.len().max(1);
    // Over-fetch so the glossary cap can skip entries and still return k;
    // fetch deeper while the cap leaves fewer than k and more may exist.
    let mut depth = k
        .saturating_add(k.max(config.max_glossary_hits).saturating_mul(2))
        .max(config.candidates)
        .min(total);
    let ranked = loop {
        let ranked = rank(
            generation,
            query,
            query_vector,
            depth,
            mode,
            config,
            vector_config,
        )?;
        let passages = ranked
            .iter()
            .filter(|r| {
                generation
                    .chunks
                    .get(r.ord)
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
    let hybrid = mode == SearchMode::Hybrid;
    Ok(ranked
        .into_iter()
        .filter_map(|r| Some((generation.chunks.get(r.ord)?, r)))
        .filter(|(c, _)| {
            let keep = c.kind != ChunkKind::Glossary || glossary < config.max_glossary_hits;
            glossary += usize::from(keep && c.kind == ChunkKind::Glossary);
            keep
        })
        .take(k)
        .enumerate()
        .map(|(i, (c, r))| SearchHit {
            rank: i + 1,
            chunk_id: c.id.clone(),
            source: c.source.clone(),
            section: c.section.clone(),
            text: c.text.clone(),
            score: r.score,
            bm25_rank: r.bm25_rank.filter(|_| hybrid),
            vector_rank: r.vector_rank.filter(|_| hybrid),
        })
        .collect())
}

fn rank(
    generation: &Generation,
    query: &str,
    query_vector: Option<&[f32]>,
    depth: usize,
    mode: SearchMode,
    config: &SearchConfig,
    vector_config: &VectorConfig,
) -> Result<Vec<Ranked>> {
    let bm25 = || generation.bm25.search(query, depth, config.expand_queries);
    let vector = || -> Result<Vec<(usize, f32)>> {
        let index = generation.vector.as_ref().ok_or_else(|| {
            Error::Config(
                "this index has no vector index (models.embedding = \"none\"); use --mode bm25"
                    .into(),
            )
        })?;
        let q = query_vector.ok_or_else(|| Error::Model("no query embedding was given".into()))?;
        // A different model behind the same name (a server's) shows here.
        if q.len() != index.dim() {
            return Err(Error::IncompatibleIndex {
                path: generation.dir.clone(),
                reason: format!(
                    "its vectors have {} dimensions and the query embedding has {}: \
                     the embedding model is not the one that built it",
                    index.dim(),
                    q.len()
                ),
            });
        }
        // Small indexes are searched exactly: as fast, and never approximate.
        let exact = index.len() < vector_config.exact_below;
        index.search(q, depth, vector_config.ef_search, exact)
    };
    let single = |hits: Vec<(usize, f32)>, is_bm25: bool| -> Vec<Ranked> {
        hits.into_iter()
            .enumerate()
            .map(|(i, (ord, score))| Ranked {
                ord,
                score,
                bm25_rank: is_bm25.then_some(i + 1),
                vector_rank: (!is_bm25).then_some(i + 1),
            })
            .collect()
    };
    Ok(match mode {
        SearchMode::Bm25 => single(bm25()?, true),
        SearchMode::Vector => single(vector()?, false),
        SearchMode::Hybrid => {
            // A query with no searchable words still has a meaning to embed.
            let lexical = match bm25() {
                Ok(h) => h,
                Err(Error::InvalidQuery(_)) => Vec::new(),
                Err(e) => return Err(e),
            };
            fuse(&lexical, &vector()?, config)
        }
    })
}

/// Reciprocal rank fusion: `score = Σ weight / (rrf_k + rank)`; ties go to
/// the lower ordinal, so results are deterministic.
fn fuse(bm25: &[(usize, f32)], vector: &[(usize, f32)], config: &SearchConfig) -> Vec<Ranked> {
    let mut by_ord: HashMap<usize, Ranked> = HashMap::new();
    for (lists, is_bm25, weight) in [
        (bm25, true, config.bm25_weight),
        (vector, false, config.vector_weight),
    ] {
        for (i, &(ord, _)) in lists.iter().enumerate() {
            let r = by_ord.entry(ord).or_insert(Ranked {
                ord,
                score: 0.0,
                bm25_rank: None,
                vector_rank: None,
            });
            r.score += weight / (config.rrf_k + (i + 1) as f32);
            if is_bm25 {
                r.bm25_rank = Some(i + 1);
            } else {
                r.vector_rank = Some(i + 1);
            }
        }
    }
    let mut fused: Vec<Ranked> = by_ord.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.ord.cmp(&b.ord)));
    fused
}
