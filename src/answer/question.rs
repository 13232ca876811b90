//! A question as the pipeline takes it: parsed once at the edge (trimmed,
//! checked, its language detected), then only read.

use crate::error::Result;
use crate::retrieve::Query;
use crate::text::Lang;

/// A checked question and the language its answer is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    query: Query,
    lang: Lang,
}

impl Question {
    /// Checks `text` as a query for `k` passages (empty, too long and
    /// `k = 0` are [`crate::Error::InvalidQuery`]) and detects its language.
    pub fn parse(text: &str, k: usize) -> Result<Question> {
        let query = Query::parse(text, k)?;
        let lang = Lang::detect(query.text());
        Ok(Question { query, lang })
    }

    /// The question, trimmed.
    pub fn text(&self) -> &str {
        self.query.text()
    }

    /// The language of the question, and so of its answer.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The question as a search query.
    pub fn query(&self) -> &Query {
        &self.query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_trimmed_checked_and_its_language_known() {
        let q = Question::parse("  什么是RLHF？\n", 5).unwrap();
        assert_eq!(
            (q.text(), q.lang(), q.query().k()),
            ("什么是RLHF？", Lang::Zh, 5)
        );
        assert_eq!(Question::parse("What is SFT?", 1).unwrap().lang(), Lang::En);
        for (text, k) in [("", 5), ("   ", 5), ("ok?", 0)] {
            assert!(matches!(
                Question::parse(text, k),
                Err(crate::Error::InvalidQuery(_))
            ));
        }
        assert!(Question::parse(&"长".repeat(crate::retrieve::MAX_QUERY_CHARS + 1), 5).is_err());
    }
}
