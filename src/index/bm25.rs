//! The BM25 index: a tantivy index over chunk text and section headings,
//! analysed by [`super::tokenizer`]. It stores only each chunk's ordinal;
//! chunk data lives once, in the generation's `chunks.jsonl`.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, INDEXED, STORED,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{doc, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use super::tokenizer::{self, TokenizerKind, ANALYZER_NAME};
use crate::chunk::Chunk;
use crate::error::{Error, Result};

/// A match in the section heading counts this much relative to the body.
const SECTION_BOOST: f32 = 0.5;

/// Weight of terms added by glossary expansion, relative to the query's own.
pub const EXPANSION_WEIGHT: f32 = 0.6;

struct Fields {
    ord: Field,
    body: Field,
    section: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let ord = b.add_u64_field("ord", INDEXED | STORED);
    let body = b.add_text_field("body", text.clone());
    let section = b.add_text_field("section", text);
    (b.build(), Fields { ord, body, section })
}

/// Writes a BM25 index of `chunks` into the empty folder `dir`.
/// `progress(done, total)` is called as documents are added.
pub fn build(
    dir: &Path,
    chunks: &[Chunk],
    kind: TokenizerKind,
    synonyms: &[Vec<String>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let index = Index::create_in_dir(dir, schema().0)?;
    fill(&index, chunks, kind, synonyms, progress)
}

/// A BM25 index of `chunks` held in memory: what a replica of the
/// `postgres` backend builds from the shared chunk table, ranking exactly
/// as the same chunks on disk would.
pub fn build_in_ram(
    chunks: &[Chunk],
    kind: TokenizerKind,
    synonyms: &[Vec<String>],
) -> Result<Bm25Index> {
    let index = Index::create_in_ram(schema().0);
    fill(&index, chunks, kind, synonyms, &mut |_, _| {})?;
    Bm25Index::from_index(index, Path::new("(in memory)"), kind, synonyms)
}

fn fill(
    index: &Index,
    chunks: &[Chunk],
    kind: TokenizerKind,
    synonyms: &[Vec<String>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let f = schema().1;
    index
        .tokenizers()
        .register(ANALYZER_NAME, tokenizer::analyzer(kind, &synonyms.concat()));
    // One indexing thread: documents then sit in chunk order, so the same
    // corpus gives the same index (with more threads, which thread took a
    // document decided its address, and so the order of equal scores).
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 128 << 20)?;
    let step = (chunks.len() / 20).max(500);
    for (ord, c) in chunks.iter().enumerate() {
        writer.add_document(doc!(
            f.ord => ord as u64,
            f.body => c.text.as_str(),
            f.section => c.section.as_str(),
        ))?;
        if (ord + 1) % step == 0 {
            progress(ord + 1, chunks.len());
        }
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    progress(chunks.len(), chunks.len());
    Ok(())
}

/// An open BM25 index.
pub struct Bm25Index {
    reader: IndexReader,
    fields: Fields,
    terms: QueryTerms,
    num_docs: u64,
}

/// How a query becomes weighted terms: the index's analyzer, and glossary
/// expansion. Shared by tantivy and by the database's full-text search,
/// so both search for the same terms.
#[derive(Clone)]
pub struct QueryTerms {
    analyzer: TextAnalyzer,
    expander: Expander,
}

impl QueryTerms {
    /// The analyzer of `kind`, expanding through `synonyms`.
    pub fn new(kind: TokenizerKind, synonyms: &[Vec<String>]) -> QueryTerms {
        let mut analyzer = tokenizer::analyzer(kind, &synonyms.concat());
        let expander = Expander::new(&mut analyzer, synonyms);
        QueryTerms { analyzer, expander }
    }

    /// The analyzer, for documents.
    pub fn analyzer(&self) -> TextAnalyzer {
        self.analyzer.clone()
    }

    /// The query's terms as this index analyses them (stop words removed).
    pub fn query_terms(&self, query: &str) -> Vec<String> {
        tokenizer::query_terms(&mut self.analyzer.clone(), query)
    }

    /// The query's terms with their weights: its own terms at 1.0, then the
    /// other names of glossary entries it mentions at [`EXPANSION_WEIGHT`].
    pub fn weighted(&self, query: &str, expand: bool) -> Vec<(String, f32)> {
        let terms = self.query_terms(query);
        let mut out: Vec<(String, f32)> = terms.iter().map(|t| (t.clone(), 1.0)).collect();
        let expansion = if expand {
            self.expander.expand(&terms)
        } else {
            Vec::new()
        };
        for t in expansion {
            if !out.iter().any(|(o, _)| *o == t) {
                out.push((t, EXPANSION_WEIGHT));
            }
        }
        out
    }
}

impl Bm25Index {
    /// Opens the index in `dir` with the analyzer it was built with.
    pub fn open(dir: &Path, kind: TokenizerKind, synonyms: &[Vec<String>]) -> Result<Bm25Index> {
        let corrupt = |e: tantivy::TantivyError| Error::CorruptIndex {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        };
        let index = Index::open_in_dir(dir).map_err(corrupt)?;
        Bm25Index::from_index(index, dir, kind, synonyms)
    }

    fn from_index(
        index: Index,
        dir: &Path,
        kind: TokenizerKind,
        synonyms: &[Vec<String>],
    ) -> Result<Bm25Index> {
        let corrupt = |e: tantivy::TantivyError| Error::CorruptIndex {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        };
        let terms = QueryTerms::new(kind, synonyms);
        index.tokenizers().register(ANALYZER_NAME, terms.analyzer());
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(Error::CorruptIndex {
                path: dir.to_path_buf(),
                reason: "the BM25 schema is not the one this kbqa writes".into(),
            });
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(corrupt)?;
        let num_docs = reader.searcher().num_docs();
        Ok(Bm25Index {
            reader,
            fields,
            terms,
            num_docs,
        })
    }

    /// How many chunks the index holds.
    pub fn num_docs(&self) -> u64 {
        self.num_docs
    }

    /// The `k` best chunks as (chunk ordinal, BM25 score), best first, equal
    /// scores in chunk order; `expand` turns glossary expansion on.
    ///
    /// Equal scores are common (glossary entries of similar length matching
    /// one query word), and a rank decides a fused score, so ties are broken
    /// by ordinal here rather than by where tantivy happened to store a
    /// document: otherwise two builds of one corpus could rank, and so
    /// answer, differently.
    pub fn search(&self, query: &str, k: usize, expand: bool) -> Result<Vec<(usize, f32)>> {
        let terms = self.terms.weighted(query, expand);
        if terms.is_empty() {
            return Err(Error::InvalidQuery(format!(
                "{query:?} has no searchable words"
            )));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (t, weight) in &terms {
            let body = Term::from_field_text(self.fields.body, t);
            let section = Term::from_field_text(self.fields.section, t);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(body, IndexRecordOption::WithFreqs)),
                    *weight,
                )),
            ));
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(section, IndexRecordOption::WithFreqs)),
                    SECTION_BOOST * weight,
                )),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // Fetch past the k-th score's ties so the cut does not depend on
        // which of them tantivy returns first.
        let mut limit = k.saturating_mul(2).saturating_add(8);
        let top = loop {
            let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
            let tied_past_limit = top.len() == limit
                && k > 0
                && top.get(k - 1).map(|t| t.0) == top.last().map(|t| t.0);
            if !tied_past_limit || limit as u64 >= self.num_docs {
                break top;
            }
            limit = limit.saturating_mul(4);
        };
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let ord = d
                .get_first(self.fields.ord)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| Error::CorruptIndex {
                    path: "bm25".into(),
                    reason: "a document has no chunk ordinal".into(),
                })?;
            out.push((ord as usize, score));
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        Ok(out)
    }
}

