//! The library's one error type.
//!
//! Variants say whose fault a failure is: the user's input (a bad file, a bad
//! query, a config typo), the state on disk (no index, a foreign or corrupt
//! index) or the machine (I/O). Front ends map them to exit codes or HTTP
//! status codes in one place each.

use std::path::PathBuf;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file of the corpus that cannot be indexed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    /// The file, as given on disk.
    pub path: PathBuf,
    /// A short, human reason ("not valid UTF-8 (first bad byte at offset 12)").
    pub reason: String,
}

impl std::fmt::Display for BadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Everything that can go wrong in kbqa.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The corpus folder does not exist or is not a folder.
    #[error("corpus folder {0} does not exist or is not a folder")]
    CorpusNotFound(PathBuf),

    /// The corpus has no indexable file at all.
    #[error("corpus folder {0} has no .md, .txt or glossary.toml file to index")]
    EmptyCorpus(PathBuf),

    /// One or more files cannot be indexed; nothing was indexed.
    #[error(
        "{} file(s) cannot be indexed, so nothing was indexed \
         (fix them, or pass --skip-bad to index the rest):\n{}",
        .0.len(),
        .0.iter().map(|b| format!("  {b}")).collect::<Vec<_>>().join("\n")
    )]
    BadFiles(Vec<BadFile>),

    /// The configuration is invalid (a typo in kbqa.toml, a bad env value).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// There is no index yet.
    #[error("no index in {0}: run `kbqa index`")]
    NoIndex(PathBuf),

    /// The index was written by an incompatible kbqa or with other settings.
    #[error("index {path} cannot be used: {reason}; run `kbqa index --rebuild`")]
    IncompatibleIndex {
        /// The index generation folder.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// An index file is missing, truncated or garbled.
    #[error("index {path} is damaged: {reason}; run `kbqa index --rebuild`")]
    CorruptIndex {
        /// The damaged file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another `kbqa index` holds the index lock.
    #[error("another `kbqa index` is writing {0}; wait for it to finish")]
    IndexLocked(PathBuf),

    /// A query that cannot be searched (empty, or only punctuation/stop words).
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// A per-request setting out of its range (`max_tokens`, `temperature`,
    /// `top_p`, `k`): the caller's fault, unlike [`Error::Config`].
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The evaluation set is malformed.
    #[error("evaluation set {path}, line {line}: {message}")]
    EvalSet {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// A knowledge base name that is not configured.
    #[error("no knowledge base named {name:?} (known: {known})")]
    UnknownKb {
        /// What was given.
        name: String,
        /// The names configured.
        known: String,
    },

    /// A model setting that is neither a known model name nor an existing file.
    #[error("model {setting:?} is not a known model ({known}) nor an existing file")]
    UnknownModel {
        /// What was given.
        setting: String,
        /// The names kbqa knows.
        known: String,
    },

    /// Downloading a model failed.
    #[error("cannot fetch model {model}: {reason}\n  to try by hand: {command}")]
    ModelFetch {
        /// The model name.
        model: String,
        /// What went wrong.
        reason: String,
        /// The exact command that failed.
        command: String,
    },

    /// A model file does not have the pinned checksum.
    #[error("model file {path} is damaged: sha256 {got}, expected {expected}; run `{fix}`")]
    ModelChecksum {
        /// The file.
        path: PathBuf,
        /// The pinned sha256.
        expected: String,
        /// What the file hashes to.
        got: String,
        /// What to run.
        fix: String,
    },

    /// A model file that cannot be read as the format it should be.
    #[error("model file {path} is not a usable {format} model: {reason}")]
    ModelFormat {
        /// The file.
        path: PathBuf,
        /// The expected format.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The model failed at run time (a tensor operation).
    #[error("model error: {0}")]
    Model(String),

    /// A remote model server (generation or embeddings over the OpenAI
    /// protocol) is unreachable, failed, or broke off its answer.
    #[error("model server {url}: {reason}")]
    Upstream {
        /// The endpoint.
        url: String,
        /// What went wrong, for a person.
        reason: String,
    },

    /// The shared database of the `postgres` index backend cannot be
    /// reached (refused, closed, timed out): it may be back soon.
    #[error("database {url} is unreachable: {reason}")]
    DatabaseUnreachable {
        /// The database, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The shared database refused a statement (permissions, a schema it
    /// does not have): waiting will not help.
    #[error("database {url}: {reason}")]
    Database {
        /// The database, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// An I/O failure, with the path it concerned.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// tantivy failed (an internal error: the index is ours).
    #[error("search engine error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

impl Error {
    /// Wraps an I/O error with the path it concerned.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Adds a path to `std::io::Result`s, so every I/O error names its file.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
