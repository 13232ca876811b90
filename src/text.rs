//! Small text helpers that any layer may use: which language a text is
//! in, Chinese characters, sentence spans and display snippets.
//!
//! They sit at the bottom of the crate (they import nothing of it) because
//! the chunker, the retriever, the answer checks and the front ends all
//! need the same answers to "is this Chinese?" and "where does this
//! sentence end?": two versions of either would disagree on some input.

use serde::{Deserialize, Serialize};

/// The language of a question (and so of its answer and refusal), or of a
/// passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Chinese.
    Zh,
    /// English (and anything else without Chinese characters).
    En,
}

impl Lang {
    /// Chinese when Chinese characters outnumber Latin-script words (an
    /// English question may name a Chinese term, and vice versa).
    pub fn detect(text: &str) -> Lang {
        let han = text.chars().filter(|&c| is_cjk(c)).count();
        let words = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .count();
        if han > 0 && han >= words {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    /// The other one of the two.
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

/// Chinese, Japanese and Korean characters: each is its own word for chunking.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF | 0x3040..=0x30FF | 0x3100..=0x312F | 0x3190..=0x31FF |
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF |
        0x20000..=0x2FA1F)
}

/// Characters that end a sentence in Chinese or English text.
pub fn is_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '!' | '?' | ';' | '…')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '”' | '’' | '」' | '』' | '）' | ')' | '】' | '"' | '\'' | '》'
    )
}

/// Sentence spans covering `[start, end)` exactly (trailing space included).
pub fn sentences(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let s = &text[start..end];
    let mut out = Vec::new();
    let mut sent_start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let next = it.peek().map(|&(_, n)| n);
        let ends =
            is_sentence_end(c) || (c == '.' && next.is_none_or(char::is_whitespace)) || (c == '\n');
        if !ends || next.is_some_and(is_sentence_end) {
            continue;
        }
        let mut cut = i + c.len_utf8();
        while let Some(&(j, n)) = it.peek() {
            if is_closer(n) || n.is_whitespace() {
                cut = j + n.len_utf8();
                it.next();
            } else {
                break;
            }
        }
        if cut < s.len() {
            out.push((start + sent_start, start + cut));
            sent_start = cut;
        }
    }
    out.push((start + sent_start, end));
    out
}

/// The start of `text` for display: white space folded to single spaces,
/// at most `max_chars` characters, with `…` when cut.
pub fn snippet(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_follows_the_question() {
        assert_eq!(Lang::detect("什么是RLHF？"), Lang::Zh);
        assert_eq!(Lang::detect("What does EFLOPS mean?"), Lang::En);
        assert_eq!(
            Lang::detect("How many attended the first 智算 training?"),
            Lang::En
        );
        assert_eq!(Lang::detect("RLHF和SFT有什么区别"), Lang::Zh);
        assert_eq!(Lang::Zh.other(), Lang::En);
    }

    #[test]
    fn snippets_fold_space_and_cut_on_characters() {
        assert_eq!(snippet("  a\n\n b  ", 10), "a b");
        assert_eq!(snippet("大模型的训练", 3), "大模型…");
    }
}
