//! Evaluation against a question set (`tests/eval/qa.jsonl`).
//!
//! Each line is one question: `{"id","lang","question","in_scope","gold",
//! "keywords","covers"}`. A retrieved chunk *answers* an in-scope question
//! when its text contains any of the `gold` markers (distinctive substrings
//! of the passage that holds the answer).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::answer::{retrieve, Answer, AskOptions, Question, Refusal, Retrieved, Signals, Status};
use crate::engine::Generator;
use crate::error::{Error, IoContext, Result};
use crate::kb::Kb;
use crate::retrieve::{Query, SearchHit, SearchMode};

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

impl EvalItem {
    /// Whether a passage holds the answer (one of the gold markers).
    pub fn holds_answer(&self, passage: &str) -> bool {
        self.gold.iter().any(|g| passage.contains(g.as_str()))
    }
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
    /// Whether the knowledge base holds the answer (out-of-scope
    /// questions are listed for calibration but not in the metrics).
    #[serde(default = "yes")]
    pub in_scope: bool,
    /// Best BM25 score for the question (for calibrating refusals).
    #[serde(default)]
    pub top_bm25: f32,
    /// Best cosine similarity, if the index has vectors.
    #[serde(default)]
    pub top_cosine: Option<f32>,
}

/// `metrics` of each language's outcomes.
fn per_lang<O, M>(
    outcomes: &[O],
    lang: impl Fn(&O) -> &String,
    metrics: impl Fn(&[&O]) -> M,
) -> BTreeMap<String, M> {
    let mut groups: BTreeMap<String, Vec<&O>> = BTreeMap::new();
    for o in outcomes {
        groups.entry(lang(o).clone()).or_default().push(o);
    }
    groups.into_iter().map(|(l, g)| (l, metrics(&g))).collect()
}

fn yes() -> bool {
    true
}

/// A whole retrieval evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The retriever evaluated.
    pub mode: SearchMode,
    /// Whether questions in the other language were searched for with
    /// their translation too ([`crate::answer::retrieve`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translated: bool,
    /// All in-scope questions.
    pub overall: RetrievalMetrics,
    /// Per language.
    pub by_lang: BTreeMap<String, RetrievalMetrics>,
    /// Per question.
    pub outcomes: Vec<RetrievalOutcome>,
}

/// How deep the evaluation looks (MRR is cut off here).
pub const EVAL_DEPTH: usize = 10;

