//! kbqa: answer questions about your own documents, grounded in cited passages.
//!
//! Data flows one way, and so do imports:
//!
//! ```text
//! corpus (files) -> chunk (stable ids) -> index (BM25 + vectors, one manifest)
//!     -> retrieve -> kb -> answer (stages) -> server / CLI
//! ```
//!
//! [`Kb`] opens (and, when the corpus changed, rebuilds) the index a
//! [`Config`] describes and answers searches; [`answer::ask`] answers a
//! question from it with a [`engine::Generator`]. `config`, `error`,
//! `text`, `hash` and `rng` are leaves that anything may import; models
//! are reached only through the traits of [`engine`] ([`backend`] picks
//! the in-process [`models`] or a [`remote`] server). The CLI
//! (`main.rs` and `cli/`, the binary) and the HTTP layer in [`server`] are
//! thin shells over it.
//! ARCHITECTURE.md has the map.
#![deny(missing_docs)]

pub mod answer;
pub mod backend;
pub mod chat;
pub mod chunk;
pub mod config;
pub mod corpus;
pub mod engine;
pub mod error;
pub mod eval;
pub mod hash;
pub mod index;
pub mod kb;
pub mod models;
pub mod remote;
pub mod retrieve;
pub mod rng;
pub mod server;
pub mod synth;
pub mod text;

pub use config::Config;
pub use error::{Error, Result};
pub use kb::Kb;
