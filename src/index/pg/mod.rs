//! The `postgres` backend: index generations in a shared PostgreSQL
//! database with pgvector, read by any number of `kbqa serve` replicas.
//!
//! ```text
//! kbqa_schema                 the migrations applied (versioned, below)
//! kbqa_generations            one row per generation: knowledge base, manifest, stats
//! kbqa_live                   per knowledge base, the live generation (the pointer)
//! kbqa_chunks_<id>            one table per generation: ord, the chunk's JSON line,
//!                             its terms (tsvector), its e5 vector (pgvector, HNSW cosine)
//! kbqa_df_<id>                per generation, each term's document frequency (BM25 in SQL)
//! ```
//!
//! **Invariant:** a generation is written in one transaction that ends by
//! moving `kbqa_live` and notifying `kbqa_generation`: until that commit
//! nothing of it is visible, and an indexer killed before it leaves
//! nothing behind. One table per generation keeps each HNSW index to one
//! generation's vectors and makes garbage collection a `DROP TABLE`.
//!
//! The database is reached through a small pool per URL, shared by every
//! knowledge base of the process; a connection that broke is replaced on
//! the next checkout, so searches resume by themselves once the database
//! is back.

mod db;
mod read;
mod write;

pub use self::db::{Db, CHANNEL};
pub use self::read::{live_generation, live_manifest, location, open, DbLexical, DbVectors};
pub use self::write::build;
