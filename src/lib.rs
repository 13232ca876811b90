//! kbqa: answer questions about your own documents, grounded in cited passages.
//!
//! Data flows one way:
//!
//! ```text
//! corpus (files) -> chunk (stable ids) -> index (BM25, one manifest) -> retrieve -> answer
//! ```
//!
//! [`Kb`] is the front door: it opens (and, when the corpus changed, rebuilds)
//! the index described by a [`Config`], and answers searches. The CLI in
//! `main.rs` and the HTTP layer are thin shells over it.
#![deny(missing_docs)]

pub mod answer;
pub mod bot;
pub mod chat;
pub mod chunk;
pub mod config;
pub mod corpus;
pub mod embed;
pub mod error;
pub mod eval;
pub mod index;
pub mod kb;
pub mod llm;
pub mod models;
pub mod remote;
pub mod retrieve;
pub mod server;
pub mod synth;
pub mod translate;

pub use config::Config;
pub use error::{Error, Result};
pub use kb::Kb;
