//! The Chinese-aware analyzers on arbitrary text: no panic, and every
//! term is non-empty text. The analyzers (jieba's dictionary) are built
//! once, as a server builds them.
#![no_main]

use std::sync::{Mutex, OnceLock};

use kbqa::index::tokenizer::{analyzer, query_terms, terms, TokenizerKind};
use tantivy::tokenizer::TextAnalyzer;

fn analyzers() -> &'static Mutex<Vec<TextAnalyzer>> {
    static A: OnceLock<Mutex<Vec<TextAnalyzer>>> = OnceLock::new();
    A.get_or_init(|| {
        let words = ["RLHF".to_string(), "数据并行".to_string()];
        Mutex::new(
            [TokenizerKind::Jieba, TokenizerKind::Bigram, TokenizerKind::JiebaBigram]
                .into_iter()
                .map(|k| analyzer(k, &words))
                .collect(),
        )
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut all = analyzers().lock().unwrap();
    for a in all.iter_mut() {
        for t in terms(a, text).into_iter().chain(query_terms(a, text)) {
            assert!(!t.is_empty());
        }
    }
});
