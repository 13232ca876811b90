//! Where each model runs, as the config says: in this process
//! (`crate::models`, candle) or on a model server (`crate::remote`, the
//! OpenAI protocol). The one place that knows both, so that the knowledge
//! base, the answer pipeline and the front ends only see the
//! [`Embedder`] and [`Generator`] traits.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Backend, Config, EmbedderConfig};
use crate::engine::{Embedder, Generator, RecentVectors};
use crate::error::Result;
use crate::models::embedder::E5Embedder;
use crate::models::fetch::{self, FetchEvent};
use crate::models::gguf_tokenizer::GgufTokenizer;
use crate::remote::embedder::OpenAiEmbedder;
use crate::remote::generator::OpenAiGenerator;

/// The configured generator: the in-process model (`models.generator`,
/// fetched on first use) or a model server (`generator.backend =
/// "openai"`, only named here: the first answer contacts it).
pub fn generator(
    config: &Config,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<Arc<dyn Generator>> {
    Ok(match config.generator.backend {
        Backend::Local => Arc::new(crate::models::llm::load_named(
            &config.models.generator,
            &config.home,
            &config.python,
            config.answer.context,
            config.models.keep_packed,
            events,
        )?),
        Backend::Openai => {
            let tokenizer = match config.generator.tokenizer.trim() {
                "" => None,
                setting => {
                    let path = fetch::resolve(setting, &config.home, &config.python, events)?;
                    Some(GgufTokenizer::from_gguf(&path)?)
                }
            };
            Arc::new(OpenAiGenerator::new(&config.generator.openai, tokenizer)?)
        }
    })
}

/// The embedding model a config asks for: where it runs and its identity
/// (what an index manifest records, so vectors are never mixed).
#[derive(Clone)]
pub struct EmbeddingModel {
    /// Its name (`e5-small-q4`, a file path, `openai:<model>`).
    pub name: String,
    /// What identifies its vectors: the file's sha256, or for a server a
    /// digest of its name and prefixes.
    pub sha256: String,
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// An E5S1 file, loaded in process when first needed.
    File(PathBuf),
    /// A server, connected when first needed: BM25 search and reloads do
    /// not depend on it being up.
    Server(Box<EmbedderConfig>),
}

impl EmbeddingModel {
    /// Resolves the embedding model: `embedder.backend = "openai"` names
    /// the server's model (nothing is contacted yet); otherwise
    /// `models.embedding` (a known model is fetched on first use). `None`
    /// when vectors are turned off (`embedding = "none"` or empty).
    pub fn resolve(config: &Config, events: &mut dyn FnMut(FetchEvent)) -> Result<Option<Self>> {
        if config.embedder.backend == Backend::Openai {
            let (name, sha256) = OpenAiEmbedder::identity(&config.embedder);
            return Ok(Some(EmbeddingModel {
                name,
                sha256,
                source: Source::Server(Box::new(config.embedder.clone())),
            }));
        }
        let name = config.models.embedding.trim();
        if name.is_empty() || name == "none" {
            return Ok(None);
        }
        let path = fetch::resolve(name, &config.home, &config.python, events)?;
        let sha256 = match fetch::spec(name) {
            Some(spec) => spec.sha256.to_string(),
            None => crate::hash::sha256_file(&path)?,
        };
        Ok(Some(Self::file(name, sha256, path)))
    }

    /// The configured embedding model when it is a known one, already
    /// fetched and verified ([`fetch::ready`]): loadable at once, with no
    /// download and no checksum, so a front end can load it while the index
    /// opens. `None` otherwise (a server, no vectors, a file of the user's,
    /// or a first run: [`Self::resolve`] then does the work, with progress).
    pub fn ready(config: &Config) -> Option<Self> {
        if config.embedder.backend == Backend::Openai {
            return None;
        }
        // A known model only: a file of the user's is identified by hashing it.
        let spec = fetch::spec(config.models.embedding.trim())?;
        let path = fetch::ready(spec.name, &config.home)?;
        Some(Self::file(spec.name, spec.sha256.to_string(), path))
    }

    fn file(name: &str, sha256: String, path: PathBuf) -> Self {
        EmbeddingModel {
            name: name.to_string(),
            sha256,
            source: Source::File(path),
        }
    }

    /// Loads it (or connects to its server), remembering recent queries
    /// ([`RecentVectors`]).
    pub fn load(&self) -> Result<Arc<dyn Embedder>> {
        let _span = tracing::debug_span!("load_embedder").entered();
        let inner: Arc<dyn Embedder> = match &self.source {
            Source::File(path) => Arc::new(E5Embedder::load(path)?),
            Source::Server(config) => Arc::new(OpenAiEmbedder::connect(config)?),
        };
        Ok(Arc::new(RecentVectors::new(inner)))
    }
}
