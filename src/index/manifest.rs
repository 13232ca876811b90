//! What a generation records about itself ([`Manifest`]), what it must
//! match to be live ([`IndexSettings`], [`Freshness`]), and the names of
//! its files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::vector::VectorManifest;
use crate::chunk::{Chunk, ChunkConfig};
use crate::config::{Config, TokenizerKind};
use crate::corpus::{Corpus, FileHash};
use crate::error::{Error, Result};
use crate::hash::hex;

/// Bumped whenever the on-disk layout changes; other versions are refused.
pub const FORMAT_VERSION: u32 = 3;

pub(super) const CURRENT: &str = "CURRENT";
pub(super) const MANIFEST: &str = "manifest.json";
pub(super) const CHUNKS: &str = "chunks.jsonl";
pub(super) const BM25_DIR: &str = "bm25";
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// Reads a manifest, checking its format first: an index written by
/// another version says so instead of failing on some renamed field.
/// `path` is the generation (a folder, or a database table) for messages.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest> {
    // Check the format first, so an index from another version says so
    // instead of failing on some renamed field.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::CorruptIndex {
        path: path.join(MANIFEST),
        reason: format!("the manifest is not valid JSON ({e})"),
    })?;
    let format = value.get("format").and_then(|v| v.as_u64());
    if format != Some(u64::from(FORMAT_VERSION)) {
        let writer = value
            .get("kbqa_version")
            .and_then(|v| v.as_str())
            .unwrap_or("an unknown program");
        return Err(Error::IncompatibleIndex {
            path: path.to_path_buf(),
            reason: format!(
                "it was written by {writer} in index format {}, and this kbqa {} reads format {FORMAT_VERSION}",
                format.map_or("?".to_string(), |f| f.to_string()),
                env!("CARGO_PKG_VERSION"),
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::CorruptIndex {
        path: path.join(MANIFEST),
        reason: format!("the manifest is malformed ({e})"),
    })
}

/// The chunks of `lines` (JSON, without their `\n`), checked against the
/// manifest's count and checksum (over every line and its `\n`).
pub(super) fn parse_chunks<'a>(
    path: &Path,
    manifest: &Manifest,
    lines: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<Chunk>> {
    let corrupt = |reason: String| Error::CorruptIndex {
        path: path.to_path_buf(),
        reason,
    };
    let mut hasher = Sha256::new();
    let mut chunks = Vec::with_capacity(manifest.chunk_count);
    for (i, line) in lines.enumerate() {
        hasher.update(line);
        hasher.update(b"\n");
        let chunk: Chunk =
            serde_json::from_slice(line).map_err(|e| corrupt(format!("line {}: {e}", i + 1)))?;
        chunks.push(chunk);
    }
    if hex(&hasher.finalize()) != manifest.chunks_sha256 {
        return Err(corrupt("its checksum does not match the manifest".into()));
    }
    if chunks.len() != manifest.chunk_count {
        return Err(corrupt(format!(
            "{} chunks, the manifest says {}",
            chunks.len(),
            manifest.chunk_count
        )));
    }
    Ok(chunks)
}

/// What an index was built from and how: everything needed to decide whether
/// it still matches the corpus and the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The kbqa version that wrote it.
    pub kbqa_version: String,
    /// The generation's folder name.
    pub generation: String,
    /// When it was built (seconds since the Unix epoch).
    pub created_unix: u64,
    /// The corpus folder it was built from, as given.
    pub corpus_root: String,
    /// Hash over all file identities ([`crate::corpus::content_hash`]).
    pub corpus_hash: String,
    /// Each indexed file's hash.
    pub files: Vec<FileHash>,
    /// Files refused with `--skip-bad`.
    pub skipped: Vec<String>,
    /// Their identities (those that could be read): while one is
    /// unchanged, opening this index skips it again instead of refusing.
    #[serde(default)]
    pub skipped_files: Vec<FileHash>,
    /// Settings that shape the index.
    pub settings: IndexSettings,
    /// Glossary names, one list per entry (term and aliases): added to the
    /// segmenter's dictionary, and used to expand queries across languages.
    pub synonyms: Vec<Vec<String>>,
    /// The vector index, when the generation has one.
    pub vector: Option<VectorManifest>,
    /// Number of chunks (lines of `chunks.jsonl`, documents in BM25).
    pub chunk_count: usize,
    /// sha256 of `chunks.jsonl`, to catch a damaged file.
    pub chunks_sha256: String,
    /// sha256 of each file of the BM25 index, by name: tantivy does not
    /// check its files on open, and a garbled term dictionary would
    /// otherwise be served.
    pub bm25_files: BTreeMap<String, String>,
}

/// The settings an index depends on; a change means a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSettings {
    /// Chunking.
    pub chunker: ChunkConfig,
    /// BM25 analysis of CJK text.
    pub tokenizer: TokenizerKind,
    /// The embedding model and HNSW shape; `None`: no vector index.
    pub embedding: Option<EmbeddingSettings>,
}

