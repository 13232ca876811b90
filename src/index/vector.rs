//! The vector index: unit-length chunk embeddings, searched with HNSW
//! (hnsw_rs) or exactly (brute force, for checks and tiny corpora).
//!
//! Files (in the generation folder): `vectors.f32` (our own: a header and
//! the vectors, row = chunk ordinal) and hnsw_rs's dump `hnsw.hnsw.graph` /
//! `hnsw.hnsw.data`. hnsw_rs validates little when loading (a truncated file
//! can panic or even exit the process), so every file's sha256 is checked
//! against the manifest *before* it is handed to hnsw_rs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo, ReloadOptions};
use serde::{Deserialize, Serialize};

use crate::config::VectorConfig;
use crate::error::{Error, IoContext, Result};

const VECTORS: &str = "vectors.f32";
const HNSW_BASE: &str = "hnsw";
const MAGIC: &[u8; 8] = b"KBQAVEC1";
/// hnsw_rs can only dump graphs built with its maximum layer count.
const MAX_LAYER: usize = 16;

/// `1 - <a, b>` for unit vectors, clamped to `[0, 2]`: cosine distance
/// without hnsw_rs's `DistDot` assertion, which fires on rounding.
#[derive(Default, Clone, Copy, Debug)]
pub struct DistUnitDot;

impl Distance<f32> for DistUnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).clamp(0.0, 2.0)
    }
}

/// Dot product with 8 independent accumulators, so it vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// What the manifest records about the vector index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorManifest {
    /// The embedding model's name.
    pub model: String,
    /// The embedding model file's sha256: vectors from another model are refused.
    pub model_sha256: String,
    /// Vector dimension.
    pub dim: usize,
    /// Number of vectors (= chunks).
    pub count: usize,
    /// HNSW links per node.
    pub m: usize,
    /// HNSW build beam.
    pub ef_construction: usize,
    /// sha256 of each file, by name.
    pub files: BTreeMap<String, String>,
}

/// An open vector index.
pub struct VectorIndex {
    dim: usize,
    vectors: Vec<f32>,
    hnsw: Option<Hnsw<'static, f32, DistUnitDot>>,
}

/// Writes the vectors and their HNSW graph into `dir`; returns the file
/// checksums for the manifest.
pub fn build(
    dir: &Path,
    vectors: &[f32],
    dim: usize,
    config: &VectorConfig,
) -> Result<BTreeMap<String, String>> {
    let n = vectors.len() / dim.max(1);
    let path = dir.join(VECTORS);
    {
        let mut w = BufWriter::new(File::create(&path).at(&path)?);
        w.write_all(MAGIC).at(&path)?;
        w.write_all(&(dim as u64).to_le_bytes()).at(&path)?;
        w.write_all(&(n as u64).to_le_bytes()).at(&path)?;
        for x in vectors {
            w.write_all(&x.to_le_bytes()).at(&path)?;
        }
        w.flush().at(&path)?;
    }
    if n > 0 {
        let hnsw = new_hnsw(n, config);
        let rows: Vec<(&[f32], usize)> = vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (v, i))
            .collect();
        insert_all(&hnsw, &rows);
        hnsw.file_dump(dir, HNSW_BASE)
            .map_err(|e| Error::Model(format!("cannot write the HNSW graph: {e}")))?;
    }
    let mut files = BTreeMap::new();
    for name in file_names(n) {
        let p = dir.join(&name);
        files.insert(name, crate::hash::sha256_file(&p)?);
    }
    Ok(files)
}

/// A new, empty graph with the configured shape.
pub fn new_hnsw(n: usize, config: &VectorConfig) -> Hnsw<'static, f32, DistUnitDot> {
    Hnsw::new(
        config.m.clamp(2, 255),
        n.max(1),
        MAX_LAYER,
        config.ef_construction.max(config.m * 2),
        DistUnitDot,
    )
}

/// Inserts rows: one by one below 20,000 (deterministic: same input, same
/// graph), in parallel above (much faster, not deterministic).
pub fn insert_all(hnsw: &Hnsw<'static, f32, DistUnitDot>, rows: &[(&[f32], usize)]) {
    if rows.len() < 20_000 {
        for &(v, i) in rows {
            hnsw.insert((v, i));
        }
    } else {
        hnsw.parallel_insert_slice(&rows.to_vec());
    }
}

fn file_names(n: usize) -> Vec<String> {
    let mut v = vec![VECTORS.to_string()];
    if n > 0 {
        v.push(format!("{HNSW_BASE}.hnsw.graph"));
        v.push(format!("{HNSW_BASE}.hnsw.data"));
    }
    v
}

