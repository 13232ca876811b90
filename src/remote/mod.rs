//! Calls to OpenAI-compatible model servers (llama.cpp's `llama-server`,
//! vLLM, Ollama, TGI, text-embeddings servers) from the library's blocking
//! code.
//!
//! Retrieval and answering are synchronous and run on blocking threads; the
//! HTTP client is async. [`endpoint::Endpoint::block_on`] bridges the two: inside the
//! HTTP service (a blocking thread of its runtime) it runs on that runtime,
//! in the CLI on a small runtime of its own.
//!
//! Failures are retried only where a retry cannot repeat work the caller
//! has seen: refused connections, 429 and 5xx answers, before any byte of
//! a response was used. Everything else becomes [`crate::Error::Upstream`] naming
//! the endpoint.
//!
//! [`generator`] and [`embedder`] implement [`crate::engine`]'s traits over
//! one [`endpoint::Endpoint`] each.

pub mod embedder;
pub mod endpoint;
pub mod generator;
