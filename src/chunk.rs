//! Cutting documents into passages ("chunks") that retrieval ranks and
//! answers cite.
//!
//! A chunk is an exact span of its source file: `text == source[start..end]`
//! (offsets in chars). Chunks follow the document's structure — a heading
//! opens a new chunk, short paragraphs of one section are packed together up
//! to `target_chars`, and a long paragraph is split at sentence ends
//! (`。！？；.!?;`) with up to `overlap_chars` of whole sentences repeated.
//! A sentence longer than twice the target is cut at a comma or space, and
//! never inside a word or a number such as `312TFLOPS`.
//!
//! Invariants (property-tested): every non-whitespace char of a document lies
//! in some chunk, and the same input gives the same chunks and ids.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::config::ChunkConfig;
use crate::corpus::{DocKind, Document, Glossary};
use crate::hash::hex;
use crate::text::{is_cjk, sentences};

/// The longest a chunk may grow before a sentence is cut inside.
fn hard_max(config: &ChunkConfig) -> usize {
    config.target_chars * 2
}

/// Where a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkKind {
    /// A span of a document.
    Passage,
    /// One glossary entry (its text is rendered from the entry's fields).
    Glossary,
}

/// A retrievable, citable passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Stable id: a hash of source path and text (plus an occurrence number
    /// when the same text repeats in one file).
    pub id: String,
    /// Source path relative to the corpus root.
    pub source: String,
    /// Heading path, e.g. `一、通过了解chatGPT来理解什么是大模型`.
    pub section: String,
    /// The passage text.
    pub text: String,
    /// Start offset in the source file, in chars.
    pub start: usize,
    /// End offset (exclusive) in the source file, in chars.
    pub end: usize,
    /// Passage or glossary entry.
    pub kind: ChunkKind,
}

/// Chunks a whole corpus in a fixed order: documents, then glossaries.
pub fn chunk_corpus(corpus: &crate::corpus::Corpus, config: &ChunkConfig) -> Vec<Chunk> {
    chunk_corpus_with(corpus, config, &mut |_, _| {})
}

/// [`chunk_corpus`], telling `on_file(done, total)` after each file: a
/// large corpus takes a while.
pub fn chunk_corpus_with(
    corpus: &crate::corpus::Corpus,
    config: &ChunkConfig,
    on_file: &mut dyn FnMut(usize, usize),
) -> Vec<Chunk> {
    let total = corpus.documents.len() + corpus.glossaries.len();
    let mut chunks = Vec::new();
    for (i, doc) in corpus.documents.iter().enumerate() {
        chunks.extend(chunk_document(doc, config));
        on_file(i + 1, total);
    }
    for (i, g) in corpus.glossaries.iter().enumerate() {
        chunks.extend(chunk_glossary(g));
        on_file(corpus.documents.len() + i + 1, total);
    }
    chunks
}

/// One chunk per glossary entry.
pub fn chunk_glossary(glossary: &Glossary) -> Vec<Chunk> {
    let mut ids = IdMaker::new(&glossary.source);
    glossary
        .entries
        .iter()
        .map(|e| {
            let text = e.render();
            Chunk {
                id: ids.id(&text),
                source: glossary.source.clone(),
                section: format!("Glossary > {}", e.term),
                text,
                start: e.span.0,
                end: e.span.1,
                kind: ChunkKind::Glossary,
            }
        })
        .collect()
}

/// Chunks one document.
pub fn chunk_document(doc: &Document, config: &ChunkConfig) -> Vec<Chunk> {
    let spans = chunk_spans(&doc.text, doc.kind, config);
    let fallback_section = doc
        .source
        .rsplit('/')
        .next()
        .unwrap_or(&doc.source)
        .to_string();
    let mut ids = IdMaker::new(&doc.source);
    let mut starts = CharCursor::new(&doc.text);
    let mut ends = CharCursor::new(&doc.text);
    spans
        .into_iter()
        .map(|s| {
            let text = doc.text[s.start..s.end].to_string();
            Chunk {
                id: ids.id(&text),
                source: doc.source.clone(),
                section: if s.section.is_empty() {
                    fallback_section.clone()
                } else {
                    s.section
                },
                start: starts.char_offset(s.start),
                end: ends.char_offset(s.end),
                text,
                kind: ChunkKind::Passage,
            }
        })
        .collect()
}

/// A chunk before it gets an id: byte span plus heading path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Byte offset of the first char.
    pub start: usize,
    /// Byte offset past the last char.
    pub end: usize,
    /// Heading path (empty when the document has no headings yet).
    pub section: String,
}

