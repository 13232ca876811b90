//! The in-process E5 model as an [`Embedder`]: passages embedded in
//! parallel groups, queries one at a time.

use std::path::Path;

use super::e5::{Kind, E5};
use crate::engine::Embedder;
use crate::error::Result;

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
