//! Calibration data for the support checks (`answer::CITED_OVERLAP`,
//! `answer::CITED_COSINE`, `answer::EMBEDDING_SUPPORT`).
//!
//! Reads an answers report (`kbqa eval answers --report FILE`) and, for
//! every answer the report counts as grounded or refused as unsupported,
//! measures how its passages back it ([`kbqa::answer::support`]: the cited
//! ones, or all of them for an uncited answer; whole passages, not the
//! focused sentences). Prints one TSV row per answer: id, grounded, cited,
//! verdict (correct / wrong / out-of-scope, by the keywords), overlap,
//! cosine (sentences in the other language only).
//! The thresholds are chosen to keep the correct answers and drop the
//! others; BENCHMARKS.md has the figures.
//!
//! Usage: cargo run --release --example support_calibration -- REPORT [SET]

use std::collections::HashMap;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let report: PathBuf = args
        .next()
        .ok_or("usage: support_calibration REPORT [SET]")?
        .into();
    let set: PathBuf = args
        .next()
        .unwrap_or_else(|| "tests/eval/qa.jsonl".into())
        .into();
    let config = kbqa::Config::load(None, &kbqa::config::layers::from_env(std::env::vars()))?;
    let kb = kbqa::Kb::open(&config, &mut |_| {})?;
    let embedder = kb.embedder().ok();
    let items: HashMap<String, kbqa::eval::EvalItem> = kbqa::eval::load_set(&set)?
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
    let chunks: HashMap<&str, &str> = kb
        .generation()
        .chunks
        .iter()
        .map(|c| (c.id.as_str(), c.text.as_str()))
        .collect();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    println!("id\tgrounded\tcited\tverdict\toverlap\tcosine");
    for o in report["outcomes"].as_array().ok_or("no outcomes")? {
        // What the model wrote: the answer, or the text refused as unsupported.
        let (grounded, text) = if o["grounded"] == true {
            (true, o["answer"].as_str().unwrap_or_default())
        } else if o["refusal"] == "unsupported" {
            (false, o["model_text"].as_str().unwrap_or_default())
        } else {
            continue;
        };
        let id = o["id"].as_str().unwrap_or_default();
        let Some(item) = items.get(id) else { continue };
        // Numbered as in the prompt; a chunk the index no longer has is "".
        let passages: Vec<&str> = o["passages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                p.as_str()
                    .and_then(|id| chunks.get(id))
                    .copied()
                    .unwrap_or("")
            })
            .collect();
        let (_, cited) = kbqa::answer::clean_citations(text, passages.len());
        // Cited passages back a cited answer; any passage an uncited one.
        let texts: Vec<&str> = if cited.is_empty() {
            passages.clone()
        } else {
            cited.iter().map(|&n| passages[n - 1]).collect()
        };
        let s = kbqa::answer::support(text, &item.question, &texts, embedder.as_deref());
        let correct = kbqa::eval::missing_keywords(&item.keywords, text).is_empty();
        let verdict = match (item.in_scope, correct) {
            (false, _) => "out-of-scope",
            (true, true) => "correct",
            (true, false) => "wrong",
        };
        let show = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{id}\t{grounded}\t{}\t{verdict}\t{}\t{}",
            !cited.is_empty(),
            show(s.overlap),
            show(s.cosine)
        );
    }
    Ok(())
}
