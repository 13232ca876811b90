//! Index generations on disk, and their one manifest.
//!
//! ```text
//! indexes/
//!   CURRENT                 name of the live generation (replaced by rename)
//!   gen-<millis>-<pid>/     one complete, immutable generation
//!     manifest.json         written last: what was indexed, and how
//!     chunks.jsonl          the chunks; a chunk's ordinal is its line number
//!     bm25/                 tantivy index over the same ordinals
//!   .tmp-gen-…/             a build in progress (or killed): never read
//!   .lock                   held by the one `kbqa index` that may write
//! ```
//!
//! **Invariant:** a reader only ever opens the generation `CURRENT` names, and
//! `CURRENT` only ever names a generation that was completely written and
//! fsynced before the rename. A build that fails or is killed leaves the
//! previous generation live.

pub mod bm25;
pub mod tokenizer;
pub mod vector;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{chunk_corpus, Chunk, ChunkConfig};
use crate::config::VectorConfig;
use crate::corpus::{hex, Corpus, FileHash};
use crate::embed::Embedder;
use crate::error::{Error, IoContext, Result};
use bm25::Bm25Index;
use tokenizer::TokenizerKind;
use vector::{VectorIndex, VectorManifest};

/// Bumped whenever the on-disk layout changes; other versions are refused.
pub const FORMAT_VERSION: u32 = 3;

