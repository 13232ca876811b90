//! [`Store`]: where a knowledge base's generations live, so that what
//! opens, builds and lists indexes need not know which backend it is.

use std::path::{Path, PathBuf};

use super::generation::{self, Generation};
use super::manifest::{BuildEvent, IndexSettings, Manifest};
use super::pg::{self, Db};
use super::prepare::Vectors;
use crate::config::{Config, IndexBackend, LexicalEngine};
use crate::corpus::Corpus;
use crate::error::{Error, Result};

/// A knowledge base's index store.
#[derive(Debug, Clone)]
pub enum Store {
    /// Generations in a folder of this machine (`index_dir`).
    Local(PathBuf),
    /// Generations in the shared database, under the knowledge base's name.
    Postgres {
        /// The database.
        db: Db,
        /// The knowledge base.
        kb: String,
        /// How BM25 runs.
        lexical: LexicalEngine,
    },
}

impl Store {
    /// The store `config` selects for its knowledge base (`config.kb`).
    pub fn for_config(config: &Config) -> Result<Store> {
        Ok(match config.index_backend {
            IndexBackend::Local => Store::Local(config.index_dir.clone()),
            IndexBackend::Postgres => Store::Postgres {
                db: Db::connect(&config.database)?,
                kb: config.kb.clone(),
                lexical: config.database.lexical,
            },
        })
    }

    /// Where it is, for messages (a folder, or `postgres://…#kb`).
    pub fn location(&self) -> PathBuf {
        match self {
            Store::Local(dir) => dir.clone(),
            Store::Postgres { db, kb, .. } => format!("{}#{kb}", db.shown()).into(),
        }
    }

    /// Opens the live generation; [`Error::NoIndex`] if there is none.
    pub fn open(&self) -> Result<Generation> {
        match self {
            Store::Local(dir) => generation::open(dir),
            Store::Postgres { db, kb, lexical } => generation::open_db(db, kb, *lexical)?
                .ok_or_else(|| Error::NoIndex(self.location())),
        }
    }

    /// The live generation's manifest, without opening its indexes.
    pub fn live_manifest(&self) -> Result<Manifest> {
        match self {
            Store::Local(dir) => generation::live_manifest(dir),
            Store::Postgres { db, kb, .. } => {
                pg::live_manifest(db, kb)?.ok_or_else(|| Error::NoIndex(self.location()))
            }
        }
    }

    /// The live generation's name, cheaply (a replica polls it).
    pub fn live_name(&self) -> Result<Option<String>> {
        match self {
            Store::Local(dir) => match generation::live_manifest(dir) {
                Ok(m) => Ok(Some(m.generation)),
                Err(Error::NoIndex(_)) => Ok(None),
                Err(e) => Err(e),
            },
            Store::Postgres { db, kb, .. } => Ok(pg::live_generation(db, kb)?.map(|(_, n)| n)),
        }
    }

    /// Builds a new generation from `corpus` and makes it live, atomically.
    pub fn build(
        &self,
        corpus_root: &Path,
        corpus: &Corpus,
        settings: &IndexSettings,
        vectors: Vectors,
        events: &mut dyn FnMut(BuildEvent),
    ) -> Result<Manifest> {
        match self {
            Store::Local(dir) => {
                super::build::build(dir, corpus_root, corpus, settings, vectors, events)
            }
            Store::Postgres { db, kb, .. } => {
                pg::build(db, kb, corpus_root, corpus, settings, vectors, events)
            }
        }
    }
}
