//! One function per command: call the library, print the result. The
//! configuration arrives resolved and validated ([`super::run`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kbqa::answer::{AskOptions, AskOverrides, Question, Status};
use kbqa::config::Backend;
use kbqa::kb::IndexOutcome;
use kbqa::models::fetch;
use kbqa::retrieve::Query;
use kbqa::text::snippet;
use kbqa::{Config, Kb};

use super::args::ProgressWhen;
use super::engines::{load_llm, open, open_with_models};
use super::print;
use super::progress::{AnswerProgress, Bars};
use super::term::Look;

/// `kbqa index`.
pub fn index(config: &Config, rebuild: bool) -> anyhow::Result<()> {
    let mut bars = Bars::on_stderr();
    let outcome = Kb::index(config, rebuild, &mut |e| bars.open_event(e))?;
    bars.finish();
    match outcome {
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
    Ok(())
}

/// `kbqa search`.
pub fn search(config: &Config, query: &str, k: Option<usize>, json: bool) -> anyhow::Result<()> {
    let query = Query::parse(query, k.unwrap_or(config.search.k))?;
    let kb = open(config)?;
    let hits = kb.search(&query, config.search.mode)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "results": hits }))?;
        writeln!(out)?;
    } else if hits.is_empty() {
        writeln!(out, "no passage matches {:?}", query.text())?;
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
    Ok(())
}

/// `kbqa ask`: progress on stderr while it works (on a terminal), then
/// the checked answer and its sources. Nothing the checks could withdraw
/// is ever printed.
pub fn ask(config: &Config, question: &str, json: bool, when: ProgressWhen) -> anyhow::Result<()> {
    let opts = AskOptions::resolve(config, &AskOverrides::default())?;
    // Bad input fails before any model is loaded.
    let question = Question::parse(question, opts.k)?;
    let (kb, llm) = open_with_models(config)?;
    let mut progress = AnswerProgress::on_stderr(when);
    let answer = kbqa::answer::ask(&kb, llm.as_ref(), &question, &opts, &mut |step| {
        progress.show(step);
        true
    });
    progress.clear();
    let answer = answer?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &answer)?;
        writeln!(out)?;
    } else {
        print::answer(&mut out, &answer, &Look::stdout())?;
    }
    out.flush()?;
    // The process ends here: freeing the two tokenizers' millions of small
    // allocations one by one would add a quarter of a second to every
    // `kbqa ask`; the OS reclaims them at once.
    std::mem::forget((kb, llm));
    Ok(())
}

/// What `kbqa eval answers` is asked to do besides the config.
pub struct EvalAnswers {
    /// The question set.
    pub set: PathBuf,
    /// Ids or a count.
    pub only: Option<String>,
    /// The report file, if not the default.
    pub report: Option<PathBuf>,
    /// Gold passages instead of retrieval.
    pub oracle: bool,
}

/// `kbqa eval answers`.
pub fn eval_answers(config: &Config, e: EvalAnswers) -> anyhow::Result<()> {
    let opts = AskOptions::resolve(config, &AskOverrides::default())?;
    let kb = open(config)?;
    let llm = load_llm(config)?;
    let mut items = kbqa::eval::load_set(&e.set)?;
    match e.only.as_deref().map(str::parse::<usize>) {
        Some(Ok(n)) => items.truncate(n),
        Some(Err(_)) => {
            let ids: Vec<&str> = e.only.as_deref().unwrap_or("").split(',').collect();
            items.retain(|i| ids.contains(&i.id.as_str()));
        }
        None => {}
    }
    let total = items.len();
    let r =
        kbqa::eval::evaluate_answers(&kb, llm.as_ref(), &items, &opts, e.oracle, &mut |i, o| {
            let verdict = match (o.in_scope, o.status, o.correct) {
                (true, Status::Answered, true) => "ok",
                (true, Status::Answered, false) => "WRONG",
                (true, Status::NotSure, _) => "NOT SURE",
                (true, Status::Refused, _) => "REFUSED",
                (false, Status::Answered, _) => "ANSWERED",
                (false, Status::NotSure, _) => "ok (not sure)",
                (false, Status::Refused, _) => "ok (refused)",
            };
            eprintln!(
                "[{}/{total}] {} {verdict} ({:.1} s): {}",
                i + 1,
                o.id,
                o.ms / 1000.0,
                snippet(&o.answer, 120)
            );
        })?;
    let stem = match config.generator.backend {
        Backend::Openai => format!(
            "openai-{}",
            llm.name()
                .replace(|c: char| !c.is_alphanumeric() && c != '.', "-")
        ),
        Backend::Local => config
            .models
            .generator
            .rsplit('/')
            .next()
            .unwrap_or("model")
            .trim_end_matches(".gguf")
            .to_string(),
    };
    let path = e
        .report
        .unwrap_or_else(|| PathBuf::from(format!("tests/eval/reports/answers-{stem}.json")));
    write_report(&path, &r)?;
    print!("{}", r.to_markdown());
    println!("report: {}", path.display());
    Ok(())
}

/// `kbqa eval retrieval`.
pub fn eval_retrieval(
    config: &Config,
    set: &Path,
    report: Option<PathBuf>,
    translate: bool,
) -> anyhow::Result<()> {
    let kb = open(config)?;
    let mode = config.search.mode;
    let items = kbqa::eval::load_set(set)?;
    let llm = if translate {
        Some(load_llm(config)?)
    } else {
        None
    };
    let r = kbqa::eval::evaluate_retrieval(&kb, &items, mode, llm.as_deref())?;
    let path = report.unwrap_or_else(|| {
        let suffix = if translate { "-translated" } else { "" };
        PathBuf::from(format!("tests/eval/reports/retrieval-{mode}{suffix}.json"))
    });
    write_report(&path, &r)?;
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
    Ok(())
}

/// A report as pretty JSON at `path` (its folder made if missing).
fn write_report(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| path.display().to_string())
}

/// `kbqa models fetch`.
pub fn models_fetch(config: &Config, names: Vec<String>, force: bool) -> anyhow::Result<()> {
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
        let mut bars = Bars::on_stderr();
        let events = &mut |e| bars.fetch_event(e);
        let path = if force {
            let dir = fetch::models_dir(&config.home);
            fetch::fetch(spec, &dir, &config.python, events)?
        } else {
            fetch::ensure(spec, &config.home, &config.python, events)?
        };
        bars.finish();
        println!("{}\t{}", spec.name, path.display());
    }
    Ok(())
}

/// `kbqa models list`.
pub fn models_list(config: &Config) {
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
