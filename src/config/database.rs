//! Where index generations live: local files (the default), or a shared
//! PostgreSQL database with pgvector that any number of `kbqa serve`
//! replicas read.

use serde::{Deserialize, Serialize};

/// Which store holds the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// Generations in `index_dir`, one process's own.
    #[default]
    Local,
    /// Generations in PostgreSQL (`database.url`), shared by replicas.
    Postgres,
}

/// How the `postgres` backend ranks by words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LexicalEngine {
    /// tantivy, built in each replica's memory from the chunk table when a
    /// generation is opened: the local backend's ranking exactly.
    #[default]
    Tantivy,
    /// PostgreSQL full-text search over kbqa's own (jieba) terms, stored
    /// pre-tokenised: nothing but the database holds the lexical index.
    Fts,
}

/// The shared database.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user[:password]@host:port/dbname` (`KBQA_DATABASE_URL`).
    pub url: Option<String>,
    /// How lexical search runs with this backend.
    pub lexical: LexicalEngine,
    /// Most connections one process opens.
    pub pool_size: u32,
    /// Longest wait for a connection (to connect, or for a free one).
    pub connect_timeout_ms: u64,
    /// Longest a search statement may run.
    pub statement_timeout_ms: u64,
    /// How often a replica checks the live generation when no
    /// notification arrives (a missed `NOTIFY`, a reconnect).
    pub poll_ms: u64,
    /// How long a generation is kept after it stopped being live, for
    /// replicas still reading it (the one live before is always kept).
    pub keep_replaced_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            lexical: LexicalEngine::Tantivy,
            pool_size: 8,
            connect_timeout_ms: 2000,
            statement_timeout_ms: 10_000,
            poll_ms: 5000,
            keep_replaced_secs: 600,
        }
    }
}

/// The password stays out of logs and error messages.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field(
                "url",
                &self.url.as_deref().map(super::service::without_password),
            )
            .field("lexical", &self.lexical)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("poll_ms", &self.poll_ms)
            .field("keep_replaced_secs", &self.keep_replaced_secs)
            .finish()
    }
}

impl DatabaseConfig {
    /// Rejects a backend that cannot work.
    pub fn validate(&self, backend: IndexBackend) -> Result<(), String> {
        if backend == IndexBackend::Local {
            return Ok(());
        }
        let url = self.url.as_deref().unwrap_or("").trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "index_backend = \"postgres\" needs database.url (KBQA_DATABASE_URL), a postgres:// URL (got {:?})",
                super::service::without_password(url)
            ));
        }
        if self.pool_size == 0 || self.connect_timeout_ms == 0 || self.poll_ms == 0 {
            return Err(
                "database.pool_size, connect_timeout_ms and poll_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}
