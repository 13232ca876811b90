//! The only place that knows candle and tokenizers: model files, their
//! provisioning, and inference. Nothing here touches the network except
//! [`fetch`], which runs only in `kbqa models fetch` or on first use.

pub mod e5;
pub mod fetch;
pub mod xlmr_tokenizer;
