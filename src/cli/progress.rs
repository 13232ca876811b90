//! What long work is doing, on stderr: bars on a terminal, plain lines
//! otherwise.
//!
//! On a terminal a model fetch shows bytes, rate and time left; chunking,
//! BM25 and embedding show counts (embedding with chunks per second and
//! time left); an answer shows its stage. Elsewhere (a pipe, a log file, a
//! test) stderr gets the same plain lines as always, and answers show
//! nothing unless asked for (`kbqa ask --progress always`), so scripts
//! and `--json` output stay clean.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use kbqa::answer::Progress;
use kbqa::index::BuildEvent;
use kbqa::kb::OpenEvent;
use kbqa::models::fetch::FetchEvent;

use super::args::ProgressWhen;
use super::print;

/// How often spinners turn.
const TICK: Duration = Duration::from_millis(120);

/// Progress of fetching models and building an index.
pub struct Bars {
    tty: bool,
    /// The bar being drawn, and what it counts.
    bar: Option<(Stage, ProgressBar)>,
}

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Fetch,
    Verify,
    Chunk,
    Bm25,
    Embed,
}

impl Stage {
    fn style(self) -> ProgressStyle {
        let template = match self {
            Stage::Fetch => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
            Stage::Verify => "{spinner} {msg}",
            Stage::Chunk => "{msg} [{bar:30}] {pos}/{len} files",
            Stage::Bm25 => "{msg} [{bar:30}] {pos}/{len} chunks",
            Stage::Embed => "{msg} [{bar:30}] {pos}/{len} chunks, {rate} chunks/s, {eta} left",
        };
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}", state.per_sec());
                },
            )
            .progress_chars("=> ")
    }
}

impl Bars {
    /// Bars when stderr is a terminal, plain lines when it is not.
    pub fn on_stderr() -> Bars {
        Bars {
            tty: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    /// Shows an index open or build event.
    pub fn open_event(&mut self, e: OpenEvent) {
        match e {
            OpenEvent::Fetch(f) => self.fetch_event(f),
            OpenEvent::Build(BuildEvent::Chunking { done, total }) if self.tty => {
                self.count(Stage::Chunk, "chunking", done, total)
            }
            OpenEvent::Build(BuildEvent::Bm25 { done, total }) if self.tty => {
                self.count(Stage::Bm25, "bm25", done, total)
            }
            OpenEvent::Build(BuildEvent::Embedding { done, total }) if self.tty => {
                self.count(Stage::Embed, "embedding", done, total)
            }
            e => self.lines(print::open_lines(&e)),
        }
    }

    /// Shows a model fetch event.
    pub fn fetch_event(&mut self, e: FetchEvent) {
        match &e {
            FetchEvent::Downloading {
                model, part, parts, ..
            } if self.tty => {
                let bar = self.bar(Stage::Fetch, 0);
                bar.set_message(format!("fetching {model} (part {part}/{parts})"));
            }
            FetchEvent::Downloaded { bytes, total, .. } if self.tty => {
                let bar = self.bar(Stage::Fetch, *total);
                bar.set_length(*total);
                bar.set_position(*bytes);
            }
            FetchEvent::Verifying { model } if self.tty => {
                let bar = self.bar(Stage::Verify, 0);
                bar.set_message(format!("verifying {model} (sha256)"));
            }
            _ => self.lines(print::fetch_line(&e).into_iter().collect()),
        }
    }

    /// A counting bar at `done` of `total` (a plain line only ends it).
    fn count(&mut self, stage: Stage, what: &str, done: usize, total: usize) {
        let bar = self.bar(stage, total as u64);
        bar.set_message(what.to_string());
        bar.set_position(done as u64);
    }

    /// The bar for `stage`, started if another one (or none) is drawn.
    fn bar(&mut self, stage: Stage, len: u64) -> &ProgressBar {
        if self.bar.as_ref().is_some_and(|(s, _)| *s != stage) {
            self.finish();
        }
        let (_, bar) = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(len).with_style(stage.style());
            if stage == Stage::Verify {
                bar.enable_steady_tick(TICK);
            }
            (stage, bar)
        });
        bar
    }

    /// Plain lines, after the bar they end.
    fn lines(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        self.finish();
        for line in lines {
            eprintln!("{line}");
        }
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Where an answer is, on stderr: a spinner with the stage on a
/// terminal; by default nothing otherwise (plain lines, one per stage and
/// every few tokens, with `--progress always`).
pub struct AnswerProgress {
    spinner: Option<ProgressBar>,
    plain: bool,
    last: Option<Progress>,
}

impl AnswerProgress {
    /// Progress on stderr, `when` it is asked for.
    pub fn on_stderr(when: ProgressWhen) -> AnswerProgress {
        let tty = std::io::stderr().is_terminal() && when != ProgressWhen::Never;
        let spinner = tty.then(|| {
            let spinner = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg}… {elapsed}")
                    .expect("a valid template"),
            );
            spinner.enable_steady_tick(TICK);
            spinner
        });
        AnswerProgress {
            spinner,
            plain: !tty && when == ProgressWhen::Always,
            last: None,
        }
    }

    /// The spinner also says "stopping" as soon as `stop` is set (Ctrl-C
    /// was pressed), though the answer stops only at its next token.
    pub fn stopping_on(self, stop: Arc<AtomicBool>) -> AnswerProgress {
        if let Some(spinner) = &self.spinner {
            spinner.set_style(
                ProgressStyle::with_template("{spinner} {msg}… {elapsed}{stop}")
                    .expect("a valid template")
                    .with_key(
                        "stop",
                        move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                            if stop.load(Ordering::SeqCst) {
                                let _ = write!(w, " — stopping (Ctrl-C again quits)");
                            }
                        },
                    ),
            );
        }
        self
    }

    /// Shows `step`.
    pub fn show(&mut self, step: Progress) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(step.to_string());
        } else if self.plain {
            self.line(step);
        }
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
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "progress: {step}");
        }
    }

    /// Removes the spinner.
    pub fn clear(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

impl Drop for AnswerProgress {
    fn drop(&mut self) {
        self.clear();
    }
}