/// The structural core of chunking, on byte offsets.
pub fn chunk_spans(text: &str, kind: DocKind, config: &ChunkConfig) -> Vec<Span> {
    let mut p = Packer {
        text,
        config,
        out: Vec::new(),
        headings: Vec::new(),
        pending: None,
        pack: None,
    };
    for block in blocks(text, kind) {
        match block {
            Block::Heading {
                level,
                title,
                start,
            } => p.heading(level, title, start),
            Block::Para { start, end } => p.para(start, end),
        }
    }
    p.finish()
}

/// Chunking in progress: whole short paragraphs are packed together up
/// to the target size; a long one is split at sentences; a heading ends
/// the pack and starts the next chunk.
struct Packer<'t> {
    text: &'t str,
    config: &'t ChunkConfig,
    out: Vec<Span>,
    headings: Vec<(usize, String)>,
    /// Start of a heading line not yet inside any chunk: the next chunk starts there.
    pending: Option<usize>,
    /// Whole short paragraphs being packed into one chunk: (start, end).
    pack: Option<(usize, usize)>,
}

impl Packer<'_> {
    fn section(&self) -> String {
        let headings = &self.headings;
        let skip = usize::from(headings.len() > 1 && headings[0].0 == 1);
        headings[skip..]
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    }

    fn push(&mut self, start: usize, end: usize, section: String) {
        self.out.push(Span {
            start,
            end,
            section,
        });
    }

    fn heading(&mut self, level: usize, title: String, start: usize) {
        if let Some((s, e)) = self.pack.take() {
            let section = self.section();
            self.push(s, e, section);
        }
        while self.headings.last().is_some_and(|(l, _)| *l >= level) {
            self.headings.pop();
        }
        self.headings.push((level, title));
        self.pending.get_or_insert(start);
    }

    fn para(&mut self, start: usize, end: usize) {
        let text = self.text;
        let section = self.section();
        let len = text[start..end].chars().count();
        if len > self.config.target_chars {
            if let Some((s, e)) = self.pack.take() {
                self.push(s, e, section.clone());
            }
            let first = self.pending.take().unwrap_or(start);
            let mut pieces = split_long(text, start, end, self.config);
            pieces[0].0 = first;
            for (s, e) in pieces {
                self.push(s, e, section.clone());
            }
            return;
        }
        self.pack = match self.pack {
            Some((s, _)) if text[s..end].chars().count() <= self.config.target_chars => {
                Some((s, end))
            }
            Some((s, e)) => {
                self.push(s, e, section);
                Some((start, end))
            }
            None => Some((self.pending.take().unwrap_or(start), end)),
        };
    }

    fn finish(mut self) -> Vec<Span> {
        if let Some((s, e)) = self.pack.take() {
            let section = self.section();
            self.push(s, e, section);
        }
        if let Some(s) = self.pending {
            // Headings with no text after them: keep them, so no text is lost.
            let end = self.text.trim_end().len().max(s);
            if end > s {
                let section = self.section();
                self.push(s, end, section);
            }
        }
        self.out
    }
}

enum Block {
    Heading {
        level: usize,
        title: String,
        start: usize,
    },
    Para {
        start: usize,
        end: usize,
    },
}

/// Headings and paragraphs (runs of non-blank lines; fenced code stays whole).
fn blocks(text: &str, kind: DocKind) -> Vec<Block> {
    let mut out = Vec::new();
    let mut para: Option<(usize, usize)> = None;
    let mut in_fence = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let content = line.trim_end();
        let end = start + content.len();
        let trimmed = content.trim_start();
        if kind == DocKind::Markdown && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            in_fence = !in_fence;
        }
        if !in_fence && trimmed.is_empty() {
            if let Some((s, e)) = para.take() {
                out.push(Block::Para { start: s, end: e });
            }
            continue;
        }
        if !in_fence && kind == DocKind::Markdown {
            if let Some((level, title)) = heading(trimmed) {
                if let Some((s, e)) = para.take() {
                    out.push(Block::Para { start: s, end: e });
                }
                out.push(Block::Heading {
                    level,
                    title,
                    start: start + (content.len() - trimmed.len()),
                });
                continue;
            }
        }
        let first = start + (content.len() - trimmed.len());
        para = Some(match para {
            Some((s, _)) => (s, end),
            None => (first, end),
        });
    }
    if let Some((s, e)) = para {
        out.push(Block::Para { start: s, end: e });
    }
    out
}

/// `## Title ##` -> (2, "Title").
fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_string()))
}

