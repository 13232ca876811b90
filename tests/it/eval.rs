//! Retrieval quality on the shipped evaluation set, through the real index.

use kbqa::eval::{evaluate_retrieval, load_set};
use kbqa::retrieve::SearchMode;
use kbqa::{Config, Kb};

use crate::util::{repo, Scratch};

#[test]
fn eval_set_is_well_formed_and_balanced() {
    let items = load_set(&repo().join("tests/eval/qa.jsonl")).unwrap();
    let count = |f: &dyn Fn(&kbqa::eval::EvalItem) -> bool| items.iter().filter(|i| f(i)).count();
    assert!(items.len() >= 80);
    assert!(count(&|i| !i.in_scope) >= 12);
    let zh = count(&|i| i.lang == "zh");
    let en = count(&|i| i.lang == "en");
    assert!(zh.abs_diff(en) <= items.len() / 10, "zh {zh} vs en {en}");
    let terms: std::collections::HashSet<&str> = items
        .iter()
        .filter_map(|i| i.covers.strip_prefix("glossary:"))
        .collect();
    assert!(terms.len() >= 30, "{} glossary terms covered", terms.len());
    for part in ["intro", "一", "二", "三", "四", "learning"] {
        assert!(
            items.iter().any(|i| i.covers == format!("article:{part}")),
            "no question on {part}"
        );
    }
}

#[test]
fn bm25_recall_at_5_is_at_least_085() {
    let s = Scratch::new();
    let config = Config {
        corpus: repo().join("corpus"),
        index_dir: s.index_dir(),
        ..Config::default()
    };
    let kb = Kb::open(&config, &mut |_| {}).unwrap();
    let items = load_set(&repo().join("tests/eval/qa.jsonl")).unwrap();
    let r = evaluate_retrieval(&kb, &items, SearchMode::Bm25, None).unwrap();
    eprintln!("{}", r.to_markdown());
    assert!(
        r.overall.recall_at_5 >= 0.85,
        "recall@5 {:.3}",
        r.overall.recall_at_5
    );
    assert!(
        r.by_lang["zh"].recall_at_5 >= 0.95,
        "zh recall@5 {:.3}",
        r.by_lang["zh"].recall_at_5
    );
}
