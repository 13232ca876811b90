//! The bilingual glossary: a TOML file a person edits, one `[[term]]` table
//! per entry. Each entry becomes exactly one chunk, with its aliases in the
//! text so that any spelling finds it.

use serde::Deserialize;

/// One glossary entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlossaryEntry {
    /// Canonical name.
    pub term: String,
    /// Other spellings: Chinese/English names, abbreviations, expansions.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Definition in Chinese.
    pub zh: String,
    /// Definition in English.
    pub en: String,
    /// Headings of the article sections that discuss the term.
    #[serde(default)]
    pub article: Vec<String>,
    /// Where the entry's `[[term]]` table sits in the file, in chars.
    #[serde(skip)]
    pub span: (usize, usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlossaryFile {
    #[serde(default)]
    term: Vec<GlossaryEntry>,
}

/// A parsed glossary file.
#[derive(Debug, Clone)]
pub struct Glossary {
    /// Path relative to the corpus root.
    pub source: String,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// Entries in file order.
    pub entries: Vec<GlossaryEntry>,
}

impl Glossary {
    /// Parses and validates a glossary; the error is a human reason
    /// (with TOML line and column where the syntax is wrong).
    pub fn parse(source: &str, text: &str, sha256: String) -> Result<Glossary, String> {
        let file: GlossaryFile =
            toml::from_str(text).map_err(|e| format!("not a valid glossary: {e}"))?;
        let mut entries = file.term;
        if entries.is_empty() {
            return Err("glossary has no [[term]] entries".into());
        }
        for (i, e) in entries.iter_mut().enumerate() {
            e.term = e.term.trim().to_string();
            if e.term.is_empty() {
                return Err(format!("entry {} has an empty `term`", i + 1));
            }
            if e.zh.trim().is_empty() || e.en.trim().is_empty() {
                return Err(format!(
                    "entry {} ({}) needs both a `zh` and an `en` definition",
                    i + 1,
                    e.term
                ));
            }
            e.aliases.retain(|a| !a.trim().is_empty());
        }
        let spans = table_spans(text, entries.len());
        for (e, span) in entries.iter_mut().zip(spans) {
            e.span = span;
        }
        Ok(Glossary {
            source: source.to_string(),
            sha256,
            entries,
        })
    }
}

impl GlossaryEntry {
    /// The text that is indexed and shown: name and aliases, then both
    /// definitions, so that a Chinese or an English question can match it.
    pub fn render(&self) -> String {
        let mut s = self.term.clone();
        if !self.aliases.is_empty() {
            s.push_str(" (");
            s.push_str(&self.aliases.join(" / "));
            s.push(')');
        }
        s.push('\n');
        s.push_str(self.zh.trim());
        s.push('\n');
        s.push_str(self.en.trim());
        s
    }
}

/// Char spans of the `[[term]]` tables, in order. Falls back to the whole
/// file for every entry when the tables are not written one header per line
/// (e.g. inline arrays), which TOML allows.
fn table_spans(text: &str, n: usize) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut chars = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "[[term]]" {
            starts.push(chars);
        }
        chars += line.chars().count();
    }
    if starts.len() != n {
        return vec![(0, chars); n];
    }
    let mut spans = Vec::with_capacity(n);
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(chars);
        spans.push((s, end));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "# c\n[[term]]\nterm = \"RLHF\"\naliases = [\"人类反馈强化学习\"]\nzh = \"中文。\"\nen = \"English.\"\n\n[[term]]\nterm = \"SFT\"\nzh = \"监督微调。\"\nen = \"Supervised fine-tuning.\"\n";

    #[test]
    fn parses_entries_with_spans() {
        let g = Glossary::parse("glossary.toml", G, String::new()).unwrap();
        assert_eq!(g.entries.len(), 2);
        let chars: Vec<char> = G.chars().collect();
        let (s, e) = g.entries[1].span;
        let table: String = chars[s..e].iter().collect();
        assert!(table.starts_with("[[term]]\nterm = \"SFT\""), "{table}");
        assert!(g.entries[0].render().contains("人类反馈强化学习"));
    }

    #[test]
    fn rejects_bad_glossaries() {
        assert!(
            Glossary::parse("g", "[[term]]\nterm = \"x\"\nzh = \"a\"\n", String::new())
                .unwrap_err()
                .contains("en")
        );
        assert!(Glossary::parse(
            "g",
            "[[term]]\nterm = \"x\"\nzh = \"a\"\nen = \"b\"\ncolour = 1\n",
            String::new()
        )
        .unwrap_err()
        .contains("colour"));
        assert!(Glossary::parse("g", "term = [", String::new())
            .unwrap_err()
            .contains("line"));
    }
}
