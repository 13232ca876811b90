//! Opening a generation: the one `CURRENT` names, checked whole
//! (manifest, chunk checksum, BM25 and vector files) before it is used;
//! or the live one of a knowledge base in the shared database.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bm25::{self, Bm25Index, QueryTerms};
use super::files::verify_files;
use super::manifest::{
    parse_chunks, parse_manifest, Manifest, BM25_DIR, CHUNKS, CURRENT, MANIFEST,
};
use super::pg::{self, Db, DbLexical, DbVectors};
use super::vector::VectorIndex;
use crate::chunk::Chunk;
use crate::config::LexicalEngine;
use crate::error::{Error, IoContext, Result};
use crate::hash::hex;

/// An open, immutable index generation.
pub struct Generation {
    /// Its folder (or, in the database, its table), for messages.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// All chunks; the position is the ordinal every index uses.
    pub chunks: Vec<Chunk>,
    /// The lexical (BM25) index.
    pub bm25: Lexical,
    /// The vector index, if the generation has one.
    pub vector: Option<Vectors>,
}

/// Where BM25 runs.
pub enum Lexical {
    /// A tantivy index: the generation's own files, or built in memory
    /// from the database's chunk table.
    Tantivy(Bm25Index),
    /// The database's full-text index.
    Database(DbLexical),
}

impl Lexical {
    /// The `k` best chunks as (ordinal, BM25 score), best first, equal
    /// scores in chunk order; `expand` turns glossary expansion on.
    pub fn search(&self, query: &str, k: usize, expand: bool) -> Result<Vec<(usize, f32)>> {
        match self {
            Lexical::Tantivy(i) => i.search(query, k, expand),
            Lexical::Database(i) => i.search(query, k, expand),
        }
    }
}

/// Where vectors are searched.
pub enum Vectors {
    /// The generation's HNSW files, in this process.
    Local(VectorIndex),
    /// pgvector, in the database.
    Database(DbVectors),
}

impl Vectors {
    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        match self {
            Vectors::Local(v) => v.dim(),
            Vectors::Database(v) => v.dim(),
        }
    }

    /// How many vectors.
    pub fn len(&self) -> usize {
        match self {
            Vectors::Local(v) => v.len(),
            Vectors::Database(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` nearest chunks as (ordinal, cosine similarity), best first:
    /// exact when `exact`, through the HNSW graph (`ef`) otherwise.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        exact: bool,
    ) -> Result<Vec<(usize, f32)>> {
        match self {
            Vectors::Local(v) if exact => Ok(v.search_exact(query, k)),
            Vectors::Local(v) => Ok(v.search(query, k, ef)),
            Vectors::Database(v) => v.search(query, k, ef, exact),
        }
    }

    /// Every vector, in chunk order.
    pub fn rows(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match self {
            Vectors::Local(v) => Ok(std::borrow::Cow::Borrowed(v.rows())),
            Vectors::Database(v) => Ok(std::borrow::Cow::Owned(v.all()?)),
        }
    }
}

/// Opens the live generation of knowledge base `kb` in the database, or
/// `None` if it has never been indexed there. Chunks are checked against
/// the manifest's checksum as on disk; BM25 runs as `lexical` says.
pub fn open_db(db: &Db, kb: &str, lexical: LexicalEngine) -> Result<Option<Generation>> {
    let Some(snap) = pg::open(db, kb)? else {
        return Ok(None);
    };
    let dir = pg::location(db, kb, snap.id);
    let chunks = parse_chunks(
        &dir,
        &snap.manifest,
        snap.lines.iter().map(|l| l.as_bytes()),
    )?;
    let (kind, synonyms) = (snap.manifest.settings.tokenizer, &snap.manifest.synonyms);
    let bm25 = match lexical {
        LexicalEngine::Tantivy => Lexical::Tantivy(bm25::build_in_ram(&chunks, kind, synonyms)?),
        LexicalEngine::Fts => Lexical::Database(DbLexical::new(
            db.clone(),
            snap.id,
            QueryTerms::new(kind, synonyms),
            chunks.len(),
        )),
    };
    let vector = snap
        .manifest
        .vector
        .as_ref()
        .map(|vm| Vectors::Database(DbVectors::new(db.clone(), snap.id, vm.dim, chunks.len())));
    Ok(Some(Generation {
        dir,
        manifest: snap.manifest,
        chunks,
        bm25,
        vector,
    }))
}

/// The folder of the generation `CURRENT` names.
fn live_dir(index_dir: &Path) -> Result<PathBuf> {
    let current = index_dir.join(CURRENT);
    let name = match fs::read_to_string(&current) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoIndex(index_dir.to_path_buf()))
        }
        Err(e) => return Err(Error::io(&current, e)),
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::CorruptIndex {
            path: current,
            reason: format!("{name:?} is not a generation name"),
        });
    }
    Ok(index_dir.join(name))
}

/// The live generation's manifest, without opening its indexes (to
/// list knowledge bases, or to learn which files it skipped).
pub fn live_manifest(index_dir: &Path) -> Result<Manifest> {
    read_manifest(&live_dir(index_dir)?)
}

/// Opens the live generation in `index_dir`.
pub fn open(index_dir: &Path) -> Result<Generation> {
    let dir = live_dir(index_dir)?;
    let manifest = read_manifest(&dir)?;
    let chunks = read_chunks(&dir, &manifest)?;
    verify_files(&dir.join(BM25_DIR), &manifest.bm25_files)?;
    let bm25 = Bm25Index::open(
        &dir.join(BM25_DIR),
        manifest.settings.tokenizer,
        &manifest.synonyms,
    )?;
    if bm25.num_docs() != chunks.len() as u64 {
        return Err(Error::CorruptIndex {
            path: dir.join(BM25_DIR),
            reason: format!(
                "it holds {} documents but the manifest lists {} chunks",
                bm25.num_docs(),
                chunks.len()
            ),
        });
    }
    let vector = match &manifest.vector {
        Some(vm) => {
            let v = VectorIndex::open(&dir, vm)?;
            if v.len() != chunks.len() {
                return Err(Error::CorruptIndex {
                    path: dir.clone(),
                    reason: format!("{} vectors for {} chunks", v.len(), chunks.len()),
                });
            }
            Some(Vectors::Local(v))
        }
        None => None,
    };
    Ok(Generation {
        dir,
        manifest,
        chunks,
        bm25: Lexical::Tantivy(bm25),
        vector,
    })
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::CorruptIndex {
                path,
                reason: "the manifest is missing".into(),
            })
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    parse_manifest(&text, dir)
}

fn read_chunks(dir: &Path, manifest: &Manifest) -> Result<Vec<Chunk>> {
    let path = dir.join(CHUNKS);
    let bytes = fs::read(&path).at(&path)?;
    // The file whole first: a stray blank line is damage too.
    if hex(&Sha256::digest(&bytes)) != manifest.chunks_sha256 {
        return Err(Error::CorruptIndex {
            path,
            reason: "its checksum does not match the manifest".into(),
        });
    }
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    parse_chunks(&path, manifest, lines)
}
