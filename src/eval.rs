//! Evaluation against a question set (`tests/eval/qa.jsonl`).
//!
//! Each line is one question: `{"id","lang","question","in_scope","gold",
//! "keywords","covers"}`. A retrieved chunk *answers* an in-scope question
//! when its text contains any of the `gold` markers (distinctive substrings
//! of the passage that holds the answer).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::kb::Kb;
use crate::retrieve::SearchMode;

/// One evaluation question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalItem {
    /// Unique id, e.g. `a-zh-001`.
    pub id: String,
    /// `zh` or `en`.
    pub lang: String,
    /// The question as a user would ask it.
    pub question: String,
    /// Whether the knowledge base holds the answer.
    pub in_scope: bool,
    /// Markers: a chunk containing any of them answers the question.
    pub gold: Vec<String>,
    /// Words a correct answer contains (`a|b` = either).
    pub keywords: Vec<String>,
    /// What it covers, e.g. `article:二` or `glossary:EFLOPS`.
    pub covers: String,
}

/// Loads and checks an evaluation set.
pub fn load_set(path: &Path) -> Result<Vec<EvalItem>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let mut items = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::EvalSet {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let item: EvalItem = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if !ids.insert(item.id.clone()) {
            return Err(bad(format!("duplicate id {}", item.id)));
        }
        if item.in_scope && item.gold.is_empty() {
            return Err(bad(format!(
                "{}: an in-scope question needs gold markers",
                item.id
            )));
        }
        items.push(item);
    }
    Ok(items)
}

/// Retrieval quality for a group of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// In-scope questions.
    pub questions: usize,
    /// Share answered by the first chunk.
    pub recall_at_1: f64,
    /// Share answered within the first five chunks.
    pub recall_at_5: f64,
    /// Mean reciprocal rank of the first answering chunk (0 beyond rank 10).
    pub mrr: f64,
}

/// One question's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalOutcome {
    /// Question id.
    pub id: String,
    /// Its language.
    pub lang: String,
    /// Rank of the first answering chunk within the top 10, if any.
    pub rank: Option<usize>,
}

/// A whole retrieval evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The retriever evaluated.
    pub mode: SearchMode,
    /// All in-scope questions.
    pub overall: RetrievalMetrics,
    /// Per language.
    pub by_lang: BTreeMap<String, RetrievalMetrics>,
    /// Per question.
    pub outcomes: Vec<RetrievalOutcome>,
}

/// How deep the evaluation looks (MRR is cut off here).
pub const EVAL_DEPTH: usize = 10;

/// Runs every in-scope question through retrieval.
pub fn evaluate_retrieval(
    kb: &Kb,
    items: &[EvalItem],
    mode: SearchMode,
) -> Result<RetrievalReport> {
    let mut outcomes = Vec::new();
    for item in items.iter().filter(|i| i.in_scope) {
        let hits = match kb.search(&item.question, EVAL_DEPTH, mode) {
            Ok(h) => h,
            Err(Error::InvalidQuery(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let rank = hits
            .iter()
            .find(|h| item.gold.iter().any(|g| h.text.contains(g.as_str())))
            .map(|h| h.rank);
        outcomes.push(RetrievalOutcome {
            id: item.id.clone(),
            lang: item.lang.clone(),
            rank,
        });
    }
    let mut by_lang = BTreeMap::new();
    let mut langs: Vec<&str> = outcomes.iter().map(|o| o.lang.as_str()).collect();
    langs.sort();
    langs.dedup();
    for lang in langs {
        let group: Vec<&RetrievalOutcome> = outcomes.iter().filter(|o| o.lang == lang).collect();
        by_lang.insert(lang.to_string(), metrics(&group));
    }
    Ok(RetrievalReport {
        mode,
        overall: metrics(&outcomes.iter().collect::<Vec<_>>()),
        by_lang,
        outcomes,
    })
}

fn metrics(group: &[&RetrievalOutcome]) -> RetrievalMetrics {
    let n = group.len();
    if n == 0 {
        return RetrievalMetrics::default();
    }
    let within = |k: usize| {
        group
            .iter()
            .filter(|o| o.rank.is_some_and(|r| r <= k))
            .count() as f64
            / n as f64
    };
    let mrr = group
        .iter()
        .map(|o| o.rank.map_or(0.0, |r| 1.0 / r as f64))
        .sum::<f64>()
        / n as f64;
    RetrievalMetrics {
        questions: n,
        recall_at_1: within(1),
        recall_at_5: within(5),
        mrr,
    }
}

impl RetrievalReport {
    /// A Markdown table: overall and per language.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "| mode | group | questions | recall@1 | recall@5 | MRR@{EVAL_DEPTH} |\n|---|---|---|---|---|---|\n"
        );
        let row = |s: &mut String, group: &str, m: &RetrievalMetrics| {
            s.push_str(&format!(
                "| {} | {group} | {} | {:.3} | {:.3} | {:.3} |\n",
                self.mode, m.questions, m.recall_at_1, m.recall_at_5, m.mrr
            ));
        };
        row(&mut s, "all", &self.overall);
        for (lang, m) in &self.by_lang {
            row(&mut s, lang, m);
        }
        s
    }
}
