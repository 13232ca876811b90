//! Embeddings from a model server's `/v1/embeddings` (OpenAI protocol).

use super::endpoint::{describe, error_message, Endpoint};
use crate::config::EmbedderConfig;
use crate::engine::Embedder;
use crate::error::Result;

/// Passages sent per `/v1/embeddings` request.
const REMOTE_BATCH: usize = 32;

/// Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (a
/// text-embeddings server, vLLM, llama.cpp's server with `--embeddings`).
/// Vectors are normalised here: not every server does it.
pub struct OpenAiEmbedder {
    endpoint: Endpoint,
    dim: usize,
    query_prefix: String,
    passage_prefix: String,
}

impl OpenAiEmbedder {
    /// Connects and learns the vector size from one request: a server
    /// that is down or not an embeddings server is reported here, before
    /// any indexing starts.
    pub fn connect(config: &EmbedderConfig) -> Result<OpenAiEmbedder> {
        let mut e = OpenAiEmbedder {
            endpoint: Endpoint::new(&config.openai)?,
            dim: 0,
            query_prefix: config.query_prefix.clone(),
            passage_prefix: config.passage_prefix.clone(),
        };
        let probe = e.request(&["dimension probe".to_string()])?;
        e.dim = probe[0].len();
        Ok(e)
    }

    /// The identity of the model `config` names, for an index manifest:
    /// `openai:<model>`, and a digest of what shapes its vectors (name and
    /// prefixes; the vector size is checked against the index at search).
    /// The weights behind a name cannot be seen from here; the name is
    /// trusted.
    pub fn identity(config: &EmbedderConfig) -> (String, String) {
        use sha2::{Digest, Sha256};
        let model = config.openai.model.trim();
        let mut h = Sha256::new();
        for part in [
            "openai-embeddings",
            model,
            &config.query_prefix,
            &config.passage_prefix,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hex = crate::hash::hex(&h.finalize());
        (format!("openai:{model}"), hex)
    }

    /// Unit vectors of `inputs`, in order.
    fn request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>> {
        let body = serde_json::json!({
            "model": self.endpoint.model(),
            "input": inputs,
            "encoding_format": "float",
        });
        let url = self.endpoint.base().to_string();
        let text = self.endpoint.block_on(async {
            let response = self.endpoint.post("/embeddings", &body).await?;
            response
                .text()
                .await
                .map_err(|e| self.endpoint.error(describe(&url, &e)))
        })?;
        #[derive(serde::Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        #[derive(serde::Deserialize)]
        struct Response {
            data: Vec<Item>,
        }
        let parsed: Response = serde_json::from_str(&text).map_err(|e| {
            self.endpoint.error(format!(
                "not an embeddings response ({e}): {}",
                error_message(&text)
            ))
        })?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
        for item in parsed.data {
            if let Some(slot) = out.get_mut(item.index) {
                *slot = Some(item.embedding);
            }
        }
        out.into_iter()
            .map(|v| {
                let mut v = v.ok_or_else(|| {
                    self.endpoint
                        .error("the response has fewer vectors than inputs")
                })?;
                if v.is_empty() || (self.dim != 0 && v.len() != self.dim) {
                    return Err(self.endpoint.error(format!(
                        "a vector of size {} (expected {})",
                        v.len(),
                        self.dim
                    )));
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if !norm.is_finite() || norm == 0.0 {
                    return Err(self.endpoint.error("a zero or non-finite vector"));
                }
                v.iter_mut().for_each(|x| *x /= norm);
                Ok(v)
            })
            .collect()
    }
}

impl Embedder for OpenAiEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        let mut v = self.request(&[format!("{}{query}", self.query_prefix)])?;
        Ok(v.remove(0))
    }

    fn embed_passages(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        let mut done = 0;
        for group in texts.chunks(REMOTE_BATCH) {
            let inputs: Vec<String> = group
                .iter()
                .map(|t| format!("{}{t}", self.passage_prefix))
                .collect();
            for v in self.request(&inputs)? {
                out.extend(v);
            }
            done += group.len();
            progress(done);
        }
        Ok(out)
    }
}
