//! Building a generation: chunk, index with BM25, embed (reusing the live
//! generation's vectors for unchanged text), write the manifest last, then
//! make it live by renaming `CURRENT`, under the one index lock.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::bm25;
use super::files::{checksums, replace_file, sync_dir, sync_tree};
use super::generation::{open, Generation};
use super::manifest::{
    BuildEvent, EmbeddingSettings, IndexSettings, Manifest, BM25_DIR, CHUNKS, CURRENT,
    FORMAT_VERSION, MANIFEST, TMP_PREFIX,
};
use super::vector::{self, VectorManifest};
use crate::chunk::{chunk_corpus_with, Chunk};
use crate::config::VectorConfig;
use crate::corpus::Corpus;
use crate::engine::Embedder;
use crate::error::{Error, IoContext, Result};
use crate::hash::hex;

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

/// The corpus's chunks, with progress per file and a count at the end.
fn chunk(
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
        vector_config: _,
        created_unix,
        previous,
    } = *inputs;
    let chunks = chunk(corpus, settings, events);

    let chunks_sha256 = write_chunks(dir, &chunks)?;

    let synonyms = corpus.synonyms();
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

    let changes = file_changes(previous, corpus);
    let vector = match (&settings.embedding, embedder) {
        (Some(es), Some(embedder)) => {
            Some(embed(dir, &chunks, inputs, es, embedder, changes, events)?)
        }
        (Some(_), None) => {
            return Err(Error::Config(
                "an embedding model is configured but none was loaded".into(),
            ))
        }
        (None, _) => {
            let (added, changed, removed) = changes;
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
        skipped_files: corpus.skipped_hashes.clone(),
        settings: settings.clone(),
        synonyms,
        vector,
        chunk_count: chunks.len(),
        chunks_sha256,
        bm25_files,
    };
    let path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    fs::write(&path, json).at(&path)?;
    Ok(manifest)
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

/// Files added, changed and removed since the live generation.
type Changes = (Vec<String>, Vec<String>, Vec<String>);

/// The chunks, one JSON line each, to `chunks.jsonl`; returns the file's sha256.
fn write_chunks(dir: &Path, chunks: &[Chunk]) -> Result<String> {
    let chunks_path = dir.join(CHUNKS);
    let mut hasher = Sha256::new();
    let file = File::create(&chunks_path).at(&chunks_path)?;
    let mut w = BufWriter::new(file);
    for c in chunks {
        let mut line = serde_json::to_vec(c).expect("chunks serialise");
        line.push(b'\n');
        hasher.update(&line);
        w.write_all(&line).at(&chunks_path)?;
    }
    w.flush().at(&chunks_path)?;
    Ok(hex(&hasher.finalize()))
}

/// The vector index of `chunks` in `dir`: vectors of text the live
/// generation already embedded (same model) are reused, the rest embedded.
fn embed(
    dir: &Path,
    chunks: &[Chunk],
    inputs: &BuildInputs,
    es: &EmbeddingSettings,
    embedder: &dyn Embedder,
    (added, changed, removed): Changes,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<VectorManifest> {
    let (previous, vector_config) = (inputs.previous, inputs.vector_config);
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
            None => vectors.extend_from_slice(
                fresh_rows
                    .next()
                    .ok_or_else(|| Error::Model("the embedder returned too few vectors".into()))?,
            ),
        }
    }
    let files = vector::build(dir, &vectors, embedder.dim(), vector_config)?;
    Ok(VectorManifest {
        model: es.model.clone(),
        model_sha256: es.model_sha256.clone(),
        dim: embedder.dim(),
        count: chunks.len(),
        m: es.m,
        ef_construction: es.ef_construction,
        files,
    })
}
