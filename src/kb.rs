//! [`Kb`]: an open knowledge base, kept in step with its corpus.

use crate::config::{Config, SearchConfig};
use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::index::{self, BuildEvent, Freshness, Generation, IndexSettings, Manifest};
use crate::retrieve::{self, SearchHit, SearchMode};

/// What happened while opening a knowledge base, for a front end to report.
#[derive(Debug, Clone)]
pub enum OpenEvent {
    /// The index is being (re)built, and why.
    Rebuilding(String),
    /// Build progress.
    Build(BuildEvent),
    /// The corpus folder is missing; the existing index is used as it is.
    CorpusMissing,
}

/// What `kbqa index` did.
#[derive(Debug, Clone)]
pub enum IndexOutcome {
    /// The live index already matched; nothing was written.
    UpToDate(Box<Manifest>),
    /// A new generation was built and is live.
    Built(Box<Manifest>),
}

/// An open knowledge base: one immutable index generation.
pub struct Kb {
    generation: Generation,
    search: SearchConfig,
}

impl Kb {
    /// Opens the index for `config`. When `config.auto_index` is on, a
    /// missing, stale (corpus or settings changed) or unusable index is
    /// rebuilt first, and `events` says why; otherwise that is an error.
    pub fn open(config: &Config, events: &mut dyn FnMut(OpenEvent)) -> Result<Kb> {
        if !config.corpus.is_dir() {
            // An index shipped without its corpus (e.g. to a replica) is still servable.
            let generation = match index::open(&config.index_dir) {
                Err(Error::NoIndex(_)) => return Err(Error::CorpusNotFound(config.corpus.clone())),
                other => other?,
            };
            events(OpenEvent::CorpusMissing);
            return Ok(Kb {
                generation,
                search: config.search.clone(),
            });
        }
        let corpus = Corpus::load(&config.corpus, config.skip_bad)?;
        let settings = IndexSettings::from_config(config);
        let reason = match index::open(&config.index_dir) {
            Ok(generation) => match generation.manifest.freshness(&corpus, &settings) {
                Freshness::Fresh => {
                    return Ok(Kb {
                        generation,
                        search: config.search.clone(),
                    })
                }
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
        index::build(
            &config.index_dir,
            &config.corpus,
            &corpus,
            &settings,
            &mut |e| events(OpenEvent::Build(e)),
        )?;
        Ok(Kb {
            generation: index::open(&config.index_dir)?,
            search: config.search.clone(),
        })
    }

    /// `kbqa index`: builds a new generation unless the live one already
    /// matches the corpus and settings (or `rebuild` is set).
    pub fn index(
        config: &Config,
        rebuild: bool,
        events: &mut dyn FnMut(BuildEvent),
    ) -> Result<IndexOutcome> {
        let corpus = Corpus::load(&config.corpus, config.skip_bad)?;
        let settings = IndexSettings::from_config(config);
        if !rebuild {
            // Open it whole: a damaged generation is not "up to date".
            if let Ok(g) = index::open(&config.index_dir) {
                if g.manifest.freshness(&corpus, &settings) == Freshness::Fresh {
                    return Ok(IndexOutcome::UpToDate(Box::new(g.manifest)));
                }
            }
        }
        let m = index::build(
            &config.index_dir,
            &config.corpus,
            &corpus,
            &settings,
            events,
        )?;
        Ok(IndexOutcome::Built(Box::new(m)))
    }

    /// The `k` best chunks for `query`.
    pub fn search(&self, query: &str, k: usize, mode: SearchMode) -> Result<Vec<SearchHit>> {
        retrieve::search(&self.generation, query, k, mode, &self.search)
    }

    /// The open generation (manifest, chunks, indexes).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }
}
