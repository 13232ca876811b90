//! Answers in the question's language: reading Chinese passages, the
//! small model often answers an English question in Chinese (it copies).
//! Such an answer, once checked as written, is translated, and the
//! translation is shown only when it passes the checks itself.

use super::check::{check, Checked, Models};
use super::citations::{marker_suffix, strip_markers};
use super::options::AskOptions;
use super::translate::translate_answer;
use crate::error::Result;
use crate::text::Lang;

/// A checked answer translated into `lang` when it is written in the other
/// language; `None` when it is in `lang` already, or when the translation
/// is not wholly in `lang` or does not itself pass the checks with the
/// same citations (then the answer stays as written). A 0.5B translation
/// can be wildly wrong ("别让疯子使用核武器" came out as something else
/// entirely), so what is shown is checked like anything the model writes:
/// the translation is translated back and must be found in its passages.
/// The markers go at the end: a small model does not carry them over.
pub(super) fn in_language(
    checked: &Checked,
    question: &str,
    lang: Lang,
    shown: &[&str],
    models: Models,
    opts: &AskOptions,
) -> Result<Option<String>> {
    let Some(generator) = models.generator else {
        return Ok(None);
    };
    let plain = strip_markers(&checked.text);
    let plain = plain.trim();
    if !foreign(plain, lang) {
        return Ok(None);
    }
    let Some(t) = translate_answer(generator, plain, lang)? else {
        return Ok(None);
    };
    let t = strip_markers(&t);
    if foreign(t.trim(), lang) {
        return Ok(None);
    }
    // "1750亿" is 175 billion, not "1750 billion": a translation states no
    // quantity the answer does not.
    let stated = quantities(plain);
    if let Some(q) = quantities(&t).into_iter().find(|q| {
        !stated
            .iter()
            .any(|s| (s - q).abs() <= 1e-9 * q.abs().max(1.0))
    }) {
        tracing::debug!(translation = %t, quantity = q, "the translation changes a quantity");
        return Ok(None);
    }
    let mut out = t.trim().to_string();
    out.push_str(&marker_suffix(&out, &checked.cited));
    let ok = check(&out, question, shown, models, opts)
        .is_ok_and(|c| c.cited == checked.cited && !c.recited);
    tracing::debug!(translation = %out, ok, "answer in the question's language");
    Ok(ok.then_some(out))
}

/// The numbers a text states, scaled by the magnitude word after them
/// ("1750亿" and "175 billion" are both 1.75e11; "300多集" is 300).
fn quantities(text: &str) -> Vec<f64> {
    const SCALES: &[(&str, f64)] = &[
        ("万亿", 1e12),
        ("亿", 1e8),
        ("万", 1e4),
        ("千", 1e3),
        ("thousand", 1e3),
        ("million", 1e6),
        ("billion", 1e9),
        ("trillion", 1e12),
    ];
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let tail = &rest[start..];
        let len = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .unwrap_or(tail.len());
        let digits = tail[..len].trim_end_matches(['.', ',']);
        let after = tail[digits.len()..].trim_start();
        let after = after.strip_prefix('多').unwrap_or(after).to_lowercase();
        if let Ok(v) = digits.replace(',', "").parse::<f64>() {
            let scale = SCALES
                .iter()
                .find(|(w, _)| after.starts_with(w))
                .map_or(1.0, |&(_, s)| s);
            out.push(v * scale);
        }
        rest = &tail[digits.len().max(1)..];
    }
    out
}

/// Whether an answer is written mostly in the other language than `lang`,
/// leaving out what it quotes and 《titles》 (a quoted phrase or a title is
/// the passage's own and stays as it is). An English answer that names a
/// Chinese term is still English: rewriting it only risks its meaning.
fn foreign(text: &str, lang: Lang) -> bool {
    let (mut depth, mut straight) = (0usize, false);
    let mut own = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '《' | '“' | '「' => depth += 1,
            '》' | '”' | '」' => depth = depth.saturating_sub(1),
            '"' => straight = !straight,
            c if depth == 0 && !straight => own.push(c),
            _ => {}
        }
    }
    Lang::detect(&own) != lang
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_the_other_language_is_told_from_quotes_and_titles() {
        // Copied Chinese in an English answer: translated.
        assert!(foreign("116个人听了。", Lang::En));
        assert!(foreign(
            "The \"175B\" of GPT-3 means 1750亿个参数。",
            Lang::En
        ));
        // English naming a Chinese term (or copying a glossary term line) is English.
        assert!(!foreign(
            "The three are data parallelism,流水线 parallelism, and tensor parallelism.",
            Lang::En
        ));
        assert!(!foreign(
            "涌现 (emergence)\nEmergence is when a larger model suddenly gains skills smaller ones lack.",
            Lang::En
        ));
        // A quoted phrase or a title is the passage's own: kept.
        assert!(!foreign(
            "The model outputs \"生日蛋糕很甜\" because \"sweet\" is likeliest.",
            Lang::En
        ));
        assert!(!foreign("《AI计算101》 is an internal course.", Lang::En));
        assert!(!foreign("It has 175B parameters.", Lang::En));
        // Chinese answers may name English terms; an English one is foreign.
        assert!(!foreign("GPT3的175B代表1750亿个参数。", Lang::Zh));
        assert!(foreign("GPT-3 has 175 billion parameters.", Lang::Zh));
    }

    #[test]
    fn quantities_are_read_with_their_magnitude_in_either_language() {
        assert_eq!(quantities("GPT3有1750亿个参数"), vec![3.0, 1.75e11]);
        assert_eq!(
            quantities("GPT-3 has 175 billion parameters"),
            vec![3.0, 1.75e11]
        );
        assert_eq!(quantities("1750 billion"), vec![1.75e12]);
        assert_eq!(
            quantities("300多集, 1,000 TFLOPS, 10.5."),
            vec![300.0, 1000.0, 10.5]
        );
        assert!(quantities("no numbers").is_empty());
    }
}