/// Splits a long paragraph `[start, end)` into pieces of about
/// `target_chars`, at sentence ends, consecutive pieces sharing up to
/// `overlap_chars` of whole sentences. Never returns an empty list.
fn split_long(text: &str, start: usize, end: usize, config: &ChunkConfig) -> Vec<(usize, usize)> {
    // Sentences, with their char lengths; over-long ones cut at safe points.
    let mut sents: Vec<(usize, usize, usize)> = Vec::new();
    for (s, e) in sentences(text, start, end) {
        let n = text[s..e].chars().count();
        if n > hard_max(config) {
            for (a, b) in hard_split(text, s, e, config.target_chars) {
                sents.push((a, b, text[a..b].chars().count()));
            }
        } else {
            sents.push((s, e, n));
        }
    }
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < sents.len() {
        let mut j = i;
        let mut len = sents[i].2;
        while j + 1 < sents.len() && len + sents[j + 1].2 <= config.target_chars {
            j += 1;
            len += sents[j].2;
        }
        pieces.push((sents[i].0, sents[j].1));
        if j + 1 >= sents.len() {
            break;
        }
        // Step back over whole trailing sentences that fit in the overlap,
        // but always move forward.
        let mut next = j + 1;
        let mut shared = 0;
        while next > i + 1 && shared + sents[next - 1].2 <= config.overlap_chars {
            next -= 1;
            shared += sents[next].2;
        }
        i = next;
    }
    pieces
}

fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() && !is_cjk(c))
        || matches!(
            c,
            '.' | '_' | '%' | '+' | '-' | '/' | '\'' | '{' | '}' | '^'
        )
}

/// Cuts an over-long sentence into pieces of at most ~`target` chars: at the
/// last comma or space in the window, else between two chars that are not
/// both part of a word or number, else (a single giant token) at the window.
fn hard_split(text: &str, start: usize, end: usize, target: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut piece_start = start;
    loop {
        let rest = &text[piece_start..end];
        let mut soft = None;
        let mut safe = None;
        let mut window_end = None;
        let mut prev: Option<char> = None;
        for (n, (i, c)) in rest.char_indices().enumerate() {
            if n == target {
                window_end = Some(i);
                break;
            }
            // A cut must leave some text before it (never a blank piece).
            if n > 0 && !rest[..i].trim().is_empty() {
                if let Some(p) = prev {
                    // A comma or space is the nicest cut, unless it leaves a tiny piece.
                    if n >= target / 2 && matches!(p, '，' | ',' | '、' | '：' | ':' | ' ' | '\t')
                    {
                        soft = Some(i);
                    }
                    if !(is_word_char(p) && is_word_char(c)) {
                        safe = Some(i);
                    }
                }
            }
            prev = Some(c);
        }
        let Some(window_end) = window_end else {
            out.push((piece_start, end));
            return out;
        };
        let cut = soft.or(safe).unwrap_or(window_end);
        if rest[cut..].trim().is_empty() {
            // Only white space is left: it belongs to this piece.
            out.push((piece_start, end));
            return out;
        }
        out.push((piece_start, piece_start + cut));
        piece_start += cut;
    }
}

/// Converts increasing byte offsets to char offsets in one pass.
struct CharCursor<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharCursor<'a> {
    fn new(text: &'a str) -> Self {
        CharCursor {
            text,
            byte: 0,
            chars: 0,
        }
    }

    fn char_offset(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        self.chars += self.text[self.byte..byte].chars().count();
        self.byte = byte;
        self.chars
    }
}

/// Stable ids: sha256 of source and text; repeats of the same text in one
/// file get an occurrence number so ids stay unique.
struct IdMaker<'a> {
    source: &'a str,
    seen: std::collections::HashMap<String, usize>,
}

impl<'a> IdMaker<'a> {
    fn new(source: &'a str) -> Self {
        IdMaker {
            source,
            seen: Default::default(),
        }
    }

    fn id(&mut self, text: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.source.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        let base = hex(&h.finalize()[..8]);
        let n = self.seen.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}-{n}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::is_sentence_end;

    fn doc(text: &str, kind: DocKind) -> Document {
        Document {
            source: "dir/a.md".into(),
            kind,
            text: text.into(),
            sha256: String::new(),
        }
    }

    fn cfg(target: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig {
            target_chars: target,
            overlap_chars: overlap,
        }
    }

    /// Every non-whitespace char is inside a chunk, and chunk text equals its span.
    fn assert_covers(text: &str, chunks: &[Chunk]) {
        let chars: Vec<char> = text.chars().collect();
        let mut covered = vec![false; chars.len()];
        for c in chunks {
            let span: String = chars[c.start..c.end].iter().collect();
            assert_eq!(span, c.text, "chunk text must equal its source span");
            covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
        }
        for (i, ch) in chars.iter().enumerate() {
            assert!(covered[i] || ch.is_whitespace(), "char {i} {ch:?} lost");
        }
    }

