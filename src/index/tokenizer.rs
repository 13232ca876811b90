//! The text analyzer shared by indexing and querying: Chinese, English and
//! mixed text ("A100显卡", "RLHF（人类反馈强化学习）", "10{18}").
//!
//! Each char is normalised (full-width ASCII to half-width, lower case), then
//! the text is cut into runs: CJK runs are segmented by the chosen
//! [`TokenizerKind`], letter/digit runs become one term plus their letter and
//! digit parts (`312tflops` also gives `312` and `tflops`), everything else
//! separates. English terms are then Porter-stemmed (`gpus` = `gpu`).
//! Stop words are removed from queries only, so the index does not depend on
//! the stop list.

use std::sync::{Arc, OnceLock};

use jieba_rs::Jieba;
use tantivy::tokenizer::{Language, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer};

pub use crate::config::TokenizerKind;
use crate::text::is_cjk;

/// The name the analyzer is registered under in the tantivy index.
pub const ANALYZER_NAME: &str = "kbqa";

/// Builds the analyzer. `custom_words` (e.g. glossary terms such as
/// 流水线并行) are added to jieba's dictionary so they stay whole.
pub fn analyzer(kind: TokenizerKind, custom_words: &[String]) -> TextAnalyzer {
    let jieba = match kind {
        TokenizerKind::Bigram => None,
        _ => Some(jieba_with(custom_words)),
    };
    TextAnalyzer::builder(KbTokenizer {
        kind,
        jieba,
        tokens: Vec::new(),
    })
    .filter(Stemmer::new(Language::English))
    .build()
}

fn jieba_with(custom_words: &[String]) -> Arc<Jieba> {
    static DEFAULT: OnceLock<Arc<Jieba>> = OnceLock::new();
    let words: Vec<&String> = custom_words
        .iter()
        .filter(|w| w.chars().count() > 1 && w.chars().all(is_cjk))
        .collect();
    if words.is_empty() {
        return DEFAULT.get_or_init(|| Arc::new(Jieba::new())).clone();
    }
    let mut j = DEFAULT
        .get_or_init(|| Arc::new(Jieba::new()))
        .as_ref()
        .clone();
    for w in words {
        j.add_word(w, None, None);
    }
    Arc::new(j)
}

/// The terms of `text`, in order, as they are indexed.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The distinct, non-stop-word terms of a query, in order.
pub fn query_terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    terms(analyzer, text)
        .into_iter()
        .filter(|t| !is_stop_word(t))
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// Question words and function words that only add noise to a query.
/// (Terms arrive stemmed, so e.g. `does` is `doe`.) Long because it is a
/// word list, one word a line as rustfmt lays it out, not logic.
fn is_stop_word(t: &str) -> bool {
    const WORDS: &[&str] = &[
        // English (Porter-stemmed forms included)
        "a",
        "an",
        "the",
        "is",
        "are",
        "wa",
        "was",
        "were",
        "be",
        "been",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "doe",
        "does",
        "do",
        "did",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "about",
        "as",
        "and",
        "or",
        "it",
        "its",
        "thi",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "i",
        "you",
        "we",
        "me",
        "my",
        "your",
        "our",
        "can",
        "could",
        "should",
        "would",
        "will",
        "may",
        "has",
        "have",
        "had",
        "than",
        "so",
        "into",
        "also",
        "mean",
        "tell",
        "explain",
        "pleas",
        "pleas",
        "ani",
        "some",
        "accord",
        "articl",
        "author",
        // Chinese
        "的",
        "了",
        "是",
        "吗",
        "呢",
        "吧",
        "啊",
        "呀",
        "什么",
        "怎么",
        "怎样",
        "如何",
        "为什么",
        "为何",
        "哪些",
        "哪个",
        "哪",
        "谁",
        "多少",
        "几",
        "有",
        "和",
        "与",
        "及",
        "或",
        "在",
        "这",
        "那",
        "这个",
        "那个",
        "一个",
        "我",
        "你",
        "他",
        "她",
        "它",
        "我们",
        "你们",
        "他们",
        "中",
        "里",
        "对",
        "把",
        "被",
        "就",
        "都",
        "也",
        "还",
        "又",
        "请",
        "说",
        "讲",
        "意思",
        "指",
        "哪里",
        "呢",
        "么",
        "啥",
        "吗",
    ];
    WORDS.contains(&t)
}

/// The tokenizer proper (before stemming).
#[derive(Clone)]
struct KbTokenizer {
    kind: TokenizerKind,
    jieba: Option<Arc<Jieba>>,
    tokens: Vec<Token>,
}

impl Tokenizer for KbTokenizer {
    type TokenStream<'a> = VecTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream<'a> {
        self.tokens.clear();
        let mut sink = Sink {
            tokens: &mut self.tokens,
        };
        for run in runs(text) {
            match run.class {
                Class::Cjk => cjk_terms(self.kind, self.jieba.as_deref(), &run, &mut sink),
                Class::Word => word_terms(text, &run, &mut sink),
            }
        }
        VecTokenStream {
            tokens: &mut self.tokens,
            next: 0,
        }
    }
}

struct VecTokenStream<'a> {
    tokens: &'a mut [Token],
    next: usize,
}

impl TokenStream for VecTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

struct Sink<'a> {
    tokens: &'a mut Vec<Token>,
}

impl Sink<'_> {
    /// Terms longer than this are noise (hashes, base64) and would bloat the index.
    const MAX_TERM_BYTES: usize = 64;

    fn push(&mut self, text: &str, from: usize, to: usize) {
        if text.is_empty() || text.len() > Self::MAX_TERM_BYTES {
            return;
        }
        self.tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position: self.tokens.len(),
            text: text.to_string(),
            position_length: 1,
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cjk,
    Word,
}

