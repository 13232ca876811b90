//! Fitting output to where it goes: colour and width on a terminal,
//! plain text in a pipe.
//!
//! A pipe gets exactly the text, with no control codes and no wrapping,
//! so scripts see what they always saw. A terminal gets lines wrapped to
//! its width (Chinese text breaks between any two characters, other text
//! between words) and dimmed or highlighted parts, unless `NO_COLOR` is
//! set (<https://no-color.org>) or the terminal is `dumb`.

use std::io::IsTerminal;

use unicode_width::UnicodeWidthChar;

/// How text is shown on one output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Whether colour and emphasis codes are written.
    pub color: bool,
    /// The width to wrap to, if any.
    pub width: Option<usize>,
}

impl Look {
    /// Text as it is: no codes, no wrapping.
    pub const PLAIN: Look = Look {
        color: false,
        width: None,
    };

    /// The look for standard output: the terminal's, or plain in a pipe.
    pub fn stdout() -> Look {
        if !std::io::stdout().is_terminal() {
            return Look::PLAIN;
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Look {
            color: !no_color && !dumb,
            width: console::Term::stdout()
                .size_checked()
                .map(|(_, cols)| usize::from(cols)),
        }
    }

    /// `s` dimmed: evidence and notes, secondary to the answer.
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    /// `s` in bold: headings.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// `s` in yellow: what a reader must not miss (an answer not asserted).
    pub fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// `text` as lines that fit the width, each starting with `indent`;
    /// without a width, one line per paragraph of `text`.
    pub fn wrap(&self, text: &str, indent: &str) -> Vec<String> {
        let room = self
            .width
            .map(|w| w.saturating_sub(display_width(indent)).max(20));
        text.lines()
            .flat_map(|para| match room {
                Some(room) => wrap(para, room),
                None => vec![para.to_string()],
            })
            .map(|line| format!("{indent}{line}"))
            .collect()
    }
}

/// Columns `s` takes on a terminal.
pub fn display_width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// One paragraph as lines of at most `room` columns. A wide (CJK)
/// character is a piece of its own, so Chinese breaks anywhere; other
/// text breaks at spaces, and a word longer than a line is split.
fn wrap(para: &str, room: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    let mut space = false;
    for piece in pieces(para) {
        if piece.chars().all(char::is_whitespace) {
            space = used > 0;
            continue;
        }
        let width = display_width(piece);
        if used > 0 && used + usize::from(space) + width > room {
            lines.push(std::mem::take(&mut line));
            used = 0;
            space = false;
        }
        if space {
            line.push(' ');
            used += 1;
            space = false;
        }
        for c in piece.chars() {
            let w = c.width().unwrap_or(0);
            if used > 0 && used + w > room {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            line.push(c);
            used += w;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Punctuation that closes what comes before it: a line never starts
/// with it.
fn closes(c: char) -> bool {
    "，。、；：？！）」』】》〉”’…,.;:!?)]}%".contains(c)
}

/// Runs of spaces, single wide characters, and runs of anything else;
/// closing punctuation stays with the piece before it.
fn pieces(text: &str) -> Vec<&str> {
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Space,
        Wide,
        Word,
    }
    let kind = |c: char| {
        if c.is_whitespace() {
            Kind::Space
        } else if c.width().unwrap_or(0) > 1 {
            Kind::Wide
        } else {
            Kind::Word
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut last: Option<Kind> = None;
    for (i, c) in text.char_indices() {
        let k = kind(c);
        if closes(c) && last.is_some_and(|l| l != Kind::Space) {
            continue;
        }
        if let Some(prev) = last {
            if prev != k || k == Kind::Wide {
                out.push(&text[start..i]);
                start = i;
            }
        }
        last = Some(k);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_breaks_between_words_and_chinese_anywhere() {
        let look = Look {
            color: false,
            width: Some(24),
        };
        let lines = look.wrap(
            "RLHF means reinforcement learning from human feedback.",
            "  ",
        );
        assert_eq!(
            lines,
            [
                "  RLHF means",
                "  reinforcement learning",
                "  from human feedback."
            ]
        );
        let zh = look.wrap("人类反馈强化学习是一种用人类的评分来训练模型的方法。", "");
        assert!(zh.iter().all(|l| display_width(l) <= 24), "{zh:?}");
        assert_eq!(
            zh.concat(),
            "人类反馈强化学习是一种用人类的评分来训练模型的方法。"
        );
        assert_eq!(zh.len(), 3);
        // No line starts with closing punctuation.
        let narrow = Look {
            color: false,
            width: Some(21),
        };
        let lines = narrow.wrap("一二三四五六七八九十，一二三四五六七八九十。", "");
        assert_eq!(
            lines,
            ["一二三四五六七八九", "十，一二三四五六七八", "九十。"]
        );
    }

    proptest::proptest! {
        #[test]
        fn wrapping_keeps_every_character_and_fits(text in "\\PC{0,200}", width in 20usize..100) {
            let lines = wrap(&text, width);
            for l in &lines {
                // A single character wider than the room is the only excuse.
                proptest::prop_assert!(display_width(l) <= width, "{l:?}");
            }
            let kept: String = lines.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let given: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            proptest::prop_assert_eq!(kept, given);
        }
    }

    #[test]
    fn plain_output_has_no_codes_and_no_wrapping() {
        let long = "word ".repeat(50);
        assert_eq!(Look::PLAIN.wrap(&long, "  "), [format!("  {long}")]);
        assert_eq!(Look::PLAIN.dim("x"), "x");
        let color = Look {
            color: true,
            width: None,
        };
        assert_eq!(color.dim("x"), "\x1b[2mx\x1b[0m");
    }
}
