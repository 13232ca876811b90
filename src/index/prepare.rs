//! The half of a build that does not depend on where the generation is
//! stored: chunking, the chunks' JSON lines and checksum, which files
//! changed, the vectors (reused for unchanged text, embedded otherwise)
//! and the manifest. The local backend ([`super::build`]) and the
//! database ([`super::pg`]) each write the result their own way.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{BuildEvent, EmbeddingSettings, IndexSettings, Manifest, FORMAT_VERSION};
use crate::chunk::{chunk_corpus_with, Chunk};
use crate::config::VectorConfig;
use crate::corpus::Corpus;
use crate::engine::{fill_in, Embedder};
use crate::error::Result;
use crate::hash::hex;

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

/// The corpus's chunks, with progress per file and a count at the end.
pub fn chunk(
    corpus: &Corpus,
    settings: &IndexSettings,
    events: &mut dyn FnMut(BuildEvent),
) -> Vec<Chunk> {
    let chunks = chunk_corpus_with(corpus, &settings.chunker, &mut |done, total| {
        events(BuildEvent::Chunking { done, total })
    });
    events(BuildEvent::Chunked {
        files: corpus.documents.len() + corpus.glossaries.len(),
        chunks: chunks.len(),
    });
    chunks
}

/// A generation's manifest, but for its vector and BM25 files.
pub fn manifest_for(
    generation: &str,
    corpus_root: &Path,
    corpus: &Corpus,
    settings: &IndexSettings,
    created_unix: u64,
    chunks: &[Chunk],
    chunks_sha256: String,
) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        kbqa_version: env!("CARGO_PKG_VERSION").to_string(),
        generation: generation.to_string(),
        created_unix,
        corpus_root: corpus_root.display().to_string(),
        corpus_hash: corpus.content_hash(),
        files: corpus.file_hashes(),
        skipped: corpus.skipped.iter().map(|b| b.to_string()).collect(),
        skipped_files: corpus.skipped_hashes.clone(),
        settings: settings.clone(),
        synonyms: corpus.synonyms(),
        vector: None,
        chunk_count: chunks.len(),
        chunks_sha256,
        bm25_files: BTreeMap::new(),
    }
}

/// Files added, changed and removed since `previous` (everything is
/// "added" when there is none).
pub fn file_changes(previous: Option<&Manifest>, corpus: &Corpus) -> Changes {
    let before: HashMap<&str, &str> = previous
        .map(|m| {
            m.files
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
/// none are reusable. `rows` holds its vectors in chunk order.
pub fn reusable_vectors<'g>(
    previous: &Manifest,
    chunks: &'g [Chunk],
    rows: &'g [f32],
    embedding: &EmbeddingSettings,
    dim: usize,
) -> HashMap<String, &'g [f32]> {
    let mut map = HashMap::new();
    let Some(vm) = &previous.vector else {
        return map;
    };
    if vm.model_sha256 != embedding.model_sha256
        || vm.dim != dim
        || rows.len() != chunks.len() * dim
    {
        return map;
    }
    for (chunk, v) in chunks.iter().zip(rows.chunks_exact(dim)) {
        map.insert(embedding_text(chunk), v);
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

/// Reports `changes` for a build with no vectors (nothing reused or embedded).
pub fn report_changes_without_vectors(changes: Changes, events: &mut dyn FnMut(BuildEvent)) {
    let (added, changed, removed) = changes;
    events(BuildEvent::Changes {
        added,
        changed,
        removed,
        reused: 0,
        to_embed: 0,
    });
}

/// Files added, changed and removed since the live generation.
pub type Changes = (Vec<String>, Vec<String>, Vec<String>);

/// The chunks as JSON lines (each ending in `\n`), and the sha256 of
/// all of them: the bytes of `chunks.jsonl`, or of the chunk table's rows.
pub fn chunk_lines(chunks: &[Chunk]) -> (Vec<Vec<u8>>, String) {
    let mut hasher = Sha256::new();
    let lines = chunks
        .iter()
        .map(|c| {
            let mut line = serde_json::to_vec(c).expect("chunks serialise");
            line.push(b'\n');
            hasher.update(&line);
            line
        })
        .collect();
    (lines, hex(&hasher.finalize()))
}

/// Every chunk's vector, in chunk order, one row of `embedder.dim()`
/// each: `reusable` ones (by embedded text) as they are, the rest embedded.
pub fn embed_missing(
    chunks: &[Chunk],
    reusable: &HashMap<String, &[f32]>,
    embedder: &dyn Embedder,
    (added, changed, removed): Changes,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<Vec<f32>> {
    let texts: Vec<String> = chunks.iter().map(embedding_text).collect();
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
    fill_in(
        &texts,
        |text| reusable.get(text.as_str()).copied(),
        &fresh,
        embedder.dim(),
    )
}