/// Runs every in-scope question through retrieval; with a `translator`,
/// a question in the other language than the knowledge base's is searched
/// for with its translation too, as `ask` does.
pub fn evaluate_retrieval(
    kb: &Kb,
    items: &[EvalItem],
    mode: SearchMode,
    translator: Option<&dyn Generator>,
) -> Result<RetrievalReport> {
    let mut outcomes = Vec::new();
    let top = |mode: SearchMode, q: &str| -> Result<Option<f32>> {
        match Query::parse(q, 1).and_then(|q| kb.search(&q, mode)) {
            Ok(h) => Ok(h.first().map(|h| h.score)),
            Err(Error::InvalidQuery(_)) => Ok(None),
            Err(Error::Model(_)) if mode == SearchMode::Vector => Ok(None),
            Err(e) => Err(e),
        }
    };
    for item in items {
        let hits = match Question::parse(&item.question, EVAL_DEPTH) {
            Ok(question) => {
                let translation = match translator {
                    Some(g) => retrieve::for_search(kb, g, &question, true)?,
                    None => None,
                };
                retrieve::search(kb, question.query(), translation.as_deref(), mode)?
            }
            Err(Error::InvalidQuery(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let rank = hits
            .iter()
            .find(|h| item.holds_answer(&h.text))
            .map(|h| h.rank);
        let has_vectors = kb.generation().vector.is_some();
        outcomes.push(RetrievalOutcome {
            id: item.id.clone(),
            lang: item.lang.clone(),
            rank: rank.filter(|_| item.in_scope),
            in_scope: item.in_scope,
            top_bm25: top(SearchMode::Bm25, &item.question)?.unwrap_or(0.0),
            top_cosine: if has_vectors {
                top(SearchMode::Vector, &item.question)?
            } else {
                None
            },
        });
    }
    let outcomes_all = outcomes;
    let outcomes: Vec<RetrievalOutcome> = outcomes_all
        .iter()
        .filter(|o| o.in_scope)
        .cloned()
        .collect();
    let by_lang = per_lang(&outcomes, |o| &o.lang, metrics);
    Ok(RetrievalReport {
        mode,
        translated: translator.is_some(),
        overall: metrics(&outcomes.iter().collect::<Vec<_>>()),
        by_lang,
        outcomes: outcomes_all,
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
        let mode = if self.translated {
            format!("{} + translation", self.mode)
        } else {
            self.mode.to_string()
        };
        let row = |s: &mut String, group: &str, m: &RetrievalMetrics| {
            s.push_str(&format!(
                "| {mode} | {group} | {} | {:.3} | {:.3} | {:.3} |\n",
                m.questions, m.recall_at_1, m.recall_at_5, m.mrr
            ));
        };
        row(&mut s, "all", &self.overall);
        for (lang, m) in &self.by_lang {
            row(&mut s, lang, m);
        }
        s
    }
}

/// Answer quality for a group of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerMetrics {
    /// In-scope questions.
    pub in_scope: usize,
    /// Out-of-scope questions.
    pub out_of_scope: usize,
    /// In-scope answers that are grounded and contain every keyword group.
    pub answer_accuracy: f64,
    /// Out-of-scope questions refused.
    pub refusal_accuracy: f64,
    /// In-scope questions refused (a `not_sure` answer is not a refusal).
    pub false_refusals: f64,
    /// In-scope questions answered (asserted) and wrong: the failure that
    /// costs a reader's trust.
    #[serde(default)]
    pub confidently_wrong: f64,
    /// In-scope questions answered `not_sure`.
    #[serde(default)]
    pub not_sure: f64,
    /// Of the `not_sure` answers to in-scope questions, the share whose
    /// quoted evidence holds the answer (every keyword group).
    #[serde(default)]
    pub not_sure_evidence_holds: f64,
    /// Citations (of grounded in-scope answers) whose passage holds the answer.
    pub citation_precision: f64,
    /// Median time per question.
    pub p50_ms: f64,
    /// Mean generated tokens per question.
    pub mean_completion_tokens: f64,
}

/// One question's answer, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerOutcome {
    /// Question id.
    pub id: String,
    /// Its language.
    pub lang: String,
    /// Whether the knowledge base holds the answer.
    pub in_scope: bool,
    /// The answer was grounded (asserted: status `answered`).
    pub grounded: bool,
    /// Answered, not sure, or refused.
    #[serde(default)]
    pub status: Status,
    /// The answer's calibrated confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// What the confidence was computed from (for fitting its weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Signals>,
    /// Whether the checked answer (asserted or not) holds every keyword
    /// group: what the confidence must predict. `None` when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_correct: Option<bool>,
    /// Whether the first, and the first three, sentences of the first
    /// cited passage ranked by the question hold every keyword group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_evidence: Option<(bool, bool)>,
    /// In scope, grounded, and every keyword group is in the answer.
    pub correct: bool,
    /// Citations given, and how many of them hold the answer.
    pub citations: usize,
    /// Of `citations`, those whose passage contains a gold marker.
    pub good_citations: usize,
    /// Keyword groups the answer missed.
    pub missing: Vec<String>,
    /// The answer text.
    pub answer: String,
    /// Time taken.
    pub ms: f64,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The model's probability of refusing (for calibration).
    #[serde(default)]
    pub refusal_score: Option<f32>,
    /// Why it was refused, if it was.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// What the model wrote when its answer was refused.
    #[serde(default)]
    pub model_text: Option<String>,
    /// The model's answer as written, when `answer` is its translation
    /// into the question's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// The passages given (chunk ids, in prompt order).
    #[serde(default)]
    pub passages: Vec<String>,
    /// With several readings: how each fared, judged like the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readings: Vec<ReadingOutcome>,
}

/// How one reading of a question fared (see `crate::answer::Reading`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingOutcome {
    /// Its passage order.
    pub order: crate::answer::Order,
    /// It passed the checks.
    pub passed: bool,
    /// Its confidence, if it passed.
    pub confidence: Option<f32>,
    /// What the confidence was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<crate::answer::Signals>,
    /// Its text (checked, or as written when refused) holds the answer.
    pub correct: bool,
}

/// A whole answer evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerReport {
    /// The model file.
    pub model: String,
    /// All questions.
    pub overall: AnswerMetrics,
    /// Per language.
    pub by_lang: BTreeMap<String, AnswerMetrics>,
    /// Per question.
    pub outcomes: Vec<AnswerOutcome>,
}

