//! Opening a generation: the one `CURRENT` names, checked whole
//! (manifest, chunk checksum, BM25 and vector files) before it is used.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bm25::Bm25Index;
use super::files::verify_files;
use super::manifest::{Manifest, BM25_DIR, CHUNKS, CURRENT, FORMAT_VERSION, MANIFEST};
use super::vector::VectorIndex;
use crate::chunk::Chunk;
use crate::error::{Error, IoContext, Result};
use crate::hash::hex;

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