/// A run of one class: normalised text, plus the original byte offset of
/// each normalised char (and the run's end).
struct Run {
    class: Class,
    text: String,
    offsets: Vec<usize>,
    end: usize,
}

fn normalise(c: char) -> impl Iterator<Item = char> {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    c.to_lowercase()
}

fn runs(text: &str) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut current: Option<Run> = None;
    for (i, orig) in text.char_indices() {
        for c in normalise(orig) {
            let class = if is_cjk(c) {
                Some(Class::Cjk)
            } else if c.is_alphanumeric() {
                Some(Class::Word)
            } else {
                None
            };
            match (&mut current, class) {
                (Some(run), Some(k)) if run.class == k => {
                    run.text.push(c);
                    run.offsets.push(i);
                    run.end = i + orig.len_utf8();
                }
                (_, Some(k)) => {
                    if let Some(run) = current.take() {
                        out.push(run);
                    }
                    current = Some(Run {
                        class: k,
                        text: c.to_string(),
                        offsets: vec![i],
                        end: i + orig.len_utf8(),
                    });
                }
                (_, None) => {
                    if let Some(run) = current.take() {
                        out.push(run);
                    }
                }
            }
        }
    }
    out.extend(current);
    out
}

impl Run {
    /// Original byte offsets of normalised chars `[a, b)`.
    fn span(&self, a: usize, b: usize) -> (usize, usize) {
        (
            self.offsets[a],
            self.offsets.get(b).copied().unwrap_or(self.end),
        )
    }
}

fn word_terms(original: &str, run: &Run, sink: &mut Sink) {
    let chars: Vec<char> = run.text.chars().collect();
    let (from, to) = run.span(0, chars.len());
    // Plural acronyms (GPUs, LLMs) are the acronym: the stemmer keeps a
    // final `s` after a vowel ("gpus"), so drop it here.
    let acronym = &original[from..to];
    if acronym.len() >= 3
        && acronym.ends_with('s')
        && acronym[..acronym.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_uppercase())
    {
        sink.push(&run.text[..run.text.len() - 1], from, to);
        return;
    }
    sink.push(&run.text, from, to);
    // Letter/digit parts of a mixed run: `a100` -> `100`, `312tflops` -> `312`, `tflops`.
    let mut start = 0;
    let mut parts = Vec::new();
    for i in 1..=chars.len() {
        if i == chars.len() || chars[i].is_numeric() != chars[i - 1].is_numeric() {
            parts.push((start, i));
            start = i;
        }
    }
    if parts.len() > 1 {
        for (a, b) in parts {
            let part: String = chars[a..b].iter().collect();
            if b - a >= 2 || chars[a].is_numeric() {
                let (from, to) = run.span(a, b);
                sink.push(&part, from, to);
            }
        }
    }
}

fn cjk_terms(kind: TokenizerKind, jieba: Option<&Jieba>, run: &Run, sink: &mut Sink) {
    if let Some(jieba) = jieba {
        for w in jieba.cut_for_search(&run.text, true) {
            let (from, to) = run.span(w.start, w.end);
            sink.push(w.word, from, to);
        }
    }
    if matches!(kind, TokenizerKind::Bigram | TokenizerKind::JiebaBigram) {
        let chars: Vec<(usize, char)> = run.text.char_indices().collect();
        if chars.len() == 1 && kind == TokenizerKind::Bigram {
            let (from, to) = run.span(0, 1);
            sink.push(&run.text, from, to);
        }
        for i in 0..chars.len().saturating_sub(1) {
            let a = chars[i].0;
            let b = chars.get(i + 2).map_or(run.text.len(), |c| c.0);
            let (from, to) = run.span(i, i + 2);
            sink.push(&run.text[a..b], from, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: TokenizerKind, s: &str) -> Vec<String> {
        terms(&mut analyzer(kind, &[]), s)
    }

    #[test]
    fn mixed_text() {
        let got = t(TokenizerKind::Jieba, "A100显卡的算力是312TFLOPS");
        for want in ["a100", "100", "显卡", "算力", "312tflop", "312", "tflop"] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
        let got = t(TokenizerKind::Jieba, "RLHF（人类反馈强化学习）与 10{18}");
        for want in ["rlhf", "人类", "反馈", "强化", "学习", "10", "18"] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
    }

    #[test]
    fn full_width_and_case_fold() {
        assert_eq!(
            t(TokenizerKind::Bigram, "ＧＰＴ"),
            t(TokenizerKind::Bigram, "gpt")
        );
        assert_eq!(t(TokenizerKind::Bigram, "GPUs"), vec!["gpu"]);
        assert_eq!(t(TokenizerKind::Bigram, "models"), vec!["model"]);
    }

    #[test]
    fn bigrams() {
        assert_eq!(t(TokenizerKind::Bigram, "大模型"), vec!["大模", "模型"]);
        assert_eq!(t(TokenizerKind::Bigram, "我"), vec!["我"]);
    }

    #[test]
    fn custom_words_stay_whole() {
        let mut a = analyzer(TokenizerKind::Jieba, &["流水线并行".to_string()]);
        assert!(terms(&mut a, "流水线并行的原理").contains(&"流水线并行".to_string()));
    }

    #[test]
    fn queries_drop_stop_words() {
        let mut a = analyzer(TokenizerKind::Jieba, &[]);
        assert_eq!(query_terms(&mut a, "什么是RLHF？"), vec!["rlhf"]);
        assert_eq!(query_terms(&mut a, "What does EFLOPS mean?"), vec!["eflop"]);
    }
}
