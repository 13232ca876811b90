//! [`Db`]: the pool of connections to the shared database, its errors,
//! and the versioned schema kbqa keeps in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use crate::config::{without_password, DatabaseConfig};
use crate::error::{Error, Result};

/// The notification channel a new live generation is announced on; the
/// payload is the knowledge base's name.
pub const CHANNEL: &str = "kbqa_generation";

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// A handle on the shared database (cheap to clone: one pool per URL).
#[derive(Clone)]
pub struct Db(Arc<Shared>);

struct Shared {
    pool: Pool,
    /// `database.keep_replaced_secs`.
    keep_replaced_secs: u64,
    pg: postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

/// Sets `statement_timeout` on each pooled connection: a search never
/// waits on a stuck database longer than that.
#[derive(Debug)]
struct StatementTimeout(u64);

impl r2d2::CustomizeConnection<postgres::Client, postgres::Error> for StatementTimeout {
    fn on_acquire(&self, c: &mut postgres::Client) -> std::result::Result<(), postgres::Error> {
        c.batch_execute(&format!("SET statement_timeout = {}", self.0))
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("url", &self.0.shown).finish()
    }
}

/// The migrations, in order; version `i + 1` is `MIGRATIONS[i]`. Never
/// edit one that shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: generations, the live pointer.
    "CREATE EXTENSION IF NOT EXISTS vector;
     CREATE TABLE kbqa_generations (
         id bigint PRIMARY KEY,
         kb text NOT NULL,
         name text NOT NULL UNIQUE,
         manifest text NOT NULL,
         dim integer,
         -- When it stopped being live: kept a while for replicas still on it.
         replaced_at timestamptz,
         created_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE SEQUENCE kbqa_generation_ids;
     CREATE TABLE kbqa_live (
         kb text PRIMARY KEY,
         generation bigint NOT NULL REFERENCES kbqa_generations (id),
         switched_at timestamptz NOT NULL DEFAULT now()
     );",
];

/// The advisory lock key of migrations (indexers lock per knowledge base).
const MIGRATION_LOCK: i64 = 0x6b62_7161_0001;

impl Db {
    /// The pool for `config.url` (one per URL and process), with the
    /// schema migrated to this kbqa's version. Connecting is lazy: a
    /// database that is down makes each use fail, not this call.
    pub fn connect(config: &DatabaseConfig) -> Result<Db> {
        static POOLS: OnceLock<Mutex<HashMap<String, Db>>> = OnceLock::new();
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| Error::Config("database.url is not set".into()))?;
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(db) = pools.get(url) {
            return Ok(db.clone());
        }
        let mut pg: postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("database.url {}: {e}", without_password(url))))?;
        let shown = shown(&pg);
        pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .application_name("kbqa");
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .connection_customizer(Box::new(StatementTimeout(config.statement_timeout_ms)))
            .build_unchecked(PostgresConnectionManager::new(pg.clone(), NoTls));
        let db = Db(Arc::new(Shared {
            pool,
            keep_replaced_secs: config.keep_replaced_secs,
            pg,
            shown,
        }));
        db.migrate()?;
        pools.insert(url.to_string(), db.clone());
        Ok(db)
    }

    /// A connection from the pool.
    pub(super) fn conn(&self) -> Result<Conn> {
        self.0.pool.get().map_err(|e| self.unreachable(e))
    }

    /// A connection of its own, outside the pool (to `LISTEN`, or to hold
    /// an indexer's lock and transaction for as long as a build takes).
    pub fn dedicated(&self) -> Result<postgres::Client> {
        self.0.pg.connect(NoTls).map_err(|e| self.unreachable(e))
    }

    /// `database.keep_replaced_secs`.
    pub(super) fn keep_replaced_secs(&self) -> u64 {
        self.0.keep_replaced_secs
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.0.shown
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::DatabaseUnreachable {
            url: self.0.shown.clone(),
            reason: e.to_string(),
        }
    }

    /// Maps a statement's error: no answer at all (the connection broke,
    /// was refused or timed out), or a server going away or overloaded
    /// (SQLSTATE classes 08 and 57P, 53300 too many connections, 57014 a
    /// statement cancelled by its timeout) is the database being
    /// unreachable, for now; anything else is a refusal that waiting will
    /// not fix.
    pub(super) fn failed(&self, e: postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else {
            return self.unreachable(e);
        };
        let code = db.code().code();
        let reason = format!("{code}: {}", db.message());
        if code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "57014" {
            return self.unreachable(reason);
        }
        Error::Database {
            url: self.0.shown.clone(),
            reason,
        }
    }

    /// Applies the migrations this database lacks, under an advisory lock
    /// (replicas may start together), in one transaction; refuses a
    /// database migrated by a newer kbqa. A database that is up to date is
    /// only read, so a replica may use a role that cannot create tables.
    fn migrate(&self) -> Result<()> {
        let mut c = self.conn()?;
        let applied = schema_version(&mut *c).map_err(|e| self.failed(e))?;
        let known = MIGRATIONS.len() as i32;
        if applied > known {
            return Err(Error::IncompatibleIndex {
                path: self.0.shown.clone().into(),
                reason: format!(
                    "its kbqa schema is version {applied}, and this kbqa {} knows up to {known}",
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
        if applied == known {
            return Ok(());
        }
        let mut tx = c.transaction().map_err(|e| self.failed(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.failed(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS kbqa_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(|e| self.failed(e))?;
        // Another process may have migrated while this one waited.
        let applied = schema_version(&mut tx).map_err(|e| self.failed(e))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            tracing::info!(version = i + 1, "migrating the database schema");
            tx.batch_execute(sql).map_err(|e| self.failed(e))?;
            tx.execute(
                "INSERT INTO kbqa_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(|e| self.failed(e))?;
        }
        tx.commit().map_err(|e| self.failed(e))
    }
}

/// The schema version applied (0 for a database kbqa never used).
fn schema_version(c: &mut impl postgres::GenericClient) -> Result<i32, postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('kbqa_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(
        c.query_one("SELECT coalesce(max(version), 0) FROM kbqa_schema", &[])?
            .get(0),
    )
}

/// The database's address for messages: user, host, port and database
/// name only (a password may hide in the URL's user part or its query).
fn shown(pg: &postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .zip(pg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        pg.get_user().unwrap_or(""),
        hosts.join(","),
        pg.get_dbname().unwrap_or("")
    )
}

/// A term as a quoted lexeme (of a `tsvector` or a `tsquery`): taken as
/// it is, never parsed.
pub(super) fn lexeme(term: &str) -> String {
    format!("'{}'", term.replace('\\', "\\\\").replace('\'', "''"))
}

/// The chunk table of generation `id` (ids are integers: never injected).
pub(super) fn chunk_table(id: i64) -> String {
    format!("kbqa_chunks_{id}")
}

/// The document-frequency table of generation `id`.
pub(super) fn df_table(id: i64) -> String {
    format!("kbqa_df_{id}")
}
