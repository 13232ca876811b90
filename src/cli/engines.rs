//! Opening the knowledge base and loading the chat model for a command,
//! with progress shown on stderr.

use std::sync::Arc;

use kbqa::config::Backend;
use kbqa::engine::Generator;
use kbqa::kb::OpenEvent;
use kbqa::{Config, Kb};

use super::progress::Bars;

/// Opens the knowledge base `config` names, showing progress.
pub fn open(config: &Config) -> anyhow::Result<Kb> {
    let mut bars = Bars::on_stderr();
    Ok(Kb::open(config, &mut |e| {
        if let OpenEvent::CorpusMissing = e {
            eprintln!(
                "kbqa: corpus folder {} not found; using the existing index as it is",
                config.corpus.display()
            )
        } else {
            bars.open_event(e)
        }
    })?)
}

/// The configured generator; a model server is only named (it is
/// contacted by the first answer).
pub fn load_llm(config: &Config) -> anyhow::Result<Arc<dyn Generator>> {
    if config.generator.backend == Backend::Openai {
        let mut bars = Bars::on_stderr();
        let llm = kbqa::backend::generator(config, &mut |e| bars.fetch_event(e))?;
        bars.finish();
        eprintln!(
            "kbqa: generating with {} at {}",
            llm.name(),
            config.generator.openai.url
        );
        return Ok(llm);
    }
    let start = std::time::Instant::now();
    eprintln!("kbqa: loading {}", config.models.generator);
    let mut bars = Bars::on_stderr();
    let llm = kbqa::backend::generator(config, &mut |e| bars.fetch_event(e))?;
    bars.finish();
    eprintln!(
        "kbqa: {} loaded in {:.1} s",
        config.models.generator,
        start.elapsed().as_secs_f64()
    );
    Ok(llm)
}

/// [`load_llm`], with the query embedder loaded beside it on the other
/// core: a fresh process needs both before its first answer, and neither
/// waits for the other.
pub fn load_llm_and_embedder(config: &Config, kb: &Kb) -> anyhow::Result<Arc<dyn Generator>> {
    std::thread::scope(|s| {
        // A failure here is met again, and reported, by the first search.
        s.spawn(|| kb.embedder().ok());
        load_llm(config)
    })
}
