//! [`Kb`]: an open knowledge base, kept in step with its corpus.

use std::sync::{Arc, OnceLock};

use crate::backend::EmbeddingModel;
use crate::config::{Config, SearchConfig, VectorConfig};
use crate::corpus::{Corpus, FileHash};
use crate::engine::Embedder;
use crate::error::{Error, Result};
use crate::index::{self, BuildEvent, Freshness, Generation, IndexSettings, Manifest, Store};
use crate::models::fetch::FetchEvent;
use crate::retrieve::{self, Query, SearchHit, SearchMode};
use crate::text::Lang;

/// What happened while opening a knowledge base, for a front end to report.
#[derive(Debug, Clone)]
pub enum OpenEvent {
    /// A model is being fetched or checked.
    Fetch(FetchEvent),
    /// The index is being (re)built, and why.
    Rebuilding(String),
    /// Build progress.
    Build(BuildEvent),
    /// The corpus folder is missing; the existing index is used as it is.
    CorpusMissing,
    /// Bad files the live index skipped, unchanged since: skipped again.
    SkippedAgain(Vec<String>),
}

/// What `kbqa index` did.
#[derive(Debug, Clone)]
pub enum IndexOutcome {
    /// The live index already matched; nothing was written.
    UpToDate(Box<Manifest>),
    /// A new generation was built and is live.
    Built(Box<Manifest>),
}

/// What an index for `config` is built from: the corpus, the embedding
/// model, and the settings a live generation must match.
struct Inputs {
    store: Store,
    corpus: Corpus,
    model: Option<EmbeddingModel>,
    settings: IndexSettings,
}

impl Inputs {
    /// The inputs; a bad file the live index skipped (`live_skipped`) and
    /// unchanged since is skipped again, with a warning, not refused.
    fn load(
        config: &Config,
        store: Store,
        live_skipped: &[FileHash],
        events: &mut dyn FnMut(OpenEvent),
    ) -> Result<Inputs> {
        let corpus = tracing::debug_span!("read_corpus")
            .in_scope(|| Corpus::load_allowing(&config.corpus, config.skip_bad, live_skipped))?;
        if !config.skip_bad && !corpus.skipped.is_empty() {
            events(OpenEvent::SkippedAgain(
                corpus.skipped.iter().map(|b| b.to_string()).collect(),
            ));
        }
        let model = EmbeddingModel::resolve(config, &mut |e| events(OpenEvent::Fetch(e)))?;
        let settings = IndexSettings::from_config(
            config,
            model.as_ref().map(|m| (m.name.clone(), m.sha256.clone())),
        );
        Ok(Inputs {
            store,
            corpus,
            model,
            settings,
        })
    }

    /// Builds a new generation; returns its manifest and the embedder it
    /// loaded (reused for queries).
    fn build(
        &self,
        config: &Config,
        reuse_live: bool,
        events: &mut dyn FnMut(OpenEvent),
    ) -> Result<(Manifest, Option<Arc<dyn Embedder>>)> {
        let embedder = match &self.model {
            Some(m) => Some(m.load()?),
            None => None,
        };
        let manifest = self.store.build(
            &config.corpus,
            &self.corpus,
            &self.settings,
            index::Vectors {
                embedder: embedder.as_deref(),
                config: &config.vector,
                reuse_live,
            },
            &mut |e| events(OpenEvent::Build(e)),
        )?;
        Ok((manifest, embedder))
    }
}

/// An open knowledge base: one immutable index generation, and the query
/// embedder it needs (loaded on the first vector search).
pub struct Kb {
    generation: Generation,
    search: SearchConfig,
    vector: VectorConfig,
    model: Option<EmbeddingModel>,
    embedder: OnceLock<Arc<dyn Embedder>>,
    /// Found on first use: it reads every passage, so not once per question.
    main_language: OnceLock<Lang>,
    /// Held while the embedder loads, so concurrent first searches load it once.
    loading: std::sync::Mutex<()>,
}