/// The passages holding one of `item`'s gold markers, as search hits (at
/// most `k`, in corpus order; none for an out-of-scope question).
fn gold_hits(kb: &Kb, item: &EvalItem, k: usize) -> Vec<SearchHit> {
    kb.generation()
        .chunks
        .iter()
        .filter(|c| item.holds_answer(&c.text))
        .take(k)
        .enumerate()
        .map(|(i, c)| SearchHit {
            rank: i + 1,
            chunk_id: c.id.clone(),
            source: c.source.clone(),
            section: c.section.clone(),
            text: c.text.clone(),
            score: 1.0,
            bm25_rank: None,
            vector_rank: None,
        })
        .collect()
}

/// Keyword groups (`a|b` = either, case-insensitive) missing from `answer`.
pub fn missing_keywords(keywords: &[String], answer: &str) -> Vec<String> {
    let lower = answer.to_lowercase();
    keywords
        .iter()
        .filter(|group| {
            !group
                .split('|')
                .any(|alt| !alt.is_empty() && lower.contains(&alt.to_lowercase()))
        })
        .cloned()
        .collect()
}

/// Asks every question and judges the answers. `progress` gets each outcome.
///
/// With `oracle`, retrieval is skipped: the model is given the passages
/// that hold a gold marker (at most `opts.k`, in corpus order), and nothing
/// else. The figures then measure the model and the checks alone — an upper
/// bound on what better retrieval or ranking could bring.
pub fn evaluate_answers(
    kb: &Kb,
    generator: &dyn Generator,
    items: &[EvalItem],
    opts: &AskOptions,
    oracle: bool,
    progress: &mut dyn FnMut(usize, &AnswerOutcome),
) -> Result<AnswerReport> {
    let mut outcomes = Vec::new();
    let by_id: std::collections::HashMap<&str, &str> = kb
        .generation()
        .chunks
        .iter()
        .map(|c| (c.id.as_str(), c.text.as_str()))
        .collect();
    for (i, item) in items.iter().enumerate() {
        let question = Question::parse(&item.question, opts.k)?;
        let a = if oracle {
            let retrieved = Retrieved {
                hits: gold_hits(kb, item, opts.k),
                translation: None,
                since: std::time::Instant::now(),
            };
            let embedder = kb.embedder().ok();
            crate::answer::answer_from(
                generator,
                embedder.as_deref(),
                &question,
                &retrieved,
                opts,
                &mut |_| true,
            )?
        } else {
            crate::answer::ask(kb, generator, &question, opts, &mut |_| true)?
        };
        let outcome = judge(item, a, &by_id);
        progress(i, &outcome);
        outcomes.push(outcome);
    }
    let by_lang = per_lang(&outcomes, |o| &o.lang, answer_metrics);
    Ok(AnswerReport {
        model: generator.name(),
        overall: answer_metrics(&outcomes.iter().collect::<Vec<_>>()),
        by_lang,
        outcomes,
    })
}