const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";
const CHUNKS: &str = "chunks.jsonl";
const BM25_DIR: &str = "bm25";
const TMP_PREFIX: &str = ".tmp-";

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
    pub fn from_config(config: &crate::Config, embedding: Option<(String, String)>) -> Self {
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

/// An open, immutable index generation.
pub struct Generation {
    /// Its folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// All chunks; the position is the ordinal every index uses.
    pub chunks: Vec<Chunk>,
    /// The BM25 index.
    pub bm25: Bm25Index,
    /// The vector index, if the generation has one.
    pub vector: Option<VectorIndex>,
}

/// Progress of a build, for a front end to show.
#[derive(Debug, Clone)]
pub enum BuildEvent {
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

/// Opens the live generation in `index_dir`.
pub fn open(index_dir: &Path) -> Result<Generation> {
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
    let dir = index_dir.join(&name);
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
            Some(v)
        }
        None => None,
    };
    Ok(Generation {
        dir,
        manifest,
        chunks,
        bm25,
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
    // Check the format first, so an index from another version says so
    // instead of failing on some renamed field.
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::CorruptIndex {
            path: path.clone(),
            reason: format!("the manifest is not valid JSON ({e})"),
        })?;
    let format = value.get("format").and_then(|v| v.as_u64());
    if format != Some(u64::from(FORMAT_VERSION)) {
        let writer = value
            .get("kbqa_version")
            .and_then(|v| v.as_str())
            .unwrap_or("an unknown program");
        return Err(Error::IncompatibleIndex {
            path: dir.to_path_buf(),
            reason: format!(
                "it was written by {writer} in index format {}, and this kbqa {} reads format {FORMAT_VERSION}",
                format.map_or("?".to_string(), |f| f.to_string()),
                env!("CARGO_PKG_VERSION"),
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::CorruptIndex {
        path,
        reason: format!("the manifest is malformed ({e})"),
    })
}

fn read_chunks(dir: &Path, manifest: &Manifest) -> Result<Vec<Chunk>> {
    let path = dir.join(CHUNKS);
    let bytes = fs::read(&path).at(&path)?;
    let corrupt = |reason: String| Error::CorruptIndex {
        path: path.clone(),
        reason,
    };
    if hex(&Sha256::digest(&bytes)) != manifest.chunks_sha256 {
        return Err(corrupt("its checksum does not match the manifest".into()));
    }
    let mut chunks = Vec::with_capacity(manifest.chunk_count);
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let chunk: Chunk =
            serde_json::from_slice(line).map_err(|e| corrupt(format!("line {}: {e}", i + 1)))?;
        chunks.push(chunk);
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

/// Builds a new generation from `corpus` and makes it live, atomically.
/// Holds `index_dir/.lock` for the duration; clears leftovers of killed
/// builds; keeps the previous generation (a reader may still use it) and
/// removes older ones.
pub fn build(
    index_dir: &Path,
    corpus_root: &Path,
    corpus: &Corpus,
    settings: &IndexSettings,
    vectors: Vectors,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<Manifest> {
    let Vectors {
        embedder,
        config: vector_config,
        reuse_live,
    } = vectors;
    let started = Instant::now();
    fs::create_dir_all(index_dir).at(index_dir)?;
    let lock_path = index_dir.join(".lock");
    let lock = File::create(&lock_path).at(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(Error::IndexLocked(index_dir.to_path_buf()))
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
    }
    remove_leftovers(index_dir);
    // The live generation, if it can be read: its vectors are reused for
    // chunks whose embedded text did not change.
    let previous = if reuse_live {
        open(index_dir).ok()
    } else {
        None
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let generation = format!("gen-{}-{}", now.as_millis(), std::process::id());
    let tmp = index_dir.join(format!("{TMP_PREFIX}{generation}"));
    fs::create_dir(&tmp).at(&tmp)?;
    let inputs = BuildInputs {
        generation: &generation,
        corpus_root,
        corpus,
        settings,
        embedder,
        vector_config,
        created_unix: now.as_secs(),
        previous: previous.as_ref(),
    };
    let result = write_generation(&tmp, &inputs, events);
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    sync_tree(&tmp)?;
    let final_dir = index_dir.join(&generation);
    fs::rename(&tmp, &final_dir).at(&final_dir)?;
    // The generation's name must be durable before CURRENT may point at it.
    sync_dir(index_dir)?;
    let previous = fs::read_to_string(index_dir.join(CURRENT)).ok();
    replace_file(&index_dir.join(CURRENT), generation.as_bytes())?;
    sync_dir(index_dir)?;
    remove_old_generations(index_dir, &generation, previous.as_deref().map(str::trim));
    events(BuildEvent::Done {
        manifest: Box::new(manifest.clone()),
        elapsed_ms: started.elapsed().as_millis(),
    });
    drop(lock);
    Ok(manifest)
}

/// How a build makes its vectors.
pub struct Vectors<'a> {
    /// The passage embedder (`None`: no vector index).
    pub embedder: Option<&'a dyn Embedder>,
    /// The HNSW settings.
    pub config: &'a VectorConfig,
    /// Take the vectors of unchanged chunks from the live generation
    /// (`kbqa index`); `false` embeds everything (`kbqa index --rebuild`).
    pub reuse_live: bool,
}

struct BuildInputs<'a> {
    generation: &'a str,
    corpus_root: &'a Path,
    corpus: &'a Corpus,
    settings: &'a IndexSettings,
    embedder: Option<&'a dyn Embedder>,
    vector_config: &'a VectorConfig,
    created_unix: u64,
    previous: Option<&'a Generation>,
}

fn write_generation(
    dir: &Path,
    inputs: &BuildInputs,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<Manifest> {
    let BuildInputs {
        generation,
        corpus_root,
        corpus,
        settings,
        embedder,
        vector_config,
        created_unix,
        previous,
    } = *inputs;
    let chunks = chunk_corpus(corpus, &settings.chunker);
    events(BuildEvent::Chunked {
        files: corpus.documents.len() + corpus.glossaries.len(),
        chunks: chunks.len(),
    });

    let chunks_path = dir.join(CHUNKS);
    let mut hasher = Sha256::new();
    {
        let file = File::create(&chunks_path).at(&chunks_path)?;
        let mut w = BufWriter::new(file);
        for c in &chunks {
            let mut line = serde_json::to_vec(c).expect("chunks serialise");
            line.push(b'\n');
            hasher.update(&line);
            w.write_all(&line).at(&chunks_path)?;
        }
        w.flush().at(&chunks_path)?;
    }

    let synonyms = synonyms(corpus);
    let bm25_dir = dir.join(BM25_DIR);
    fs::create_dir(&bm25_dir).at(&bm25_dir)?;
    bm25::build(
        &bm25_dir,
        &chunks,
        settings.tokenizer,
        &synonyms,
        &mut |done, total| events(BuildEvent::Bm25 { done, total }),
    )?;
    let bm25_files = checksums(&bm25_dir)?;

    let (added, changed, removed) = file_changes(previous, corpus);
    let vector = match (&settings.embedding, embedder) {
        (Some(es), Some(embedder)) => {
            let texts: Vec<String> = chunks.iter().map(embedding_text).collect();
            let reusable = reusable_vectors(previous, es, embedder.dim());
            let missing: Vec<usize> = (0..texts.len())
                .filter(|&i| !reusable.contains_key(texts[i].as_str()))
                .collect();
            events(BuildEvent::Changes {
                added,
                changed,
                removed,
                reused: texts.len() - missing.len(),
                to_embed: missing.len(),
            });
            let refs: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
            let total = refs.len();
            let step = (total / 50).max(1);
            let fresh = if refs.is_empty() {
                Vec::new()
            } else {
                embedder.embed_passages(&refs, &mut |done| {
                    if done % step == 0 || done == total {
                        events(BuildEvent::Embedding { done, total })
                    }
                })?
            };
            let dim = embedder.dim();
            let mut vectors = Vec::with_capacity(texts.len() * dim);
            let mut fresh_rows = fresh.chunks_exact(dim);
            for text in &texts {
                match reusable.get(text.as_str()) {
                    Some(v) => vectors.extend_from_slice(v),
                    None => vectors.extend_from_slice(fresh_rows.next().ok_or_else(|| {
                        Error::Model("the embedder returned too few vectors".into())
                    })?),
                }
            }
            let files = vector::build(dir, &vectors, embedder.dim(), vector_config)?;
            Some(VectorManifest {
                model: es.model.clone(),
                model_sha256: es.model_sha256.clone(),
                dim: embedder.dim(),
                count: chunks.len(),
                m: es.m,
                ef_construction: es.ef_construction,
                files,
            })
        }
        (Some(_), None) => {
            return Err(Error::Config(
                "an embedding model is configured but none was loaded".into(),
            ))
        }
        (None, _) => {
            events(BuildEvent::Changes {
                added,
                changed,
                removed,
                reused: 0,
                to_embed: 0,
            });
            None
        }
    };

    let manifest = Manifest {
        format: FORMAT_VERSION,
        kbqa_version: env!("CARGO_PKG_VERSION").to_string(),
        generation: generation.to_string(),
        created_unix,
        corpus_root: corpus_root.display().to_string(),
        corpus_hash: corpus.content_hash(),
        files: corpus.file_hashes(),
        skipped: corpus.skipped.iter().map(|b| b.to_string()).collect(),
        settings: settings.clone(),
        synonyms,
        vector,
        chunk_count: chunks.len(),
        chunks_sha256: hex(&hasher.finalize()),
        bm25_files,
    };
    let path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    fs::write(&path, json).at(&path)?;
    Ok(manifest)
}

/// sha256 of every file in `dir` (hidden lock files excepted), by name.
fn checksums(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_file() {
            out.insert(name, crate::models::fetch::sha256_file(&e.path())?);
        }
    }
    Ok(out)
}

/// Checks each file of `files` (name → sha256) in `dir`: a missing or
/// altered one is a damaged index, named.
pub(crate) fn verify_files(dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    for (name, want) in files {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(Error::CorruptIndex {
                path: p,
                reason: "missing".into(),
            });
        }
        if crate::models::fetch::sha256_file(&p)? != *want {
            return Err(Error::CorruptIndex {
                path: p,
                reason: "its checksum does not match the manifest".into(),
            });
        }
    }
    Ok(())
}

/// Files added, changed and removed since `previous` (everything is
/// "added" when there is none).
fn file_changes(
    previous: Option<&Generation>,
    corpus: &Corpus,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let before: std::collections::HashMap<&str, &str> = previous
        .map(|g| {
            g.manifest
                .files
                .iter()
                .map(|f| (f.source.as_str(), f.sha256.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let now = corpus.file_hashes();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for f in &now {
        match before.get(f.source.as_str()) {
            None => added.push(f.source.clone()),
            Some(&h) if h != f.sha256 => changed.push(f.source.clone()),
            Some(_) => {}
        }
    }
    let removed = before
        .keys()
        .filter(|s| !now.iter().any(|f| f.source == **s))
        .map(|s| s.to_string())
        .collect();
    (added, changed, removed)
}

/// The live generation's vectors by embedded text, when they were made by
/// the same model (same file checksum) with the same dimension; otherwise
/// none are reusable.
fn reusable_vectors<'g>(
    previous: Option<&'g Generation>,
    embedding: &EmbeddingSettings,
    dim: usize,
) -> std::collections::HashMap<String, &'g [f32]> {
    let mut map = std::collections::HashMap::new();
    let Some(g) = previous else {
        return map;
    };
    let (Some(vm), Some(vi)) = (&g.manifest.vector, &g.vector) else {
        return map;
    };
    if vm.model_sha256 != embedding.model_sha256 || vm.dim != dim || vi.dim() != dim {
        return map;
    }
    for (ord, chunk) in g.chunks.iter().enumerate() {
        if let Some(v) = vi.vector(ord) {
            map.insert(embedding_text(chunk), v);
        }
    }
    map
}

/// What is embedded for a chunk: its section path (context the passage
/// itself may lack), then its text.
pub fn embedding_text(chunk: &Chunk) -> String {
    let first_line = chunk.text.lines().next().unwrap_or("");
    if chunk.section.is_empty()
        || first_line.contains(chunk.section.rsplit(" > ").next().unwrap_or(""))
    {
        chunk.text.clone()
    } else {
        format!("{}\n{}", chunk.section, chunk.text)
    }
}

/// Each glossary entry's names (term first, then aliases).
fn synonyms(corpus: &Corpus) -> Vec<Vec<String>> {
    corpus
        .glossaries
        .iter()
        .flat_map(|g| g.entries.iter())
        .map(|e| {
            std::iter::once(&e.term)
                .chain(e.aliases.iter())
                .map(|w| w.trim().to_string())
                .collect()
        })
        .collect()
}

/// Writes `path` by writing a sibling and renaming it over, fsynced.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    sync_dir(dir)
}

fn remove_leftovers(index_dir: &Path) {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            tracing::info!("removing an unfinished build: {}", e.path().display());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn remove_old_generations(index_dir: &Path, live: &str, previous: Option<&str>) {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("gen-") && name != live && Some(name.as_str()) != previous {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
