//! Loading a corpus folder: which files count, and refusing the ones that
//! cannot be indexed before anything is written.
//!
//! A corpus is a folder, walked recursively in a fixed (sorted) order:
//! `*.md`, `*.markdown` and `*.txt` are documents, `glossary.toml` and
//! `*.glossary.toml` are glossaries. Hidden files and whatever a
//! `.kbqaignore` (gitignore syntax) lists are skipped; other files are
//! ignored. Every file is checked whole — UTF-8, not empty, text — and all
//! problems are reported together.

pub mod glossary;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{BadFile, Error, Result};
use crate::hash::hex;
pub use glossary::{Glossary, GlossaryEntry};

/// What a file is to the chunker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// Markdown: `#` headings give sections.
    Markdown,
    /// Plain text: paragraphs only.
    Text,
}

/// One document, its text checked and its identity fixed.
#[derive(Debug, Clone)]
pub struct Document {
    /// Path relative to the corpus root, `/`-separated: the citation name.
    pub source: String,
    /// Markdown or plain text.
    pub kind: DocKind,
    /// The text, UTF-8, a leading BOM removed.
    pub text: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

/// A loaded corpus.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// Documents in path order.
    pub documents: Vec<Document>,
    /// Glossaries in path order.
    pub glossaries: Vec<Glossary>,
    /// Files refused (with `skip_bad`, or skipped by the live index too;
    /// otherwise loading fails).
    pub skipped: Vec<BadFile>,
    /// The identities of the refused files that could be read, so a
    /// later load can tell that one is unchanged.
    pub skipped_hashes: Vec<FileHash>,
}

/// One file's identity, for the manifest (and incremental indexing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileHash {
    /// Path relative to the corpus root.
    pub source: String,
    /// sha256 of its bytes, hex.
    pub sha256: String,
}

impl Corpus {
    /// Loads every indexable file under `root`. Without `skip_bad`, any bad
    /// file fails the whole load (listing all bad files), so an index is never
    /// built from part of a corpus by accident.
    pub fn load(root: &Path, skip_bad: bool) -> Result<Corpus> {
        Corpus::load_allowing(root, skip_bad, &[])
    }

    /// [`Corpus::load`], where a bad file listed in `allowed` (skipped when
    /// the live index was built) and unchanged since is skipped, not
    /// refused: the index a user built with `--skip-bad` stays usable.
    pub fn load_allowing(root: &Path, skip_bad: bool, allowed: &[FileHash]) -> Result<Corpus> {
        let mut corpus = Corpus::default();
        // Each bad file, with its identity when it could be read (an
        // unreadable file has none: it is never "unchanged").
        let mut bad: Vec<(BadFile, Option<FileHash>)> = Vec::new();
        for (path, kind) in list_files(root)? {
            let source = relative_source(root, &path);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    let reason = format!("cannot be read: {e}");
                    bad.push((BadFile { path, reason }, None));
                    continue;
                }
            };
            let sha256 = hex(&Sha256::digest(&bytes));
            let identity = FileHash {
                source: source.clone(),
                sha256: sha256.clone(),
            };
            let text = match check_text(&bytes) {
                Ok(t) => t,
                Err(reason) => {
                    bad.push((BadFile { path, reason }, Some(identity)));
                    continue;
                }
            };
            match kind {
                FileKind::Doc(kind) => corpus.documents.push(Document {
                    source,
                    kind,
                    text,
                    sha256,
                }),
                FileKind::Glossary => match Glossary::parse(&source, &text, sha256) {
                    Ok(g) => corpus.glossaries.push(g),
                    Err(reason) => bad.push((BadFile { path, reason }, Some(identity))),
                },
            }
        }
        if !bad.is_empty() {
            let known = |(_, id): &(BadFile, Option<FileHash>)| {
                id.as_ref().is_some_and(|h| allowed.contains(h))
            };
            if !skip_bad && !bad.iter().all(known) {
                let refused = bad.into_iter().filter(|b| !known(b));
                return Err(Error::BadFiles(refused.map(|(b, _)| b).collect()));
            }
            // Front ends say so in their own words (`kbqa index`, `ask`).
            for (b, _) in &bad {
                tracing::info!("skipping {b}");
            }
            corpus.skipped_hashes = bad.iter().filter_map(|(_, id)| id.clone()).collect();
            corpus.skipped = bad.into_iter().map(|(b, _)| b).collect();
        }
        if corpus.documents.is_empty() && corpus.glossaries.is_empty() {
            return Err(Error::EmptyCorpus(root.to_path_buf()));
        }
        Ok(corpus)
    }

    /// Every file's identity, in path order.
    pub fn file_hashes(&self) -> Vec<FileHash> {
        let mut v: Vec<FileHash> = self
            .documents
            .iter()
            .map(|d| FileHash {
                source: d.source.clone(),
                sha256: d.sha256.clone(),
            })
            .chain(self.glossaries.iter().map(|g| FileHash {
                source: g.source.clone(),
                sha256: g.sha256.clone(),
            }))
            .collect();
        v.sort_by(|a, b| a.source.cmp(&b.source));
        v
    }

    /// One hash over all file identities: equal iff the indexable content is equal.
    pub fn content_hash(&self) -> String {
        content_hash(&self.file_hashes())
    }
}

