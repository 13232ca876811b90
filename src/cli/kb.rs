//! `kbqa kb list|add|remove`: the knowledge bases of the config file.

use std::path::Path;

use anyhow::Context;
use kbqa::config::{KbConfig, TokenizerKind, DEFAULT_CONFIG_FILE};
use kbqa::Config;

use super::args::KbCommand;

/// Runs one `kbqa kb` command; `file` is `--config`, if given.
pub fn run(config: &Config, file: Option<&Path>, command: KbCommand) -> anyhow::Result<()> {
    let file = file.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
    match command {
        KbCommand::List => list(config),
        KbCommand::Add {
            name,
            corpus,
            tokenizer,
            k,
            description,
        } => {
            anyhow::ensure!(
                corpus.is_dir(),
                "{} is not a folder: a knowledge base is a folder of .md/.txt documents",
                corpus.display()
            );
            // Its index goes to `<index_dir>/kbs/<name>` (a different
            // folder is `index_dir` in its table of the config file).
            let kb = KbConfig {
                corpus,
                index_dir: None,
                tokenizer,
                k,
                description: description.unwrap_or_default(),
                api_keys: Vec::new(),
            };
            Config::add_kb_to_file(file, &name, &kb)?;
            println!(
                "added knowledge base {name} ({}) to {}",
                kb.corpus.display(),
                file.display()
            );
            println!("build its index with: kbqa index --kb {name}");
            Ok(())
        }
        KbCommand::Remove { name } => {
            let dir = config
                .for_kb(&name)
                .map(|c| c.index_dir)
                .with_context(|| format!("in {}", file.display()))?;
            Config::remove_kb_from_file(file, &name)?;
            println!("removed knowledge base {name} from {}", file.display());
            println!(
                "its index is kept at {} (delete the folder to free the space)",
                dir.display()
            );
            Ok(())
        }
    }
}

/// One line per knowledge base: name, corpus, live index, description.
fn list(config: &Config) -> anyhow::Result<()> {
    for name in config.kb_names() {
        let kb = config.for_kb(name)?;
        let index = match kbqa::index::Store::for_config(&kb).and_then(|s| s.live_manifest()) {
            Ok(m) => format!(
                "{} chunks from {} files ({})",
                m.chunk_count,
                m.files.len(),
                m.generation
            ),
            Err(kbqa::Error::NoIndex(_)) => "not indexed yet".to_string(),
            Err(e) => format!("unusable index: {e}"),
        };
        let tokenizer = match kb.bm25.tokenizer {
            TokenizerKind::Jieba => String::new(),
            other => format!(", {other} terms"),
        };
        let description = config.kbs.get(name).map_or("", |k| k.description.as_str());
        let mark = if name == config.kb { "*" } else { " " };
        println!(
            "{mark} {name}\t{}\t{index}{tokenizer}\t{description}",
            kb.corpus.display()
        );
    }
    Ok(())
}
