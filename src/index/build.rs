//! Building a local generation: chunk, index with BM25, embed (reusing the live
//! generation's vectors for unchanged text), write the manifest last, then
//! make it live by renaming `CURRENT`, under the one index lock.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::bm25;
use super::files::{checksums, replace_file, sync_dir, sync_tree};
use super::generation::{open, Generation};
use super::manifest::{
    BuildEvent, EmbeddingSettings, IndexSettings, Manifest, BM25_DIR, CHUNKS, CURRENT, MANIFEST,
    TMP_PREFIX,
};
use super::prepare::{
    chunk, chunk_lines, embed_missing, file_changes, manifest_for, report_changes_without_vectors,
    reusable_vectors, Changes, Vectors,
};
use super::vector::{self, VectorManifest};
use crate::chunk::Chunk;
use crate::config::VectorConfig;
use crate::corpus::Corpus;
use crate::engine::Embedder;
use crate::error::{Error, IoContext, Result};

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
        vector_config: _,
        created_unix,
        previous,
    } = *inputs;
    let chunks = chunk(corpus, settings, events);

    let (lines, chunks_sha256) = chunk_lines(&chunks);
    write_lines(&dir.join(CHUNKS), &lines)?;

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

    let changes = file_changes(previous.map(|g| &g.manifest), corpus);
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
            report_changes_without_vectors(changes, events);
            None
        }
    };

    let manifest = Manifest {
        vector,
        bm25_files,
        ..manifest_for(
            generation,
            corpus_root,
            corpus,
            settings,
            created_unix,
            &chunks,
            chunks_sha256,
        )
    };
    let path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    fs::write(&path, json).at(&path)?;
    Ok(manifest)
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

fn write_lines(path: &Path, lines: &[Vec<u8>]) -> Result<()> {
    let file = File::create(path).at(path)?;
    let mut w = BufWriter::new(file);
    for line in lines {
        w.write_all(line).at(path)?;
    }
    w.flush().at(path)
}

/// The vector index of `chunks` in `dir`: vectors of text the live
/// generation already embedded (same model) are reused, the rest embedded.
fn embed(
    dir: &Path,
    chunks: &[Chunk],
    inputs: &BuildInputs,
    es: &EmbeddingSettings,
    embedder: &dyn Embedder,
    changes: Changes,
    events: &mut dyn FnMut(BuildEvent),
) -> Result<VectorManifest> {
    let rows = match inputs.previous.and_then(|g| g.vector.as_ref()) {
        Some(v) => v.rows()?,
        None => Default::default(),
    };
    let reusable = match inputs.previous {
        Some(g) => reusable_vectors(&g.manifest, &g.chunks, &rows, es, embedder.dim()),
        None => Default::default(),
    };
    let vectors = embed_missing(chunks, &reusable, embedder, changes, events)?;
    let files = vector::build(dir, &vectors, embedder.dim(), inputs.vector_config)?;
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
