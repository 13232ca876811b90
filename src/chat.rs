//! Conversations: turning a follow-up question into one that stands alone.
//!
//! Retrieval and the model see one question at a time. In a chat the user
//! writes "它和SFT有什么区别？" after asking about RLHF; searched as it is,
//! "它" finds nothing and the model does not know what "it" is. So before
//! retrieval a follow-up that refers back is rewritten with the topic of the
//! previous question ("RLHF和SFT有什么区别？"). The rewrite is a small
//! deterministic rule, not a model call: it costs nothing, cannot invent a
//! topic, and its result is shown to the client (`query`), so a wrong guess
//! is visible.

/// Words that make a Chinese question refer back, longest first (so that
/// "它们" wins over "它").
const ZH_REFERENCES: &[&str] = &[
    "这项技术",
    "该技术",
    "这种方法",
    "这个概念",
    "它们",
    "这些",
    "这个",
    "这种",
    "那个",
    "它",
];

/// English words that refer back, matched as whole words.
const EN_REFERENCES: &[&str] = &[
    "it", "its", "they", "them", "their", "this", "that", "these", "those",
];

/// Question phrasing stripped from a previous question to find its topic,
/// longest first.
const ZH_QUESTION_WORDS: &[&str] = &[
    "是什么意思",
    "什么意思",
    "指的是什么",
    "是指什么",
    "有什么用",
    "是什么",
    "什么是",
    "什么叫",
    "介绍一下",
    "请问",
    "解释",
    "一下",
    "什么",
    "如何",
    "怎么",
    "为什么",
    "是多少",
    "有哪些",
    "哪些",
    "多少",
    "吗",
    "呢",
    "的",
];

const EN_QUESTION_WORDS: &[&str] = &[
    "what",
    "is",
    "are",
    "does",
    "do",
    "did",
    "mean",
    "means",
    "meaning",
    "stand",
    "for",
    "a",
    "an",
    "the",
    "explain",
    "define",
    "definition",
    "of",
    "tell",
    "me",
    "about",
    "how",
    "why",
    "please",
    "can",
    "you",
    "who",
    "which",
    "was",
    "were",
];

/// The question to search and answer for `question`, given the user's
/// earlier questions (oldest first, each self-contained or not). Returns
/// `question` unchanged when it does not refer back or there is no earlier
/// question.
pub fn standalone_question(earlier: &[String], question: &str) -> String {
    let question = question.trim();
    // The conversation's subject: set by a question that stands alone,
    // kept through the follow-ups that refer back to it.
    let mut subject: Option<(String, Option<String>)> = None; // (question, topic)
    for q in earlier.iter().map(|q| q.trim()).filter(|q| !q.is_empty()) {
        subject = match subject {
            Some((text, topic)) if refers_back(q) => {
                let resolved = resolve(&text, topic.as_deref(), q);
                Some((resolved, topic))
            }
            _ => Some((q.to_string(), topic_of(q))),
        };
    }
    match subject {
        Some((text, topic)) if refers_back(question) => resolve(&text, topic.as_deref(), question),
        _ => question.to_string(),
    }
}

fn refers_back(question: &str) -> bool {
    ZH_REFERENCES.iter().any(|r| question.contains(r))
        || question
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .any(|w| EN_REFERENCES.contains(&w.to_lowercase().as_str()))
}

/// `question` with its reference to `previous` made explicit.
fn resolve(previous: &str, topic: Option<&str>, question: &str) -> String {
    match topic {
        Some(t) if question.contains(t) => question.to_string(),
        Some(t) => match ZH_REFERENCES.iter().find(|r| question.contains(*r)) {
            Some(r) => question.replacen(r, t, 1),
            None => replace_en_reference(question, t),
        },
        None => format!("{previous} {question}"),
    }
}

/// The first English reference word replaced by `topic` (possessive kept).
fn replace_en_reference(question: &str, topic: &str) -> String {
    let mut out = String::with_capacity(question.len() + topic.len());
    let mut replaced = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, replaced: &mut bool| {
        let lower = word.to_lowercase();
        if !*replaced && EN_REFERENCES.contains(&lower.as_str()) {
            out.push_str(topic);
            if matches!(lower.as_str(), "its" | "their") {
                out.push_str("'s");
            }
            *replaced = true;
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in question.chars() {
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
        } else {
            flush(&mut word, &mut out, &mut replaced);
            out.push(c);
        }
    }
    flush(&mut word, &mut out, &mut replaced);
    out
}

/// The topic of a question: what is left when the question phrasing is
/// removed, if that is short enough to be a name ("什么是RLHF？" → "RLHF").
fn topic_of(question: &str) -> Option<String> {
    let mut t: String = question
        .chars()
        .filter(|c| {
            !matches!(
                c,
                '?' | '？' | '!' | '！' | '。' | '.' | ',' | '，' | '"' | '“' | '”'
            )
        })
        .collect();
    for w in ZH_QUESTION_WORDS {
        t = t.replace(w, " ");
    }
    let words: Vec<&str> = t
        .split_whitespace()
        .filter(|w| !EN_QUESTION_WORDS.contains(&w.to_lowercase().as_str()))
        .collect();
    let topic = words.join(" ");
    let chars = topic.chars().count();
    (chars > 0 && chars <= 24 && words.len() <= 4).then_some(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn chinese_follow_up_gets_the_previous_topic() {
        assert_eq!(
            standalone_question(&s(&["什么是RLHF？"]), "它和SFT有什么区别？"),
            "RLHF和SFT有什么区别？"
        );
        assert_eq!(
            standalone_question(&s(&["EFLOPS是什么意思？"]), "它们有多大？"),
            "EFLOPS有多大？"
        );
    }

    #[test]
    fn english_follow_up_gets_the_previous_topic() {
        assert_eq!(
            standalone_question(&s(&["What does EFLOPS mean?"]), "Why does it matter?"),
            "Why does EFLOPS matter?"
        );
        assert_eq!(
            standalone_question(&s(&["What is RLHF?"]), "What are its steps?"),
            "What are RLHF's steps?"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_handled_and_plain_questions_stay(
            earlier in proptest::collection::vec("\\PC{0,40}", 0..4),
            question in "\\PC{0,60}",
        ) {
            let q = standalone_question(&earlier, &question);
            if !refers_back(&question) || earlier.iter().all(|e| e.trim().is_empty()) {
                proptest::prop_assert_eq!(q, question.trim());
            }
        }
    }

    #[test]
    fn chains_keep_their_topic_and_standalone_questions_are_untouched() {
        assert_eq!(
            standalone_question(
                &s(&["什么是SFT？", "它需要多少数据？"]),
                "它和RLHF有什么区别？"
            ),
            "SFT和RLHF有什么区别？"
        );
        assert_eq!(
            standalone_question(&s(&["什么是RLHF？"]), "What is a transformer?"),
            "What is a transformer?"
        );
        assert_eq!(standalone_question(&[], "它是什么？"), "它是什么？");
        // A long previous question has no short topic: it is kept as context.
        let long = "大模型训练需要多少算力，以及这些算力一般从哪里来，成本大概是多少？";
        assert_eq!(
            standalone_question(&s(&[long]), "它贵吗？"),
            format!("{long} 它贵吗？")
        );
    }
}
