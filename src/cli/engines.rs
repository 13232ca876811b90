//! Opening the knowledge base and loading the chat model for a command,
//! with progress shown on stderr.

use std::sync::Arc;

use kbqa::backend::EmbeddingModel;
use kbqa::config::Backend;
use kbqa::engine::Generator;
use kbqa::kb::OpenEvent;
use kbqa::models::fetch;
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
    let start = std::time::Instant::now();
    if config.generator.backend == Backend::Local {
        eprintln!("kbqa: loading {}", config.models.generator);
    }
    let mut bars = Bars::on_stderr();
    let llm = kbqa::backend::generator(config, &mut |e| bars.fetch_event(e))?;
    bars.finish();
    loaded(config, llm.as_ref(), start);
    Ok(llm)
}

/// Says which generator answers: the local model and how long it took to
/// load, or the model server (only named: contacted by the first answer).
fn loaded(config: &Config, llm: &dyn Generator, start: std::time::Instant) {
    match config.generator.backend {
        Backend::Local => eprintln!(
            "kbqa: {} loaded in {:.1} s",
            config.models.generator,
            start.elapsed().as_secs_f64()
        ),
        Backend::Openai => eprintln!(
            "kbqa: generating with {} at {}",
            llm.name(),
            config.generator.openai.url
        ),
    }
}

fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>, what: &str) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("loading {what} panicked"))
}

/// The knowledge base and the chat model, for a command that answers.
///
/// A fresh process needs the index, the chat model and the query embedder
/// before its first answer. When both models are already on disk (every
/// run after the first), all three load at once: the embedder (its
/// tokenizer takes longest) beside the index and the chat model. (Should
/// the index need rebuilding then, its build loads an embedder of its own
/// and this one is dropped: a rare case, paid in time only.) Otherwise (a
/// download to show) the index opens first, then the chat model loads
/// beside the embedder, so that progress bars do not interleave.
pub fn open_with_models(config: &Config) -> anyhow::Result<(Kb, Arc<dyn Generator>)> {
    let generator_ready = match config.generator.backend {
        Backend::Local => fetch::ready(&config.models.generator, &config.home).is_some(),
        // A server's model needs no loading, only its tokenizer, if one is named.
        Backend::Openai => match config.generator.tokenizer.trim() {
            "" => true,
            tokenizer => fetch::ready(tokenizer, &config.home).is_some(),
        },
    };
    let embedder = generator_ready
        .then(|| EmbeddingModel::ready(config))
        .flatten();
    let Some(model) = embedder else {
        let kb = open(config)?;
        let llm = std::thread::scope(|s| {
            // A failure here is met again, and reported, by the first search.
            s.spawn(|| kb.embedder().ok());
            load_llm(config)
        })?;
        return Ok((kb, llm));
    };
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        let embedder = s.spawn(|| model.load());
        let llm = s.spawn(|| kbqa::backend::generator(config, &mut |_| {}));
        let kb = open(config);
        let (llm, embedder) = (
            joined(llm, "the chat model"),
            joined(embedder, "the embedder"),
        );
        // The index's error first: it is the one a user acts on.
        let (kb, llm) = (kb?, llm??);
        loaded(config, llm.as_ref(), start);
        // A failure here is met again, and reported, by the first search.
        if let Ok(e) = embedder? {
            kb.adopt_embedder(&model, e);
        }
        Ok((kb, llm))
    })
}
