//! The prompt stage: the system prompt, worked examples and the user
//! message of numbered passages within the model's token budget.
//!
//! The texts are files under `prompts/answer/`, so they can be read and
//! reviewed as prose. Questions and passages are data: special-token text
//! in them is encoded as plain text by the generator, and the system
//! prompt says instructions inside them are not to be followed.

use std::sync::LazyLock;

use super::options::AskOptions;
use crate::config::PromptStyle;
use crate::engine::Generator;
use crate::error::{Error, Result};
use crate::retrieve::SearchHit;
use crate::text::{sentences, Lang};

/// A prompt file's text (files end in a newline; prompts do not).
fn text(file: &'static str) -> &'static str {
    file.trim_end_matches('\n')
}

/// Worked examples (user, assistant) shown before every question: a small
/// model copies the form of an example far more reliably than it follows a
/// rule. Their topics are not in the shipped knowledge base, so they cannot
/// leak into answers as facts. The last one refuses.
static EXAMPLES: LazyLock<[(&str, &str); 3]> = LazyLock::new(|| {
    [
        (
            text(include_str!("../../prompts/answer/example-tea-en.user.txt")),
            text(include_str!(
                "../../prompts/answer/example-tea-en.assistant.txt"
            )),
        ),
        (
            text(include_str!(
                "../../prompts/answer/example-wall-zh.user.txt"
            )),
            text(include_str!(
                "../../prompts/answer/example-wall-zh.assistant.txt"
            )),
        ),
        (
            text(include_str!(
                "../../prompts/answer/example-out-of-scope-zh.user.txt"
            )),
            text(include_str!(
                "../../prompts/answer/example-out-of-scope-zh.assistant.txt"
            )),
        ),
    ]
});

/// The system prompt of a prompt variant (with the examples, the
/// reusable KV-cache prefix). The lenient one softens the refusal rule: a
/// 0.5B model told to refuse "if the passages do not contain the answer"
/// refuses English questions over Chinese passages it could answer;
/// retrieval and the support check catch what it misses.
pub fn system(style: PromptStyle) -> &'static str {
    match style {
        PromptStyle::Rules | PromptStyle::Examples => {
            text(include_str!("../../prompts/answer/system.txt"))
        }
        PromptStyle::Lenient => text(include_str!("../../prompts/answer/system-lenient.txt")),
    }
}

/// The worked examples of a prompt variant: none, all three, or (lenient)
/// the two that answer.
pub fn examples(style: PromptStyle) -> &'static [(&'static str, &'static str)] {
    match style {
        PromptStyle::Rules => &[],
        PromptStyle::Examples => &EXAMPLES[..],
        PromptStyle::Lenient => &EXAMPLES[..2],
    }
}

/// The line after the question that says which language to answer in.
fn instruction(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => text(include_str!("../../prompts/answer/instruction-zh.txt")),
        Lang::En => text(include_str!("../../prompts/answer/instruction-en.txt")),
    }
}

/// A passage as the model saw it (perhaps only some of its lines or
/// sentences): citations, checks and evidence use exactly this text.
#[derive(Clone)]
pub(super) struct Shown<'h> {
    /// The retrieved passage.
    pub hit: &'h SearchHit,
    /// What of it the model saw.
    pub text: String,
}

/// The user message: numbered passages with their sections, then the
/// question and the answer language. Passages that do not fit the token
/// budget are shortened (whole sentences) or left out; the question is
/// never cut.
pub(super) fn build_prompt<'h>(
    generator: &dyn Generator,
    question: &str,
    lang: Lang,
    passages: &[(&'h SearchHit, String)],
    opts: &AskOptions,
) -> Result<(String, Vec<Shown<'h>>)> {
    let tokens = |text: &str| generator.count_tokens(text);
    let budget = opts.max_prompt_tokens;
    let (system, examples) = (system(opts.prompt), examples(opts.prompt));
    let tail = format!("\nQuestion: {question}\n{}", instruction(lang));
    // Template tokens around the user message, and the question part.
    let fixed = generator.fixed_tokens(system, examples)? + tokens(&tail)? + 16;
    if fixed >= budget {
        return Err(Error::InvalidQuery(format!(
            "the question is too long for the model's prompt budget ({budget} tokens)"
        )));
    }
    let mut left = budget - fixed;
    let mut body = String::from("Passages:\n");
    let mut given = Vec::new();
    for &(hit, ref shown) in passages {
        let header = format!("[{}] ({})\n", given.len() + 1, section_label(hit));
        let header_tokens = tokens(&header)?;
        if header_tokens + 8 > left {
            break;
        }
        let text = shown.trim();
        let kept = if header_tokens + tokens(text)? < left {
            text.to_string()
        } else {
            // Whole sentences while they fit.
            let mut kept = String::new();
            for (s, e) in sentences(text, 0, text.len()) {
                let candidate = format!("{kept}{}", &text[s..e]);
                if header_tokens + tokens(&candidate)? + 1 > left {
                    break;
                }
                kept = candidate;
            }
            if kept.trim().is_empty() {
                break;
            }
            kept
        };
        left -= header_tokens + tokens(&kept)? + 1;
        body.push_str(&header);
        body.push_str(kept.trim());
        body.push_str("\n\n");
        given.push(Shown {
            hit,
            text: kept.trim().to_string(),
        });
    }
    if given.is_empty() {
        return Err(Error::InvalidQuery(format!(
            "no passage fits the prompt budget ({budget} tokens)"
        )));
    }
    body.push_str(&tail);
    Ok((body, given))
}

fn section_label(hit: &SearchHit) -> String {
    if hit.section.is_empty() {
        hit.source.clone()
    } else {
        hit.section.clone()
    }
}