/// How `a` fares on `item`; `by_id` gives a chunk's text.
fn judge(
    item: &EvalItem,
    a: Answer,
    by_id: &std::collections::HashMap<&str, &str>,
) -> AnswerOutcome {
    let missing = if a.grounded {
        missing_keywords(&item.keywords, &a.answer)
    } else {
        item.keywords.clone()
    };
    let holds = |text: &str| item.in_scope && missing_keywords(&item.keywords, text).is_empty();
    let checked_correct = match a.status {
        Status::Answered => Some(holds(&a.answer)),
        Status::NotSure => Some(holds(a.model_text.as_deref().unwrap_or(""))),
        Status::Refused => None,
    };
    let question_evidence = a.citations.first().filter(|_| item.in_scope).map(|c| {
        let top = |n: usize| {
            c.on_question
                .iter()
                .take(n)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        };
        (holds(&top(1)), holds(&top(3)))
    });
    let good_citations = a
        .citations
        .iter()
        .filter(|c| {
            by_id
                .get(c.chunk_id.as_str())
                .is_some_and(|t| item.holds_answer(t))
        })
        .count();
    AnswerOutcome {
        id: item.id.clone(),
        lang: item.lang.clone(),
        in_scope: item.in_scope,
        grounded: a.grounded,
        status: a.status,
        confidence: a.confidence,
        signals: a.signals,
        checked_correct,
        question_evidence,
        correct: item.in_scope && a.grounded && missing.is_empty(),
        citations: a.citations.len(),
        good_citations,
        missing,
        ms: a.timings.total_ms,
        completion_tokens: a.usage.completion_tokens,
        refusal_score: a.refusal_score,
        refusal: a.refusal,
        model_text: a.model_text,
        written: a.written,
        passages: a.passages.iter().map(|p| p.chunk_id.clone()).collect(),
        readings: a
            .readings
            .iter()
            .map(|r| ReadingOutcome {
                order: r.order,
                passed: r.passed,
                confidence: r.confidence,
                signals: r.signals,
                correct: holds(&r.text),
            })
            .collect(),
        answer: a.answer,
    }
}

fn answer_metrics(group: &[&AnswerOutcome]) -> AnswerMetrics {
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let ins: Vec<&&AnswerOutcome> = group.iter().filter(|o| o.in_scope).collect();
    let outs: Vec<&&AnswerOutcome> = group.iter().filter(|o| !o.in_scope).collect();
    let cited: usize = ins.iter().filter(|o| o.grounded).map(|o| o.citations).sum();
    let good: usize = ins
        .iter()
        .filter(|o| o.grounded)
        .map(|o| o.good_citations)
        .sum();
    let unsure: Vec<&&AnswerOutcome> = ins
        .iter()
        .filter(|o| o.status == Status::NotSure)
        .copied()
        .collect();
    let mut times: Vec<f64> = group.iter().map(|o| o.ms).collect();
    times.sort_by(f64::total_cmp);
    AnswerMetrics {
        in_scope: ins.len(),
        out_of_scope: outs.len(),
        answer_accuracy: ratio(ins.iter().filter(|o| o.correct).count(), ins.len()),
        refusal_accuracy: ratio(outs.iter().filter(|o| !o.grounded).count(), outs.len()),
        false_refusals: ratio(
            ins.iter().filter(|o| o.status == Status::Refused).count(),
            ins.len(),
        ),
        confidently_wrong: ratio(
            ins.iter()
                .filter(|o| o.status == Status::Answered && !o.correct)
                .count(),
            ins.len(),
        ),
        not_sure: ratio(unsure.len(), ins.len()),
        not_sure_evidence_holds: ratio(
            unsure.iter().filter(|o| quote_holds(o)).count(),
            unsure.len(),
        ),
        citation_precision: ratio(good, cited),
        p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        mean_completion_tokens: ratio(group.iter().map(|o| o.completion_tokens).sum(), group.len()),
    }
}

/// Whether a `not_sure` answer's quote (the first cited passage's
/// sentence that best answers the question) holds every keyword group.
fn quote_holds(o: &AnswerOutcome) -> bool {
    o.question_evidence.is_some_and(|(top1, _)| top1)
}

impl AnswerReport {
    /// A Markdown table: overall and per language.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| model | group | in scope | out of scope | answer accuracy | confidently wrong | not sure (evidence holds) | refusal accuracy | false refusals | citation precision | p50 s | tokens/answer |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let row = |s: &mut String, group: &str, m: &AnswerMetrics| {
            s.push_str(&format!(
                "| {} | {group} | {} | {} | {:.3} | {:.3} | {:.3} ({:.2}) | {:.3} | {:.3} | {:.3} | {:.1} | {:.0} |\n",
                self.model,
                m.in_scope,
                m.out_of_scope,
                m.answer_accuracy,
                m.confidently_wrong,
                m.not_sure,
                m.not_sure_evidence_holds,
                m.refusal_accuracy,
                m.false_refusals,
                m.citation_precision,
                m.p50_ms / 1000.0,
                m.mean_completion_tokens
            ));
        };
        row(&mut s, "all", &self.overall);
        for (lang, m) in &self.by_lang {
            row(&mut s, lang, m);
        }
        s
    }
}
