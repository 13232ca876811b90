//! Index generations on disk, and their one manifest.
//!
//! ```text
//! indexes/
//!   CURRENT                 name of the live generation (replaced by rename)
//!   gen-<millis>-<pid>/     one complete, immutable generation
//!     manifest.json         written last: what was indexed, and how
//!     chunks.jsonl          the chunks; a chunk's ordinal is its line number
//!     bm25/                 tantivy index over the same ordinals
//!   .tmp-gen-…/             a build in progress (or killed): never read
//!   .lock                   held by the one `kbqa index` that may write
//! ```
//!
//! That is the `local` backend. The `postgres` backend ([`pg`]) keeps the
//! same generations in a shared database, behind the same [`Store`].
//!
//! **Invariant:** a reader only ever opens the generation `CURRENT` names, and
//! `CURRENT` only ever names a generation that was completely written and
//! fsynced before the rename. A build that fails or is killed leaves the
//! previous generation live.

pub mod bm25;
mod build;
mod files;
mod generation;
mod manifest;
pub mod pg;
mod prepare;
mod store;
pub mod tokenizer;
pub mod vector;

pub use self::build::build;
pub use self::generation::{live_manifest, open, Generation, Lexical, Vectors as VectorSearch};
pub use self::manifest::{
    BuildEvent, EmbeddingSettings, Freshness, IndexSettings, Manifest, FORMAT_VERSION,
};
pub use self::prepare::{embedding_text, Vectors};
pub use self::store::Store;
