//! Writing a generation to the database: chunk, embed (reusing the live
//! generation's vectors for unchanged text), then one transaction that
//! creates the generation's tables, fills them with `COPY`, builds the
//! HNSW and GIN indexes, moves the live pointer and notifies replicas.
//! Older generations are dropped after the commit; the previous live one
//! is kept for requests still reading it.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::db::{chunk_table, df_table, lexeme, Db, CHANNEL};
use super::read::{self, DbVectors};
use crate::chunk::Chunk;
use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::index::bm25::QueryTerms;
use crate::index::manifest::{parse_chunks, BuildEvent, IndexSettings, Manifest};
use crate::index::prepare::{
    chunk, chunk_lines, embed_missing, file_changes, manifest_for, report_changes_without_vectors,
    reusable_vectors, Changes, Vectors,
};
use crate::index::tokenizer;
use crate::index::vector::VectorManifest;

/// Positions PostgreSQL keeps per lexeme, and its largest position.
const MAX_POSITIONS: usize = 255;
const MAX_POSITION: usize = 16383;
/// Longest lexeme PostgreSQL accepts, in bytes (2 KiB, less a margin).
const MAX_LEXEME: usize = 2000;

/// Builds a new generation of knowledge base `kb` from `corpus` and makes
/// it live, atomically; only one indexer per knowledge base at a time.
pub fn build(
    db: &Db,
    kb: &str,
    corpus_root: &Path,
    corpus: &Corpus,
    settings: &IndexSettings,
    vectors: Vectors,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<Manifest> {
    let started = Instant::now();
    let mut conn = lock(db, kb)?;
    let previous = match vectors.reuse_live {
        true => live(db, kb)?,
        false => None,
    };
    let chunks = chunk(corpus, settings, events);
    let (lines, chunks_sha256) = chunk_lines(&chunks);
    let changes = file_changes(previous.as_ref().map(|p| &p.manifest), corpus);
    let vectors = embed(
        db,
        kb,
        &chunks,
        previous.as_ref(),
        settings,
        &vectors,
        changes,
        events,
    )?;

    let id: i64 = conn
        .query_one("SELECT nextval('kbqa_generation_ids')", &[])
        .map_err(|e| db.failed(e))?
        .get(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!("pg-{id}");
    let mut manifest = manifest_for(
        &name,
        corpus_root,
        corpus,
        settings,
        now.as_secs(),
        &chunks,
        chunks_sha256,
    );
    manifest.vector = match (&settings.embedding, &vectors) {
        (Some(es), Some((_, dim))) => Some(VectorManifest {
            model: es.model.clone(),
            model_sha256: es.model_sha256.clone(),
            dim: *dim,
            count: chunks.len(),
            m: es.m,
            ef_construction: es.ef_construction,
            files: BTreeMap::new(),
        }),
        _ => None,
    };
    let terms = Terms::of(&chunks, &manifest, events);
    let rows = Rows {
        lines: &lines,
        terms: &terms,
        vectors: vectors.as_ref().map(|(v, dim)| (v.as_slice(), *dim)),
    };
    publish(db, &mut conn, kb, id, &manifest, &rows)?;
    collect_garbage(db, &mut conn, kb);
    events(BuildEvent::Done {
        manifest: Box::new(manifest.clone()),
        elapsed_ms: started.elapsed().as_millis(),
    });
    Ok(manifest)
}

/// A session of its own holding knowledge base `kb`'s indexer lock (an
/// advisory lock, released when the session ends, however it ends).
fn lock(db: &Db, kb: &str) -> Result<postgres::Client> {
    let mut conn = db.dedicated()?;
    let digest = Sha256::digest(format!("kbqa-index:{kb}").as_bytes());
    let key = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let locked: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .map_err(|e| db.failed(e))?
        .get(0);
    if !locked {
        return Err(Error::IndexLocked(format!("{}#{kb}", db.shown()).into()));
    }
    Ok(conn)
}

/// The live generation, if it can be read: its vectors are reused for
/// chunks whose embedded text did not change. One that cannot be read
/// (another format, damaged) is built over, as on disk.
fn live(db: &Db, kb: &str) -> Result<Option<read::Snapshot>> {
    match read::open(db, kb) {
        Ok(p) => Ok(p),
        Err(e @ Error::DatabaseUnreachable { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(
                kb,
                "the live generation cannot be read, so nothing is reused: {e}"
            );
            Ok(None)
        }
    }
}
/// Every chunk's vector (and the dimension), or `None` without an
/// embedding model.
#[allow(clippy::too_many_arguments)]
fn embed(
    db: &Db,
    kb: &str,
    chunks: &[Chunk],
    previous: Option<&read::Snapshot>,
    settings: &IndexSettings,
    vectors: &Vectors,
    changes: Changes,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<Option<(Vec<f32>, usize)>> {
    let (es, embedder) = match (&settings.embedding, vectors.embedder) {
        (Some(es), Some(e)) => (es, e),
        (Some(_), None) => {
            return Err(Error::Config(
                "an embedding model is configured but none was loaded".into(),
            ))
        }
        (None, _) => {
            report_changes_without_vectors(changes, events);
            return Ok(None);
        }
    };
    let dim = embedder.dim();
    // The live generation's chunks and vectors, for text that did not change.
    let old = match previous {
        Some(p) if p.manifest.vector.as_ref().is_some_and(|v| v.dim == dim) => {
            let lines = p.lines.iter().map(|l| l.as_bytes());
            parse_chunks(&read::location(db, kb, p.id), &p.manifest, lines).and_then(|chunks| {
                let rows = DbVectors::new(db.clone(), p.id, dim, chunks.len()).all()?;
                Ok((chunks, rows))
            })
        }
        _ => Ok((Vec::new(), Vec::new())),
    };
    let (old_chunks, old_rows) = match old {
        Ok(old) => old,
        Err(e @ Error::DatabaseUnreachable { .. }) => return Err(e),
        Err(e) => {
            tracing::warn!(
                kb,
                "the live vectors cannot be read, so none are reused: {e}"
            );
            (Vec::new(), Vec::new())
        }
    };
    let reusable = match previous {
        Some(p) => reusable_vectors(&p.manifest, &old_chunks, &old_rows, es, dim),
        None => HashMap::new(),
    };
    Ok(Some((
        embed_missing(chunks, &reusable, embedder, changes, events)?,
        dim,
    )))
}

/// Each chunk's terms as a `tsvector` literal, and every term's document
/// frequency: kbqa's own analysis
/// (jieba), stored so the database never tokenises Chinese itself.
struct Terms {
    vectors: Vec<String>,
    df: HashMap<String, i32>,
}

impl Terms {
    fn of(chunks: &[Chunk], manifest: &Manifest, events: &mut dyn FnMut(BuildEvent)) -> Terms {
        let mut analyzer =
            QueryTerms::new(manifest.settings.tokenizer, &manifest.synonyms).analyzer();
        let mut out = Terms {
            vectors: Vec::with_capacity(chunks.len()),
            df: HashMap::new(),
        };
        let step = (chunks.len() / 20).max(500);
        for (i, c) in chunks.iter().enumerate() {
            let body = tokenizer::terms(&mut analyzer, &c.text);
            let section = tokenizer::terms(&mut analyzer, &c.section);
            // Body positions are labelled A, the heading's B (after them).
            let mut positions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (pos, (t, label)) in body
                .iter()
                .map(|t| (t, 'A'))
                .chain(section.iter().map(|t| (t, 'B')))
                .enumerate()
            {
                if t.len() <= MAX_LEXEME {
                    let p = positions.entry(t).or_default();
                    if p.len() < MAX_POSITIONS {
                        p.push(format!("{}{label}", (pos + 1).min(MAX_POSITION)));
                    }
                }
            }
            for t in positions.keys() {
                *out.df.entry(t.to_string()).or_default() += 1;
            }
            let literal: Vec<String> = positions
                .iter()
                .map(|(t, p)| format!("{}:{}", lexeme(t), p.join(",")))
                .collect();
            out.vectors.push(literal.join(" "));
            if (i + 1) % step == 0 {
                events(BuildEvent::Bm25 {
                    done: i + 1,
                    total: chunks.len(),
                });
            }
        }
        events(BuildEvent::Bm25 {
            done: chunks.len(),
            total: chunks.len(),
        });
        out
    }
}

/// What one generation's tables hold.
struct Rows<'a> {
    lines: &'a [Vec<u8>],
    terms: &'a Terms,
    vectors: Option<(&'a [f32], usize)>,
}

/// The one transaction that writes generation `id` and makes it live.
fn publish(
    db: &Db,
    conn: &mut postgres::Client,
    kb: &str,
    id: i64,
    manifest: &Manifest,
    rows: &Rows,
) -> Result<()> {
    let failed = |e| db.failed(e);
    let (chunks, df) = (chunk_table(id), df_table(id));
    let dim = rows.vectors.map(|(_, d)| d);
    let mut tx = conn.transaction().map_err(failed)?;
    // pgvector builds its graph in memory when it fits.
    tx.batch_execute("SET LOCAL maintenance_work_mem = '1GB'")
        .map_err(failed)?;
    tx.execute(
        "INSERT INTO kbqa_generations (id, kb, name, manifest, dim)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &kb,
            &manifest.generation,
            &serde_json::to_string(manifest).expect("manifest serialises"),
            &dim.map(|d| d as i32),
        ],
    )
    .map_err(failed)?;
    let embedding = match dim {
        Some(d) => format!("vector({d})"),
        None => "vector".into(),
    };
    tx.batch_execute(&format!(
        "CREATE TABLE {chunks} (
             ord integer PRIMARY KEY,
             chunk text NOT NULL,
             terms tsvector NOT NULL,
             embedding {embedding});
         CREATE TABLE {df} (term text PRIMARY KEY, df integer NOT NULL);"
    ))
    .map_err(failed)?;
    copy_chunks(db, &mut tx, &chunks, rows)?;
    copy_df(db, &mut tx, &df, &rows.terms.df)?;
    if let (Some(_), Some(v)) = (dim, &manifest.vector) {
        tx.batch_execute(&format!(
            "CREATE INDEX ON {chunks} USING hnsw (embedding vector_cosine_ops)
             WITH (m = {}, ef_construction = {})",
            v.m.clamp(2, 100),
            v.ef_construction.clamp(4, 1000)
        ))
        .map_err(failed)?;
    }
    tx.batch_execute(&format!(
        "CREATE INDEX ON {chunks} USING gin (terms); ANALYZE {chunks}; ANALYZE {df};"
    ))
    .map_err(failed)?;
    tx.execute(
        "UPDATE kbqa_generations SET replaced_at = now()
         WHERE id = (SELECT generation FROM kbqa_live WHERE kb = $1)",
        &[&kb],
    )
    .map_err(failed)?;
    tx.execute(
        "INSERT INTO kbqa_live (kb, generation) VALUES ($1, $2)
         ON CONFLICT (kb) DO UPDATE SET generation = excluded.generation, switched_at = now()",
        &[&kb, &id],
    )
    .map_err(failed)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &kb])
        .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Escapes a field for `COPY … FROM STDIN` (text format).
fn copy_field(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

fn copy_chunks(db: &Db, tx: &mut postgres::Transaction, table: &str, rows: &Rows) -> Result<()> {
    let copy = tx
        .copy_in(&format!(
            "COPY {table} (ord, chunk, terms, embedding) FROM STDIN"
        ))
        .map_err(|e| db.failed(e))?;
    let mut w = BufWriter::with_capacity(1 << 20, copy);
    let mut row = Vec::new();
    for (ord, line) in rows.lines.iter().enumerate() {
        row.clear();
        let json = std::str::from_utf8(line).expect("JSON is UTF-8");
        row.extend_from_slice(format!("{ord}\t").as_bytes());
        copy_field(&mut row, json.strip_suffix('\n').unwrap_or(json));
        row.push(b'\t');
        copy_field(&mut row, &rows.terms.vectors[ord]);
        row.push(b'\t');
        match rows.vectors {
            Some((v, dim)) => {
                let numbers: Vec<String> = v[ord * dim..(ord + 1) * dim]
                    .iter()
                    .map(f32::to_string)
                    .collect();
                row.extend_from_slice(format!("[{}]", numbers.join(",")).as_bytes());
            }
            None => row.extend_from_slice(b"\\N"),
        }
        row.push(b'\n');
        w.write_all(&row).map_err(|e| copy_error(db, e))?;
    }
    let copy = w.into_inner().map_err(|e| copy_error(db, e.into_error()))?;
    copy.finish().map_err(|e| db.failed(e))?;
    Ok(())
}

fn copy_df(
    db: &Db,
    tx: &mut postgres::Transaction,
    table: &str,
    df: &HashMap<String, i32>,
) -> Result<()> {
    let copy = tx
        .copy_in(&format!("COPY {table} (term, df) FROM STDIN"))
        .map_err(|e| db.failed(e))?;
    let mut w = BufWriter::with_capacity(1 << 20, copy);
    let mut row = Vec::new();
    for (term, n) in df {
        row.clear();
        copy_field(&mut row, term);
        row.extend_from_slice(format!("\t{n}\n").as_bytes());
        w.write_all(&row).map_err(|e| copy_error(db, e))?;
    }
    let copy = w.into_inner().map_err(|e| copy_error(db, e.into_error()))?;
    copy.finish().map_err(|e| db.failed(e))?;
    Ok(())
}

fn copy_error(db: &Db, e: std::io::Error) -> Error {
    Error::DatabaseUnreachable {
        url: db.shown().to_string(),
        reason: format!("writing the generation: {e}"),
    }
}

/// Drops the generations of `kb` replaced more than
/// `database.keep_replaced_secs` ago, but for the one live before the
/// live one. A failure is logged, not returned: the build succeeded, and
/// the next one collects again.
fn collect_garbage(db: &Db, conn: &mut postgres::Client, kb: &str) {
    let result = (|| -> Result<usize> {
        let failed = |e| db.failed(e);
        let ids: Vec<i64> = conn
            .query(
                "SELECT id FROM (
                     SELECT id, replaced_at FROM kbqa_generations
                     WHERE kb = $1 AND replaced_at IS NOT NULL
                     ORDER BY id DESC OFFSET 1) old
                 WHERE replaced_at < now() - make_interval(secs => $2)",
                &[&kb, &(db.keep_replaced_secs() as f64)],
            )
            .map_err(failed)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            let mut tx = conn.transaction().map_err(failed)?;
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
                chunk_table(*id),
                df_table(*id)
            ))
            .map_err(failed)?;
            tx.execute("DELETE FROM kbqa_generations WHERE id = $1", &[id])
                .map_err(failed)?;
            tx.commit().map_err(failed)?;
        }
        Ok(ids.len())
    })();
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(kb, dropped = n, "old generations removed"),
        Err(e) => tracing::warn!(kb, "old generations not removed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_lexemes_are_escaped_for_copy_and_tsvector() {
        let mut out = Vec::new();
        copy_field(&mut out, "a\tb\\c\nd\re");
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
        assert_eq!(lexeme("don't"), "'don''t'");
        assert_eq!(lexeme("a\\b"), "'a\\\\b'");
        assert_eq!(lexeme("数据并行"), "'数据并行'");
    }
}
