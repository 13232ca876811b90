//! Turning text into vectors, behind a small trait so that indexing and
//! retrieval do not depend on how (or where) embeddings are computed.

use std::path::Path;

use crate::error::Result;
use crate::models::e5::{Kind, E5};

/// Something that embeds queries and passages into unit vectors.
pub trait Embedder: Send + Sync {
    /// Output dimension.
    fn dim(&self) -> usize;
    /// The vector of a search query.
    fn embed_query(&self, query: &str) -> Result<Vec<f32>>;
    /// The vectors of passages, row-major (`texts.len() * dim()` floats);
    /// `progress(done)` is called as passages are finished.
    fn embed_passages(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Vec<f32>>;
}

/// The in-process E5 model.
pub struct E5Embedder {
    model: E5,
}

impl E5Embedder {
    /// Loads an E5S1 model file.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(E5Embedder {
            model: E5::load(path)?,
        })
    }

    /// The model itself.
    pub fn model(&self) -> &E5 {
        &self.model
    }
}

impl Embedder for E5Embedder {
    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        self.model.embed(query, Kind::Query)
    }

    fn embed_passages(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let mut out = Vec::with_capacity(texts.len() * self.dim());
        let mut done = 0;
        // Passages run concurrently (each also splits its matmuls over the
        // pool): the encoder's many small single-threaded ops then overlap.
        for group in texts.chunks(16) {
            let vectors: Vec<Vec<f32>> = group
                .par_iter()
                .map(|t| self.model.embed(t, Kind::Passage))
                .collect::<Result<_>>()?;
            for v in vectors {
                out.extend(v);
            }
            done += group.len();
            progress(done);
        }
        Ok(out)
    }
}
