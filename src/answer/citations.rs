//! `[n]` markers: reading the ones the model wrote (and dropping those
//! that name no given passage), writing the ones the checks add, and
//! cutting an answer where it starts copying the prompt.

/// Removes citation markers that name no given passage (`[7]` of five,
/// `[0]`), and returns the cited passage numbers in order of appearance.
/// Understands `[1]`, `[1, 2]`, `[1][2]` and full-width `【1】`.
pub fn clean_citations(text: &str, passages: usize) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut cited = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['[', '【']) {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let open_len = after.chars().next().map_or(1, char::len_utf8);
        let close = after.find([']', '】']);
        let inner = close.map(|c| &after[open_len..c]);
        let numbers: Option<Vec<usize>> = inner.and_then(|s| {
            let parts: Vec<&str> = s
                .split([',', '，', ' ', '、'])
                .filter(|p| !p.is_empty())
                .collect();
            if parts.is_empty() || s.len() > 24 {
                return None;
            }
            let mut out = Vec::new();
            for p in parts {
                match p.split_once(['-', '–']) {
                    // A range like [1-3]: at most a handful of passages.
                    Some((a, b)) => {
                        let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                        if a > b || b - a > 16 {
                            return None;
                        }
                        out.extend(a..=b);
                    }
                    None => out.push(p.parse::<usize>().ok()?),
                }
            }
            Some(out)
        });
        match (numbers, close) {
            (Some(ns), Some(c)) => {
                let valid: Vec<usize> = ns
                    .into_iter()
                    .filter(|&n| n >= 1 && n <= passages)
                    .collect();
                for &n in &valid {
                    if !cited.contains(&n) {
                        cited.push(n);
                    }
                }
                let close_len = after[c..].chars().next().map_or(1, char::len_utf8);
                rest = &after[c + close_len..];
                if !valid.is_empty() {
                    let list: Vec<String> = valid.iter().map(|n| n.to_string()).collect();
                    out.push_str(&format!("[{}]", list.join(", ")));
                } else if rest.starts_with(['.', '。', ',', '，', ';', '；']) {
                    // The dropped marker leaves no space before punctuation.
                    out.truncate(out.trim_end().len());
                }
            }
            _ => {
                out.push_str(&after[..open_len]);
                rest = &after[open_len..];
            }
        }
    }
    out.push_str(rest);
    (out, cited)
}

/// `text` without its `[n]` markers.
pub fn strip_markers(text: &str) -> String {
    clean_citations(text, 0).0
}

/// `[n]` markers to append to `text`, after a space when it ends in ASCII
/// ("…TFLOPS [2]", but "…计算。[2]").
pub(super) fn marker_suffix(text: &str, markers: &[usize]) -> String {
    let space = if text.chars().last().is_some_and(|c| c.is_ascii()) {
        " "
    } else {
        ""
    };
    std::iter::once(space.to_string())
        .chain(markers.iter().map(|n| format!("[{n}]")))
        .collect()
}

/// The answer up to where it starts copying the prompt: a small model
/// sometimes writes out its passages one after another, headers
/// ("[2] (section)") included, or the "Question:" line. The headers would
/// read as citations of everything it copied.
pub(super) fn copied_prompt_cut(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_start();
        let header = l
            .strip_prefix('[')
            .and_then(|r| r.split_once("] ("))
            .is_some_and(|(n, _)| {
                !n.is_empty() && n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit())
            });
        if offset > 0 && (header || l.starts_with("Question:") || l.starts_with("Passages:")) {
            return text[..offset].trim_end();
        }
        offset += line.len();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_prompt_is_cut_at_its_first_header() {
        assert_eq!(
            copied_prompt_cut("答案[1]。\n\n[2] (一、章节)\n别的"),
            "答案[1]。"
        );
        assert_eq!(copied_prompt_cut("A [1].\nQuestion: again?"), "A [1].");
        // A citation at a line start is not a header.
        assert_eq!(copied_prompt_cut("A.\n[1] says B."), "A.\n[1] says B.");
    }

    #[test]
    fn citations_outside_the_passages_are_dropped() {
        let (t, c) = clean_citations("EFLOPS is 10^18 FLOPS [2][7]. See [1, 9] and 【3】.", 3);
        assert_eq!(c, vec![2, 1, 3]);
        assert_eq!(t, "EFLOPS is 10^18 FLOPS [2]. See [1] and [3].");
        let (t, c) = clean_citations("no [citation] here [0]", 3);
        assert!(c.is_empty());
        assert_eq!(t, "no [citation] here ");
        let (_, c) = clean_citations("[1，2]", 2);
        assert_eq!(c, vec![1, 2]);
        let (t, c) = clean_citations("Facts [1-3] and [2–9].", 4);
        assert_eq!(c, vec![1, 2, 3, 4]);
        assert_eq!(t, "Facts [1, 2, 3] and [2, 3, 4].");
        let (t, _) = clean_citations("Use .NET here [7].", 2);
        assert_eq!(t, "Use .NET here.");
    }
}
