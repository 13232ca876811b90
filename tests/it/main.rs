//! Integration tests at the boundaries: the `kbqa` binary on real corpora and
//! real tantivy indexes. One test binary (faster to link, shared helpers).

mod ask;
mod chat;
mod cli;
mod corpus;
mod crash;
mod embed;
mod eval;
mod gguf;
mod kbs;
mod layers;
mod models;
mod postgres;
mod redis_tls;
mod reindex;
mod remote;
mod server;
mod slack;
mod util;
