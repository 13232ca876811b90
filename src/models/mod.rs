//! The only place that knows candle and tokenizers: model files, their
//! provisioning, and inference. Nothing here touches the network except
//! [`fetch`], which runs only in `kbqa models fetch` or on first use.
//!
//! - [`e5`] (with [`q4`] and [`xlmr_tokenizer`]) embeds text; [`embedder`]
//!   serves it as a [`crate::engine::Embedder`];
//! - [`decoder`] is the chat model's forward pass (qwen2 and llama GGUF
//!   files) over the int8 kernels of [`packed`]; [`llm`] adds its
//!   tokenizer ([`gguf_tokenizer`]), the chat format, the prompt-prefix
//!   cache and sampling, as a [`crate::engine::Generator`].

mod activations;
mod attention;
pub mod decoder;
pub mod e5;
pub mod e5_file;
pub mod embedder;
pub mod fetch;
pub mod gguf_tokenizer;
pub mod kv_cache;
pub mod llm;
mod ops;
pub mod packed;
mod packed_file;
pub mod q4;
mod sampling;
mod weight_bytes;
pub mod xlmr_tokenizer;

/// Sets how many threads inference uses (0: one per available core).
///
/// candle sizes its thread use from `RAYON_NUM_THREADS`, and otherwise from
/// the *physical* core count, which on a 2-vCPU VM is 1. Call this once at
/// start-up, before any inference; an explicit `RAYON_NUM_THREADS` wins.
pub fn init_threads(threads: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let n = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    // Safe here: called at start-up, before other threads read the environment.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
}