/// Which model embeds the chunks, and the HNSW graph's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSettings {
    /// Model name (or path) as configured.
    pub model: String,
    /// sha256 of the model file: the identity that matters.
    pub model_sha256: String,
    /// HNSW links per node.
    pub m: usize,
    /// HNSW build beam.
    pub ef_construction: usize,
}

impl IndexSettings {
    /// The index-shaping part of a config; `embedding` is the resolved model
    /// (name and file sha256), if vectors are wanted.
    pub fn from_config(config: &Config, embedding: Option<(String, String)>) -> Self {
        IndexSettings {
            chunker: config.chunk.clone(),
            tokenizer: config.bm25.tokenizer,
            embedding: embedding.map(|(model, model_sha256)| EmbeddingSettings {
                model,
                model_sha256,
                m: config.vector.m,
                ef_construction: config.vector.ef_construction,
            }),
        }
    }
}

/// Progress of a build, for a front end to show.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Chunking: `done` of `total` files.
    Chunking {
        /// Files chunked so far.
        done: usize,
        /// Files in all.
        total: usize,
    },
    /// Documents were chunked.
    Chunked {
        /// Files indexed.
        files: usize,
        /// Chunks made.
        chunks: usize,
    },
    /// What changed since the live generation, and what that costs: only
    /// chunks whose embedded text is new are embedded again.
    Changes {
        /// Files new since the live generation.
        added: Vec<String>,
        /// Files whose content changed.
        changed: Vec<String>,
        /// Files gone (their chunks leave every index).
        removed: Vec<String>,
        /// Chunks whose vectors were taken from the live generation.
        reused: usize,
        /// Chunks that will be embedded.
        to_embed: usize,
    },
    /// Chunks embedded so far.
    Embedding {
        /// Done.
        done: usize,
        /// Total.
        total: usize,
    },
    /// BM25 documents written so far.
    Bm25 {
        /// Done.
        done: usize,
        /// Total.
        total: usize,
    },
    /// The new generation is live.
    Done {
        /// Its manifest.
        manifest: Box<Manifest>,
        /// Wall time of the build in milliseconds.
        elapsed_ms: u128,
    },
}

/// Whether a generation matches the corpus and settings at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Usable as is.
    Fresh,
    /// Must be rebuilt, for this reason.
    Stale(String),
}

impl Manifest {
    /// Compares against the corpus and settings at hand.
    pub fn freshness(&self, corpus: &Corpus, settings: &IndexSettings) -> Freshness {
        if self.settings != *settings {
            let mut what = Vec::new();
            if self.settings.chunker != settings.chunker {
                what.push("chunking");
            }
            if self.settings.tokenizer != settings.tokenizer {
                what.push("tokenizer");
            }
            if self.settings.embedding != settings.embedding {
                what.push("embedding model or vector index");
            }
            return Freshness::Stale(format!("the {} settings changed", what.join(" and ")));
        }
        let skipped: Vec<String> = corpus.skipped.iter().map(|b| b.to_string()).collect();
        if self.corpus_hash == corpus.content_hash() && self.skipped != skipped {
            return Freshness::Stale("the set of skipped bad files changed".into());
        }
        if self.corpus_hash != corpus.content_hash() {
            let old: BTreeMap<&str, &str> = self
                .files
                .iter()
                .map(|f| (f.source.as_str(), f.sha256.as_str()))
                .collect();
            let new = corpus.file_hashes();
            let added = new
                .iter()
                .filter(|f| !old.contains_key(f.source.as_str()))
                .count();
            let changed = new
                .iter()
                .filter(|f| old.get(f.source.as_str()).is_some_and(|h| *h != f.sha256))
                .count();
            let removed = (old.len() + added).saturating_sub(new.len());
            return Freshness::Stale(format!(
                "the corpus changed ({added} file(s) added, {changed} changed, {removed} removed)"
            ));
        }
        Freshness::Fresh
    }
}