/// Each glossary entry's names (term first, then aliases): the BM25
/// index treats them as synonyms.
impl Corpus {
    /// The synonym groups of the corpus's glossaries.
    pub fn synonyms(&self) -> Vec<Vec<String>> {
        self.glossaries
            .iter()
            .flat_map(|g| g.entries.iter())
            .map(|e| {
                std::iter::once(&e.term)
                    .chain(e.aliases.iter())
                    .map(|w| w.trim().to_string())
                    .collect()
            })
            .collect()
    }
}

/// The corpus fingerprint recorded in a manifest.
pub fn content_hash(files: &[FileHash]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.source.as_bytes());
        h.update([0]);
        h.update(f.sha256.as_bytes());
        h.update([b'\n']);
    }
    hex(&h.finalize())
}

enum FileKind {
    Doc(DocKind),
    Glossary,
}

fn classify(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name == "glossary.toml" || name.ends_with(".glossary.toml") {
        return Some(FileKind::Glossary);
    }
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "md" | "markdown" => Some(FileKind::Doc(DocKind::Markdown)),
        "txt" => Some(FileKind::Doc(DocKind::Text)),
        _ => None,
    }
}

fn list_files(root: &Path) -> Result<Vec<(PathBuf, FileKind)>> {
    if !root.is_dir() {
        return Err(Error::CorpusNotFound(root.to_path_buf()));
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(true)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .ignore(false)
        .parents(false)
        .add_custom_ignore_filename(".kbqaignore")
        .sort_by_file_path(|a, b| a.cmp(b))
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| Error::io(root, std::io::Error::other(e.to_string())))?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.into_path();
        match classify(&path) {
            Some(kind) => files.push((path, kind)),
            None => tracing::debug!(
                "not indexed (not .md/.txt/glossary.toml): {}",
                path.display()
            ),
        }
    }
    Ok(files)
}

fn relative_source(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Accepts bytes as text or says why not. Public for the fuzz targets.
pub fn check_text(bytes: &[u8]) -> std::result::Result<String, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        return Err(format!("not a text file (NUL byte at offset {pos})"));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(format!(
                "not valid UTF-8 (first bad byte at offset {}); convert it, e.g. `iconv -f GBK -t UTF-8`",
                e.valid_up_to()
            ))
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err("empty file (only white space)".into());
    }
    let controls = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
        .count();
    if controls * 100 > text.chars().count() {
        return Err(format!("not a text file ({controls} control characters)"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_text_reasons() {
        assert_eq!(check_text(b"").unwrap_err(), "empty file");
        assert!(check_text(b" \n\t\n").unwrap_err().contains("white space"));
        assert!(check_text(b"ab\0cd")
            .unwrap_err()
            .contains("NUL byte at offset 2"));
        assert!(check_text(b"ok \xff\xfe").unwrap_err().contains("offset 3"));
        assert!(check_text(&[1u8, 2, 3, 4, 5, b'a'])
            .unwrap_err()
            .contains("control"));
        assert_eq!(check_text("\u{feff}你好".as_bytes()).unwrap(), "你好");
    }
}