/// Query expansion through the glossary: a query that names an entry (by
/// any of its names, in either language) also searches its other names, so
/// "What is data parallelism?" finds text that only says 数据并行.
#[derive(Clone)]
struct Expander {
    /// Per entry: each name's terms.
    entries: Vec<Vec<Vec<String>>>,
}

impl Expander {
    fn new(analyzer: &mut TextAnalyzer, synonyms: &[Vec<String>]) -> Expander {
        let entries = synonyms
            .iter()
            .map(|names| {
                names
                    .iter()
                    .map(|n| tokenizer::query_terms(analyzer, n))
                    .filter(|terms| !terms.is_empty())
                    .collect()
            })
            .collect();
        Expander { entries }
    }

    /// Terms of the other-language names of every entry the query names.
    /// Same-language aliases are left out: they add little recall and pull
    /// the glossary entry itself above the passages that use the term.
    fn expand(&self, query_terms: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for names in &self.entries {
            let named: Vec<&Vec<String>> = names
                .iter()
                .filter(|terms| {
                    terms.iter().map(String::len).sum::<usize>() >= 2
                        && terms.iter().all(|t| query_terms.contains(t))
                })
                .collect();
            if named.is_empty() {
                continue;
            }
            let cjk_named = named.iter().any(|terms| is_cjk_name(terms));
            let latin_named = named.iter().any(|terms| !is_cjk_name(terms));
            for terms in names {
                let wanted = if is_cjk_name(terms) {
                    latin_named
                } else {
                    cjk_named
                };
                if !wanted {
                    continue;
                }
                for t in terms {
                    if !query_terms.contains(t) && !out.contains(t) {
                        out.push(t.clone());
                    }
                }
            }
        }
        out
    }
}

fn is_cjk_name(terms: &[String]) -> bool {
    terms.iter().any(|t| t.chars().any(crate::text::is_cjk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{chunk_corpus, ChunkConfig};
    use crate::corpus::Corpus;

    #[test]
    fn two_builds_of_one_corpus_rank_alike_and_equal_scores_go_in_chunk_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = Corpus::load(&root.join("corpus"), false).unwrap();
        let chunks = chunk_corpus(&corpus, &ChunkConfig::default());
        let synonyms = corpus.synonyms();
        let open = || {
            let dir = tempfile::tempdir().unwrap();
            build(
                dir.path(),
                &chunks,
                TokenizerKind::Jieba,
                &synonyms,
                &mut |_, _| {},
            )
            .unwrap();
            let index = Bm25Index::open(dir.path(), TokenizerKind::Jieba, &synonyms).unwrap();
            (dir, index)
        };
        let (_a, a) = open();
        let (_b, b) = open();
        let set = std::fs::read_to_string(root.join("tests/eval/qa.jsonl")).unwrap();
        let mut ties = 0;
        for line in set.lines() {
            let item: serde_json::Value = serde_json::from_str(line).unwrap();
            let q = item["question"].as_str().unwrap();
            let hits = a.search(q, 30, true).unwrap();
            assert_eq!(hits, b.search(q, 30, true).unwrap(), "{q}");
            for w in hits.windows(2) {
                assert!(
                    w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0),
                    "{q}: {w:?}"
                );
                ties += usize::from(w[0].1 == w[1].1);
            }
        }
        // The corpus has equal scores to order, or this proves nothing.
        assert!(ties > 10, "{ties} ties");
    }
}