impl VectorIndex {
    /// Opens the index in `dir` after checking every file against `manifest`.
    pub fn open(dir: &Path, manifest: &VectorManifest) -> Result<VectorIndex> {
        for name in file_names(manifest.count) {
            if !manifest.files.contains_key(&name) {
                return Err(Error::CorruptIndex {
                    path: dir.join(&name),
                    reason: "the manifest has no checksum for it".into(),
                });
            }
        }
        super::files::verify_files(dir, &manifest.files)?;
        let path = dir.join(VECTORS);
        let bytes = std::fs::read(&path).at(&path)?;
        let corrupt = |reason: &str| Error::CorruptIndex {
            path: path.clone(),
            reason: reason.into(),
        };
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a kbqa vector file"));
        }
        let dim = u64::from_le_bytes(bytes[8..16].try_into().expect("8")) as usize;
        let n = u64::from_le_bytes(bytes[16..24].try_into().expect("8")) as usize;
        let expected = n
            .checked_mul(dim)
            .and_then(|x| x.checked_mul(4))
            .and_then(|x| x.checked_add(24));
        if dim == 0 || dim != manifest.dim || n != manifest.count || Some(bytes.len()) != expected {
            return Err(corrupt("its size does not match the manifest"));
        }
        let vectors: Vec<f32> = bytes[24..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
            .collect();
        let hnsw = if n > 0 {
            // hnsw_rs ties a loaded graph to its loader's lifetime even without
            // mmap; the loader owns no file or mapping then, so leaking its few
            // bytes once per generation is the simple sound way to 'static.
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new_with_options(
                dir,
                HNSW_BASE,
                ReloadOptions::default(),
            )));
            let hnsw = io
                .load_hnsw::<f32, DistUnitDot>()
                .map_err(|e| Error::CorruptIndex {
                    path: dir.join(format!("{HNSW_BASE}.hnsw.graph")),
                    reason: e.to_string(),
                })?;
            if hnsw.get_nb_point() != n {
                return Err(Error::CorruptIndex {
                    path: dir.join(format!("{HNSW_BASE}.hnsw.graph")),
                    reason: format!("{} points, expected {n}", hnsw.get_nb_point()),
                });
            }
            Some(hnsw)
        } else {
            None
        };
        Ok(VectorIndex { dim, vectors, hnsw })
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len() / self.dim.max(1)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Every vector, in chunk order, `dim` numbers each.
    pub fn rows(&self) -> &[f32] {
        &self.vectors
    }

    /// The `k` nearest chunks as (ordinal, cosine), best first, by HNSW
    /// with beam `ef` (or exactly, when there is no graph).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        match &self.hnsw {
            Some(h) => h
                .search(query, k, ef.max(k))
                .into_iter()
                .map(|n| (n.d_id, 1.0 - n.distance))
                .collect(),
            None => self.search_exact(query, k),
        }
    }

    /// The `k` nearest chunks by brute force.
    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        exact_top_k(&self.vectors, self.dim, query, k)
    }
}

/// Brute-force top-k by dot product over row-major unit vectors.
pub fn exact_top_k(vectors: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = vectors
        .chunks_exact(dim)
        .map(|v| dot(v, query))
        .enumerate()
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    scored.select_nth_unstable_by(k - 1, order);
    scored.truncate(k);
    scored.sort_by(order);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors.
    pub(crate) fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let mut v: Vec<f32> = (0..n * dim).map(|_| next()).collect();
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn manifest(files: BTreeMap<String, String>, n: usize, dim: usize) -> VectorManifest {
        VectorManifest {
            model: "test".into(),
            model_sha256: "0".into(),
            dim,
            count: n,
            m: 16,
            ef_construction: 200,
            files,
        }
    }

    #[test]
    fn hnsw_agrees_with_exact_search_after_a_round_trip() {
        let (n, dim) = (3000, 32);
        let vectors = unit_vectors(n, dim, 42);
        let dir = tempfile::tempdir().unwrap();
        let files = build(dir.path(), &vectors, dim, &VectorConfig::default()).unwrap();
        let index = VectorIndex::open(dir.path(), &manifest(files, n, dim)).unwrap();
        let queries = unit_vectors(50, dim, 7);
        let mut found = 0;
        for q in queries.chunks_exact(dim) {
            let exact: Vec<usize> = index
                .search_exact(q, 10)
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            let approx = index.search(q, 10, 64);
            found += approx.iter().filter(|(i, _)| exact.contains(i)).count();
            assert!(
                approx.windows(2).all(|w| w[0].1 >= w[1].1),
                "sorted by similarity"
            );
        }
        let recall = found as f64 / 500.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
        assert_eq!(&index.rows()[5 * dim..6 * dim], &vectors[5 * dim..6 * dim]);
    }

    #[test]
    fn damaged_files_are_refused_before_hnsw_reads_them() {
        let (n, dim) = (200, 8);
        let vectors = unit_vectors(n, dim, 1);
        let dir = tempfile::tempdir().unwrap();
        let files = build(dir.path(), &vectors, dim, &VectorConfig::default()).unwrap();
        let m = manifest(files, n, dim);
        for name in ["hnsw.hnsw.data", "hnsw.hnsw.graph", "vectors.f32"] {
            let p = dir.path().join(name);
            let original = std::fs::read(&p).unwrap();
            std::fs::write(&p, &original[..original.len() / 2]).unwrap();
            let err = VectorIndex::open(dir.path(), &m)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(name) && err.contains("checksum"), "{err}");
            std::fs::write(&p, &original).unwrap();
        }
        VectorIndex::open(dir.path(), &m).unwrap();
    }

    #[test]
    fn exact_top_k_is_sorted_and_bounded() {
        let v = unit_vectors(10, 4, 3);
        let top = exact_top_k(&v, 4, &v[0..4], 3);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].0, 0);
        assert!(exact_top_k(&v, 4, &v[0..4], 100).len() == 10);
    }
}
