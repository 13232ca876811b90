//! The chunker on arbitrary text: every chunk's text is exactly its source
//! span, every non-blank character is in some chunk, and chunking is
//! deterministic (the unit tests' property, on fuzzer-made inputs).
#![no_main]

use kbqa::chunk::{chunk_document, ChunkConfig};
use kbqa::corpus::{DocKind, Document};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = ChunkConfig {
        target_chars: 60,
        overlap_chars: 15,
    };
    for kind in [DocKind::Markdown, DocKind::Text] {
        let doc = Document {
            source: "fuzz.md".into(),
            kind,
            text: text.to_string(),
            sha256: String::new(),
        };
        let chunks = chunk_document(&doc, &config);
        let chars: Vec<char> = text.chars().collect();
        let mut covered = vec![false; chars.len()];
        for c in &chunks {
            assert!(c.start <= c.end && c.end <= chars.len());
            let span: String = chars[c.start..c.end].iter().collect();
            assert_eq!(span, c.text);
            covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
        }
        for (i, ch) in chars.iter().enumerate() {
            assert!(covered[i] || ch.is_whitespace(), "char {i} {ch:?} lost");
        }
        assert_eq!(chunks, chunk_document(&doc, &config));
    }
});
