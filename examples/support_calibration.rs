//! Calibration data for the support check of cited answers
//! (`answer::CITED_OVERLAP`, `answer::CITED_COSINE`).
//!
//! Reads an answers report (`kbqa eval answers --report FILE`) and, for
//! every answer the report counts as grounded, measures how its cited
//! passages back it ([`kbqa::answer::support`]). Prints one TSV row per
//! answer: id, verdict (correct / wrong / out-of-scope), overlap, cosine.
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
    let config = kbqa::Config::load(None)?;
    config.validate()?;
    let kb = kbqa::Kb::open(&config, &mut |_| {})?;
    let questions: HashMap<String, String> = kbqa::eval::load_set(&set)?
        .into_iter()
        .map(|i| (i.id, i.question))
        .collect();
    let chunks: HashMap<&str, &str> = kb
        .generation()
        .chunks
        .iter()
        .map(|c| (c.id.as_str(), c.text.as_str()))
        .collect();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    println!("id\tverdict\toverlap\tcosine");
    for o in report["outcomes"].as_array().ok_or("no outcomes")? {
        if o["grounded"] != true {
            continue;
        }
        let id = o["id"].as_str().unwrap_or_default();
        let answer = o["answer"].as_str().unwrap_or_default();
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
        let (_, cited) = kbqa::answer::clean_citations(answer, passages.len());
        if cited.is_empty() {
            continue; // an uncited answer: the other check's business
        }
        let texts: Vec<&str> = cited.iter().map(|&n| passages[n - 1]).collect();
        let question = questions.get(id).map(String::as_str).unwrap_or_default();
        let s = kbqa::answer::support(answer, question, &texts, &kb);
        let verdict = match (o["in_scope"] == true, o["correct"] == true) {
            (false, _) => "out-of-scope",
            (true, true) => "correct",
            (true, false) => "wrong",
        };
        let show = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!("{id}\t{verdict}\t{}\t{}", show(s.overlap), show(s.cosine));
    }
    Ok(())
}