impl Kb {
    fn new(
        generation: Generation,
        config: &Config,
        model: Option<EmbeddingModel>,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Kb {
        let cell = OnceLock::new();
        if let Some(e) = embedder {
            let _ = cell.set(e);
        }
        Kb {
            generation,
            search: config.search.clone(),
            vector: config.vector.clone(),
            model,
            embedder: cell,
            main_language: OnceLock::new(),
            loading: std::sync::Mutex::new(()),
        }
    }

    /// Opens the index for `config`. When `config.auto_index` is on, a
    /// missing, stale (corpus, settings or model changed) or unusable index
    /// is rebuilt first, and `events` says why; otherwise that is an error.
    /// With the `postgres` backend the live generation is served as it is
    /// (see below).
    pub fn open(config: &Config, events: &mut dyn FnMut(OpenEvent)) -> Result<Kb> {
        let _span = tracing::debug_span!("open_kb").entered();
        let store = Store::for_config(config)?;
        // A shared index is the indexer's to keep up to date (`kbqa index`):
        // a reader serves its live generation as it is, and builds one
        // only where there is none.
        if let Store::Postgres { .. } = store {
            match store.open() {
                Ok(generation) => return Kb::current(generation, config, events),
                Err(Error::NoIndex(_)) if config.corpus.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        if !config.corpus.is_dir() {
            // An index shipped without its corpus (e.g. to a replica) is still servable.
            let generation = match store.open() {
                Err(Error::NoIndex(_)) => return Err(Error::CorpusNotFound(config.corpus.clone())),
                other => other?,
            };
            events(OpenEvent::CorpusMissing);
            return Kb::current(generation, config, events);
        }
        let live = tracing::debug_span!("open_index").in_scope(|| store.open());
        let live_skipped = match &live {
            Ok(g) => g.manifest.skipped_files.clone(),
            // A damaged generation may still say which files it skipped.
            Err(_) => store
                .live_manifest()
                .map(|m| m.skipped_files)
                .unwrap_or_default(),
        };
        let inputs = Inputs::load(config, store, &live_skipped, events)?;
        let model = inputs.model.clone();
        let reason = match live {
            Ok(generation) => match generation
                .manifest
                .freshness(&inputs.corpus, &inputs.settings)
            {
                Freshness::Fresh => return Ok(Kb::new(generation, config, model, None)),
                Freshness::Stale(reason) => format!("the index is out of date: {reason}"),
            },
            Err(Error::NoIndex(_)) => "there is no index yet".to_string(),
            Err(e @ (Error::IncompatibleIndex { .. } | Error::CorruptIndex { .. })) => {
                e.to_string()
            }
            Err(e) => return Err(e),
        };
        if !config.auto_index {
            return Err(Error::IncompatibleIndex {
                path: config.index_dir.clone(),
                reason,
            });
        }
        events(OpenEvent::Rebuilding(reason));
        let embedder = match inputs.build(config, true, events) {
            Ok((_, embedder)) => embedder,
            // Replicas sharing a database that had no index: one builds it,
            // the others wait for it and serve it.
            Err(Error::IndexLocked(_)) if matches!(inputs.store, Store::Postgres { .. }) => {
                return Kb::current(wait_for_live(&inputs.store)?, config, events)
            }
            Err(e) => return Err(e),
        };
        let generation = inputs.store.open()?;
        Ok(Kb::new(generation, config, model, embedder))
    }

    /// Opens the live generation as it is, without comparing it with the
    /// corpus: what a running server reloads after `kbqa index` built a new
    /// generation, or a replica serves without the corpus. Its vectors must
    /// still come from the configured embedding model.
    pub fn open_current(config: &Config, events: &mut dyn FnMut(OpenEvent)) -> Result<Kb> {
        Kb::current(Store::for_config(config)?.open()?, config, events)
    }

    fn current(
        generation: Generation,
        config: &Config,
        events: &mut dyn FnMut(OpenEvent),
    ) -> Result<Kb> {
        let model = match &generation.manifest.vector {
            Some(_) => EmbeddingModel::resolve(config, &mut |e| events(OpenEvent::Fetch(e)))?,
            None => None,
        };
        if let (Some(m), Some(v)) = (&model, &generation.manifest.vector) {
            if m.sha256 != v.model_sha256 {
                return Err(Error::IncompatibleIndex {
                    path: generation.dir.clone(),
                    reason: format!(
                        "its vectors were made by model {} and the configured model is {}",
                        v.model, m.name
                    ),
                });
            }
        }
        Ok(Kb::new(generation, config, model, None))
    }

    /// Uses `other`'s query embedder when it is the same model, so a
    /// reloaded knowledge base does not load the model again.
    pub fn share_embedder(&self, other: &Kb) {
        if let (Some(model), Some(e)) = (&other.model, other.embedder.get()) {
            self.adopt_embedder(model, e.clone());
        }
    }

    /// Uses `embedder`, loaded elsewhere from `model` (e.g. while the index
    /// opened), if this knowledge base's vectors come from that model.
    pub fn adopt_embedder(&self, model: &EmbeddingModel, embedder: Arc<dyn Embedder>) {
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.sha256 == model.sha256)
        {
            let _ = self.embedder.set(embedder);
        }
    }

    /// `kbqa index`: builds a new generation unless the live one already
    /// matches the corpus and settings (or `rebuild` is set).
    pub fn index(
        config: &Config,
        rebuild: bool,
        events: &mut dyn FnMut(OpenEvent),
    ) -> Result<IndexOutcome> {
        // Explicit indexing is strict: bad files need `--skip-bad` each time.
        let inputs = Inputs::load(config, Store::for_config(config)?, &[], events)?;
        if !rebuild {
            // Open it whole: a damaged generation is not "up to date".
            if let Ok(g) = inputs.store.open() {
                if g.manifest.freshness(&inputs.corpus, &inputs.settings) == Freshness::Fresh {
                    return Ok(IndexOutcome::UpToDate(Box::new(g.manifest)));
                }
            }
        }
        // `--rebuild` starts from nothing: every chunk is embedded again.
        let (manifest, _) = inputs.build(config, !rebuild, events)?;
        Ok(IndexOutcome::Built(Box::new(manifest)))
    }

    /// The query embedder, loaded on first use. A failure is not kept: an
    /// embeddings server that was down may be up for the next search.
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>> {
        if let Some(e) = self.embedder.get() {
            return Ok(e.clone());
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = self.embedder.get() {
            return Ok(e.clone());
        }
        let model = self.model.as_ref().ok_or_else(|| {
            Error::Model("this index has no vector index (embedding = \"none\")".into())
        })?;
        let e = model.load()?;
        let _ = self.embedder.set(e.clone());
        Ok(e)
    }

    /// The `query.k()` best chunks for `query`.
    pub fn search(&self, query: &Query, mode: SearchMode) -> Result<Vec<SearchHit>> {
        let query_vector = match mode {
            SearchMode::Bm25 => None,
            SearchMode::Vector | SearchMode::Hybrid => {
                let _span = tracing::debug_span!("embed").entered();
                Some(self.embedder()?.embed_query(query.text())?)
            }
        };
        self.search_with_vector(query, query_vector.as_deref(), mode)
    }

    /// [`Kb::search`] with the query's vector already computed (`None` for
    /// BM25), so a caller that needs the vector too embeds it once.
    pub fn search_with_vector(
        &self,
        query: &Query,
        query_vector: Option<&[f32]>,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>> {
        let _span = tracing::debug_span!("retrieve", %mode, k = query.k()).entered();
        retrieve::search(
            &self.generation,
            query,
            query_vector,
            mode,
            &self.search,
            &self.vector,
        )
    }

    /// The open generation (manifest, chunks, indexes).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The language most of its passages are written in (glossary entries
    /// hold both, and count for the one they have more of).
    pub fn main_language(&self) -> Lang {
        *self.main_language.get_or_init(|| {
            let chunks = &self.generation.chunks;
            let zh = chunks
                .iter()
                .filter(|c| Lang::detect(&c.text) == Lang::Zh)
                .count();
            if zh * 2 >= chunks.len() && zh > 0 {
                Lang::Zh
            } else {
                Lang::En
            }
        })
    }
}

/// The live generation of a shared store once the indexer holding its
/// lock has committed one (checked every second, for up to an hour).
fn wait_for_live(store: &Store) -> Result<Generation> {
    let started = std::time::Instant::now();
    loop {
        match store.open() {
            Err(Error::NoIndex(_)) if started.elapsed().as_secs() < 3600 => {
                std::thread::sleep(std::time::Duration::from_secs(1))
            }
            other => return other,
        }
    }
}
