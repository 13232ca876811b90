//! The rules that read an answer's text: a refusal in words, a question
//! for a year or a count that the answer must state, and the numbers and
//! digit-bearing names ("specifics") where a small model invents facts.

use super::citations::strip_markers;

/// Whether the model said in words that the passages lack the answer
/// (with `NOT_IN_KB` suppressed by the gate it sometimes does).
pub(super) fn declines(text: &str) -> bool {
    const PHRASES: &[&str] = &[
        "not mention",
        "not contain",
        "no information",
        "not provide",
        "not specified",
        "not stated",
        "没有提到",
        "没有提及",
        "未提及",
        "未提到",
        "没有相关",
        "无法回答",
        "没有给出",
        "未提供",
        "没有说明",
    ];
    let lower = text.to_lowercase().replace("n't", " not");
    PHRASES.iter().any(|p| lower.contains(p))
}

/// What a question asks for that any answer to it must state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// "哪一年", "what year".
    Year,
    /// "多少", "几个", "how many".
    Count,
}

/// The year or count `question` asks for, if it plainly asks for one.
pub(super) fn asks_for(question: &str) -> Option<Wanted> {
    let lower = question.to_lowercase();
    let year = [
        "哪一年",
        "哪年",
        "什么年份",
        "哪个年份",
        "what year",
        "which year",
    ];
    if year.iter().any(|p| lower.contains(p)) {
        return Some(Wanted::Year);
    }
    // "几" only before a measure word: 几乎, 几何 ask for nothing.
    let measures = "个种家位次块张倍天层步类集年";
    let chars: Vec<char> = lower.chars().collect();
    let few = chars
        .windows(2)
        .any(|w| w[0] == '几' && measures.contains(w[1]));
    if few || lower.contains("多少") || lower.contains("how many") {
        return Some(Wanted::Count);
    }
    None
}

/// Whether `answer` states a year (four digits, or numerals before 年) or
/// a number (digits, Chinese numerals, English number words).
pub(super) fn states(answer: &str, wanted: Wanted) -> bool {
    const HAN_DIGITS: &str = "〇零一二两三四五六七八九十百千万亿";
    let chars: Vec<char> = answer.chars().collect();
    match wanted {
        Wanted::Year => {
            let four_digits = chars
                .windows(4)
                .any(|w| w.iter().all(|c| c.is_ascii_digit()));
            let numeral_year = chars
                .windows(2)
                .any(|w| w[1] == '年' && (w[0].is_ascii_digit() || HAN_DIGITS.contains(w[0])));
            four_digits || numeral_year
        }
        Wanted::Count => {
            const WORDS: &[&str] = &[
                "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "dozen", "hundred", "thousand", "million", "billion",
                "trillion", "single", "both", "twice", "half",
            ];
            chars
                .iter()
                .any(|&c| c.is_ascii_digit() || HAN_DIGITS.contains(c))
                || answer
                    .to_lowercase()
                    .split(|c: char| !c.is_ascii_alphabetic())
                    .any(|w| WORDS.contains(&w))
        }
    }
}

/// Lowercased, without spaces and the separators people vary in numbers.
pub(super) fn squash(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, ',' | '，' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The answer's "specifics" (runs of digits, and Latin words containing
/// a digit such as `h100`, `gpt-4`, `910b`) that `passages` do not contain.
pub fn unsupported_specifics(answer: &str, passages: &str) -> Vec<String> {
    let answer = strip_markers(answer);
    let hay = squash(passages);
    let mut missing = Vec::new();
    // Tokens: maximal runs of ASCII letters, digits, '-', '.', '^'.
    for token in
        answer.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '^')))
    {
        let token = token.trim_matches(|c: char| matches!(c, '-' | '.' | '^'));
        if !token.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        let t = squash(token);
        let found = hay.contains(&t)
            // "10^18" may be written 10¹⁸ or "10的18次方": then each digit run must be there.
            || t.split(|c: char| !c.is_ascii_digit())
                .filter(|d| !d.is_empty())
                .all(|d| t.contains('^') && hay.contains(d));
        if !found && !missing.contains(&t) {
            missing.push(t);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_for_a_year_or_a_count_needs_one_in_its_answer() {
        use Wanted::{Count, Year};
        assert_eq!(asks_for("通义千问是哪一年正式发布的?"), Some(Year));
        assert_eq!(asks_for("In what year was GPT-1 released?"), Some(Year));
        assert_eq!(asks_for("第一场培训一共有多少人听过?"), Some(Count));
        assert_eq!(asks_for("大模型学习路线一共分几个阶段?"), Some(Count));
        assert_eq!(asks_for("How many GPUs did it buy?"), Some(Count));
        assert_eq!(asks_for("模型几乎都用GPU训练吗?"), None);
        assert_eq!(asks_for("What is RLHF?"), None);
        assert!(states("Transformer是谷歌在2017年提出的[1]。", Year));
        assert!(states("它于二〇二三年发布。", Year));
        assert!(!states(
            "通义千问是阿里云推出的大语言模型,有Qwen-7B、Qwen-14B等[1]。",
            Year
        ));
        assert!(states("116个人听了。", Count));
        assert!(states("一共分七个阶段。", Count));
        assert!(states("It bought two thousand GPUs.", Count));
        assert!(!states("It bought many GPUs.", Count));
    }

    #[test]
    fn invented_numbers_and_model_names_are_caught() {
        let passage = "GPT-3的参数量是1750亿，A100的算力是312TFLOPS，EFLOPS是10^18次浮点运算。";
        assert!(unsupported_specifics("GPT-3有1750亿个参数[1]。", passage).is_empty());
        assert!(unsupported_specifics("The A100 does 312 TFLOPS.", passage).is_empty());
        assert!(unsupported_specifics("EFLOPS is 10^18 operations [2].", passage).is_empty());
        assert_eq!(
            unsupported_specifics("GPT-4有1750亿个参数。", passage),
            vec!["gpt-4"]
        );
        assert!(unsupported_specifics("10^18", "十的18次方：10¹⁸").is_empty());
        assert!(unsupported_specifics("10^18", "1 EFLOPS = 10的18次方").is_empty());
        assert_eq!(
            unsupported_specifics("The H100 does 1000 TFLOPS.", passage),
            vec!["h100", "1000"]
        );
        // Citation markers are not numbers of the answer.
        assert!(unsupported_specifics("It is fast [3].", passage).is_empty());
    }

    #[test]
    fn declining_in_words_is_a_refusal() {
        assert!(declines(
            "The passages do not mention the capital of Australia."
        ));
        assert!(declines("The passages don't contain this."));
        assert!(declines("文中没有提到GPT-4的参数量。"));
        assert!(!declines(
            "EFLOPS means 10^18 floating-point operations per second [1]."
        ));
    }
}
