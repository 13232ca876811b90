//! Synthetic corpora for benchmarks and crash tests: deterministic text with
//! the statistics of the shipped article (its sentences, reshuffled, with
//! made-up identifiers mixed in so the vocabulary keeps growing).

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::rng::Rng;

const SEED_TEXT: &str = include_str!("../corpus/article.md");

fn seed_sentences() -> Vec<&'static str> {
    SEED_TEXT
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .flat_map(|l| l.split_inclusive(['。', '?', '!', ';']))
        .map(str::trim)
        .filter(|s| s.chars().count() >= 8)
        .collect()
}

/// About `bytes` bytes of Markdown: sections of paragraphs of sentences.
pub fn markdown(bytes: usize, seed: u64) -> String {
    let sentences = seed_sentences();
    let mut rng = Rng(seed);
    let mut out = String::with_capacity(bytes + 1024);
    let mut section = 0;
    while out.len() < bytes {
        section += 1;
        out.push_str(&format!(
            "## 第{section}节 {}\n\n",
            &sentences[rng.below(sentences.len())]
                .chars()
                .take(12)
                .collect::<String>()
        ));
        for _ in 0..(2 + rng.below(6)) {
            for _ in 0..(2 + rng.below(10)) {
                out.push_str(sentences[rng.below(sentences.len())]);
                if rng.below(4) == 0 {
                    out.push_str(&format!(
                        "项目X{}的编号是K{}。",
                        rng.below(100_000),
                        rng.below(1_000_000)
                    ));
                }
            }
            out.push_str("\n\n");
        }
    }
    out
}

/// Writes a corpus of `files` Markdown files totalling about `total_bytes`
/// into `dir` (created if missing).
pub fn write_corpus(dir: &Path, total_bytes: usize, files: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let per_file = total_bytes / files.max(1);
    for i in 0..files.max(1) {
        let path = dir.join(format!("doc-{i:04}.md"));
        std::fs::write(&path, markdown(per_file, seed.wrapping_add(i as u64))).at(&path)?;
    }
    Ok(())
}
