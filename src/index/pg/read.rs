//! Reading the shared database: the live generation of a knowledge base,
//! and searches that run in the database (vectors always; words with
//! `database.lexical = "fts"`).

use std::collections::HashMap;

use pgvector::Vector;

use super::db::{chunk_table, df_table, lexeme, Db};
use crate::error::{Error, Result};
use crate::index::bm25::QueryTerms;
use crate::index::manifest::{parse_manifest, Manifest};

/// A section-heading occurrence counts this much of a body one (as the
/// tantivy index's section boost).
const SECTION_WEIGHT: f64 = 0.5;

/// The live generation of knowledge base `kb`: its id and `column`
/// (`name` or `manifest`), or `None` if it has never been indexed.
fn live_row(db: &Db, kb: &str, column: &str) -> Result<Option<(i64, String)>> {
    let mut c = db.conn()?;
    let row = c
        .query_opt(
            &format!(
                "SELECT g.id, g.{column} FROM kbqa_live l
                 JOIN kbqa_generations g ON g.id = l.generation WHERE l.kb = $1"
            ),
            &[&kb],
        )
        .map_err(|e| db.failed(e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The live generation of knowledge base `kb`: its id and name, or `None`
/// if it has never been indexed.
pub fn live_generation(db: &Db, kb: &str) -> Result<Option<(i64, String)>> {
    live_row(db, kb, "name")
}

/// The manifest of `kb`'s live generation, or `None`.
pub fn live_manifest(db: &Db, kb: &str) -> Result<Option<Manifest>> {
    live_row(db, kb, "manifest")?
        .map(|(id, text)| parse_manifest(&text, &location(db, kb, id)))
        .transpose()
}

/// What the live generation of a knowledge base holds, read in one
/// snapshot: its manifest and its chunks' JSON lines, in order.
pub struct Snapshot {
    /// The generation's id.
    pub id: i64,
    /// Its manifest.
    pub manifest: Manifest,
    /// Each chunk's JSON line, as written (the manifest's checksum covers them).
    pub lines: Vec<String>,
}

/// Reads the live generation of `kb`, or `None` if there is none.
pub fn open(db: &Db, kb: &str) -> Result<Option<Snapshot>> {
    let mut c = db.conn()?;
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| db.failed(e))?;
    // Reading a whole generation is not a search: no search timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .map_err(|e| db.failed(e))?;
    let Some(row) = tx
        .query_opt(
            "SELECT g.id, g.manifest FROM kbqa_live l
             JOIN kbqa_generations g ON g.id = l.generation WHERE l.kb = $1",
            &[&kb],
        )
        .map_err(|e| db.failed(e))?
    else {
        return Ok(None);
    };
    let id: i64 = row.get(0);
    let text: String = row.get(1);
    let manifest = parse_manifest(&text, &location(db, kb, id))?;
    let lines = tx
        .query(
            &format!("SELECT chunk FROM {} ORDER BY ord", chunk_table(id)),
            &[],
        )
        .map_err(|e| db.failed(e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().map_err(|e| db.failed(e))?;
    Ok(Some(Snapshot {
        id,
        manifest,
        lines,
    }))
}

/// How a generation in the database is named in messages.
pub fn location(db: &Db, kb: &str, id: i64) -> std::path::PathBuf {
    format!("{}#{kb}/{}", db.shown(), chunk_table(id)).into()
}

/// A generation's vectors, searched in the database (pgvector's HNSW
/// index, cosine distance).
pub struct DbVectors {
    db: Db,
    table: String,
    dim: usize,
    len: usize,
}

impl DbVectors {
    /// Generation `id`'s vectors: `len` of `dim` dimensions.
    pub fn new(db: Db, id: i64, dim: usize, len: usize) -> DbVectors {
        DbVectors {
            db,
            table: chunk_table(id),
            dim,
            len,
        }
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` nearest chunks as (ordinal, cosine similarity), best first;
    /// `exact` scans every row instead of walking the HNSW graph.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        exact: bool,
    ) -> Result<Vec<(usize, f32)>> {
        let db = &self.db;
        // One round trip: the setting and the search as one simple query
        // (one implicit transaction, so `SET LOCAL` holds for the search).
        // The vector is written out as numbers, which cannot inject SQL.
        let numbers: Vec<String> = query.iter().map(|x| format!("{x:?}")).collect();
        let q = format!("'[{}]'", numbers.join(","));
        let setting = if exact {
            "SET LOCAL enable_indexscan = off".to_string()
        } else {
            // pgvector returns at most ef_search rows from the graph.
            format!("SET LOCAL hnsw.ef_search = {}", ef.max(k).clamp(1, 1000))
        };
        let sql = format!(
            "{setting}; SELECT ord, 1 - (embedding <=> {q}) FROM {} ORDER BY embedding <=> {q} LIMIT {k}",
            self.table
        );
        let mut c = db.conn()?;
        let messages = c.simple_query(&sql).map_err(|e| db.failed(e))?;
        let mut hits = Vec::with_capacity(k);
        for m in messages {
            if let postgres::SimpleQueryMessage::Row(r) = m {
                let ord = r.get(0).and_then(|v| v.parse::<usize>().ok());
                let score = r.get(1).and_then(|v| v.parse::<f32>().ok());
                match (ord, score) {
                    (Some(o), Some(s)) => hits.push((o, s)),
                    _ => {
                        return Err(Error::Database {
                            url: db.shown().to_string(),
                            reason: "a vector search returned a malformed row".into(),
                        })
                    }
                }
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }

    /// Every vector, in chunk order (an indexer reuses them for unchanged text).
    pub fn all(&self) -> Result<Vec<f32>> {
        let db = &self.db;
        let mut c = db.conn()?;
        let mut tx = c.transaction().map_err(|e| db.failed(e))?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .map_err(|e| db.failed(e))?;
        let rows = tx
            .query(
                &format!("SELECT embedding FROM {} ORDER BY ord", self.table),
                &[],
            )
            .map_err(|e| db.failed(e))?;
        tx.commit().map_err(|e| db.failed(e))?;
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for r in rows {
            let v: Vector = r.get(0);
            out.extend_from_slice(v.as_slice());
        }
        Ok(out)
    }
}

/// BM25 computed by the database over the terms stored at index time
/// (`database.lexical = "fts"`): the GIN index finds the chunks holding
/// a query term; the score is tantivy's formula over the stored term
/// frequencies and the generation's document frequencies.
pub struct DbLexical {
    db: Db,
    id: i64,
    terms: QueryTerms,
    chunks: usize,
}

impl DbLexical {
    /// Generation `id`'s lexical search, with the query analysis of its manifest.
    pub fn new(db: Db, id: i64, terms: QueryTerms, chunks: usize) -> DbLexical {
        DbLexical {
            db,
            id,
            terms,
            chunks,
        }
    }

    /// The `k` best chunks as (ordinal, score), best first, equal scores
    /// in chunk order.
    pub fn search(&self, query: &str, k: usize, expand: bool) -> Result<Vec<(usize, f32)>> {
        let weighted = self.terms.weighted(query, expand);
        if weighted.is_empty() {
            return Err(Error::InvalidQuery(format!(
                "{query:?} has no searchable words"
            )));
        }
        // Each term is one quoted lexeme, so no query syntax applies.
        let mut weights: HashMap<String, f32> = HashMap::new();
        for (t, w) in weighted {
            weights.entry(t).or_insert(w);
        }
        let (terms, ws): (Vec<String>, Vec<f32>) = weights.into_iter().unzip();
        let lexemes: Vec<String> = terms.iter().map(|t| lexeme(t)).collect();
        // Per term: its weight in the query × its IDF (BM25's) × PostgreSQL's
        // own saturating term-frequency rank (`ts_rank`, C code: body
        // occurrences weigh 1, heading ones SECTION_WEIGHT; normalised by
        // the log of the chunk's length).
        let sql = format!(
            "WITH q AS (
                 SELECT u.w * ln(1 + ($4::float8 - d.df + 0.5) / (d.df + 0.5)) AS wi,
                        u.l::tsquery AS tq
                 FROM unnest($1::text[], $2::text[], $3::real[]) AS u(t, l, w)
                 JOIN {df} d ON d.term = u.t)
             SELECT c.ord, sum(q.wi * ts_rank('{{0, 0, {SECTION_WEIGHT}, 1}}', c.terms, q.tq, 1))::real AS score
             FROM q JOIN {chunks} c ON c.terms @@ q.tq
             GROUP BY c.ord ORDER BY score DESC, c.ord LIMIT $5",
            df = df_table(self.id),
            chunks = chunk_table(self.id),
        );
        let db = &self.db;
        let mut c = db.conn()?;
        let rows = c
            .query(
                &sql,
                &[&terms, &lexemes, &ws, &(self.chunks as f64), &(k as i64)],
            )
            .map_err(|e| db.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i32>(0) as usize, r.get::<_, f32>(1)))
            .collect())
    }
}