    #[test]
    fn headings_give_sections_and_open_chunks() {
        let text = "# Title\n\nIntro.\n\n## 一、部分\n\n正文一。\n\n### 小节\n\n正文二。\n\n## 二、部分\n\n正文三。\n";
        let chunks = chunk_document(&doc(text, DocKind::Markdown), &cfg(100, 20));
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(
            sections,
            ["Title", "一、部分", "一、部分 > 小节", "二、部分"]
        );
        assert!(chunks[1].text.starts_with("## 一、部分"));
        assert_covers(text, &chunks);
    }

    #[test]
    fn long_paragraph_splits_at_sentence_ends_with_overlap() {
        let para = "第一句话比较长一些。第二句也不短呢！第三句？第四句;第五句话在这里。".repeat(4);
        let chunks = chunk_document(&doc(&para, DocKind::Text), &cfg(40, 12));
        assert!(chunks.len() > 2);
        for c in &chunks {
            assert!(c.text.chars().count() <= 40, "{:?}", c.text);
        }
        for w in chunks.windows(2) {
            assert!(w[1].start <= w[0].end, "pieces are contiguous or overlap");
            let last = w[0].text.trim_end().chars().last().unwrap();
            assert!(
                is_sentence_end(last),
                "cut inside a sentence: {:?}",
                w[0].text
            );
        }
        assert!(
            chunks.windows(2).any(|w| w[1].start < w[0].end),
            "no overlap at all"
        );
        assert_covers(&para, &chunks);
    }

    #[test]
    fn never_cuts_inside_a_number() {
        let sentence = format!("{}单卡算力312TFLOPS{}", "很".repeat(37), "长".repeat(60));
        let chunks = chunk_document(&doc(&sentence, DocKind::Text), &cfg(20, 0));
        assert!(
            chunks.iter().any(|c| c.text.contains("312TFLOPS")),
            "{chunks:#?}"
        );
        assert_covers(&sentence, &chunks);
    }

    #[test]
    fn decimal_points_are_not_sentence_ends() {
        let s = sentences("版本3.5和v1.2.3;见图。", 0, "版本3.5和v1.2.3;见图。".len());
        assert_eq!(s.len(), 2, "{s:?}");
    }

    #[test]
    fn white_space_after_a_cut_sentence_stays_with_it() {
        // Found by proptest: a hard-split sentence used to leave a
        // whitespace-only last piece.
        let text = "，一一一，，一，一，一，一一一，一一一一，一一一一一，一一，，，一一一，一一一，一一一一，一，，，，，，，，\n\n\n\n\n\n a aaaa . 。";
        let chunks = chunk_document(&doc(text, DocKind::Text), &cfg(28, 0));
        assert!(
            chunks.iter().all(|c| !c.text.trim().is_empty()),
            "{chunks:#?}"
        );
        assert_covers(text, &chunks);
    }

    #[test]
    fn no_blank_piece_after_a_comma_and_spaces() {
        let text = format!("{},  {}", "a".repeat(18), "x".repeat(50));
        for overlap in [0, 1, 5] {
            let chunks = chunk_document(&doc(&text, DocKind::Text), &cfg(20, overlap));
            assert!(
                chunks.iter().all(|c| !c.text.trim().is_empty()),
                "{chunks:#?}"
            );
            assert_covers(&text, &chunks);
        }
    }

    #[test]
    fn repeated_text_gets_distinct_ids() {
        let text = "Same paragraph.\n\nOther.\n\nSame paragraph.\n";
        let chunks = chunk_document(&doc(text, DocKind::Text), &cfg(20, 0));
        let ids: std::collections::HashSet<_> = chunks.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), chunks.len());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn text_strategy() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("# 标题\n".to_string()),
                Just("## Section two\n".to_string()),
                Just("\n\n".to_string()),
                Just("\r\n".to_string()),
                Just("。".to_string()),
                Just(". ".to_string()),
                Just("312TFLOPS".to_string()),
                Just("```\ncode\n\n```\n".to_string()),
                "[a-z ]{1,30}",
                "[\u{4e00}-\u{4e80}，]{1,60}",
                "[😀-😊]{1,3}",
            ];
            prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn chunks_cover_every_char_and_are_deterministic(
                text in text_strategy(),
                target in 20usize..200,
                overlap_frac in 0usize..50,
                markdown in any::<bool>(),
            ) {
                let config = cfg(target, target * overlap_frac / 100);
                let kind = if markdown { DocKind::Markdown } else { DocKind::Text };
                let d = doc(&text, kind);
                let a = chunk_document(&d, &config);
                assert_covers(&text, &a);
                prop_assert_eq!(&a, &chunk_document(&d, &config));
                for c in &a {
                    prop_assert!(!c.text.trim().is_empty());
                }
            }
        }
    }
}
