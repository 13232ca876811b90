//! `kbqa chat`: question after question in one process.
//!
//! The knowledge base and the model load once, so each question costs
//! only its answer. A follow-up that refers back ("它和SFT有什么区别？") is
//! rewritten with the topic of the questions before it, by the same rule
//! as the HTTP endpoints ([`kbqa::chat::standalone_question`]), and the
//! rewrite is shown.
//!
//! On a terminal the session has line editing and a history kept in
//! `$KBQA_HOME/chat_history`; Ctrl-C stops the answer being written (a
//! second Ctrl-C before it stops ends the session), and Ctrl-D leaves.
//! Piped input is answered line by line, with no prompts and no control
//! codes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use kbqa::answer::{Answer, AskOptions, AskOverrides, Question};
use kbqa::config::SearchMode;
use kbqa::engine::{Finish, Generator};
use kbqa::{Config, Kb};
use rustyline::error::ReadlineError;

use super::args::ProgressWhen;
use super::engines::{load_llm, open};
use super::print;
use super::progress::AnswerProgress;
use super::term::Look;

const HELP: &str = "\
Ask a question in Chinese or English; a follow-up may refer to the one before.
  /sources      everything behind the last answer: each cited passage whole
  /k N          passages given to the model (now {k})
  /mode M       retriever: hybrid, bm25 or vector (now {mode})
  /new          forget the conversation (follow-ups start afresh)
  /help         this list
  /quit         leave (or Ctrl-D); Ctrl-C stops an answer being written";

/// Runs a chat session on standard input.
pub fn chat(config: &Config, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let opts = AskOptions::resolve(config, &AskOverrides::default())?;
    let kb = Arc::new(open(config)?);
    let llm = load_llm(config)?;
    // The query embedder loads while the user types the first question
    // (loaded beside the chat model it only slows that down: both use
    // both cores); the first search waits for it only if it comes
    // sooner. A failure is met again, and shown, by that search.
    let warm = Arc::clone(&kb);
    std::thread::spawn(move || warm.embedder().ok());
    let mut session = Session {
        config,
        kb,
        llm,
        overrides: AskOverrides::default(),
        opts,
        earlier: Vec::new(),
        last: None,
        json,
        interrupt: Interrupt::install()?,
    };
    // Line editing draws on stdout: both must be the terminal (a session
    // whose answers go to a file is answered as if piped).
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        session.interactive(started)
    } else {
        session.piped()
    }
}

/// What a session holds between questions.
struct Session<'a> {
    config: &'a Config,
    kb: Arc<Kb>,
    llm: Arc<dyn Generator>,
    /// What `/k` and `/mode` changed.
    overrides: AskOverrides,
    opts: AskOptions,
    /// The questions answered so far, as the user wrote them.
    earlier: Vec<String>,
    /// The last answer, for `/sources`.
    last: Option<Answer>,
    json: bool,
    interrupt: Interrupt,
}

/// What became of a line.
#[derive(PartialEq, Eq)]
enum Flow {
    /// Done; the next line.
    Go,
    /// It failed or was stopped (shown); the next line.
    Failed,
    /// The session ends.
    Quit,
}

impl Session<'_> {
    /// Prompts, line editing and history, until Ctrl-D or `/quit`.
    fn interactive(&mut self, started: Instant) -> anyhow::Result<()> {
        let mut editor = rustyline::DefaultEditor::new().context("starting line editing")?;
        let history = self.history_file();
        // There is none the first time.
        let _ = editor.load_history(&history);
        eprintln!(
            "kbqa: ready in {:.1} s ({} passages). /help for commands, Ctrl-D to leave.",
            started.elapsed().as_secs_f64(),
            self.kb.generation().manifest.chunk_count,
        );
        let mut history_saved = true;
        loop {
            match editor.readline("kbqa> ") {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    // Appended, so sessions side by side keep each other's lines.
                    let saved = history
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| {
                            editor
                                .append_history(&history)
                                .map_err(std::io::Error::other)
                        });
                    if let (Err(e), true) = (saved, history_saved) {
                        eprintln!("kbqa: history not saved to {}: {e}", history.display());
                        history_saved = false;
                    }
                    if self.line(&line) == Flow::Quit {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted) => eprintln!("(Ctrl-D or /quit leaves)"),
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e).context("reading the terminal"),
            }
        }
        Ok(())
    }

    /// Each line of standard input, answered in turn; fails at the end if
    /// any line failed (a question with no answer, a bad command).
    fn piped(&mut self) -> anyhow::Result<()> {
        let mut failed = 0;
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.with_context(|| format!("reading line {} of stdin", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match self.line(&line) {
                Flow::Go => {}
                Flow::Failed => failed += 1,
                Flow::Quit => break,
            }
        }
        match failed {
            0 => Ok(()),
            n => anyhow::bail!("{n} line(s) got no answer (see above)"),
        }
    }

    /// One line: a command or a question. Errors are shown, and the
    /// session goes on, unless nobody reads the answers any more (a closed
    /// pipe): then it ends rather than answer into the void.
    fn line(&mut self, line: &str) -> Flow {
        let line = line.trim();
        let result = match line.strip_prefix('/') {
            Some(command) => self.command(command),
            None => self.ask(line),
        };
        let _ = std::io::stdout().flush();
        match result {
            Ok(flow) => flow,
            Err(e) if broken_pipe(&e) => Flow::Quit,
            Err(e) => {
                eprintln!("error: {e:#}");
                Flow::Failed
            }
        }
    }

    /// A note about the session, not an answer: dimmed on stdout, or on
    /// stderr when stdout carries JSON lines.
    fn note(&self, out: &mut impl Write, look: &Look, text: &str) -> std::io::Result<()> {
        if self.json {
            eprintln!("{text}");
            Ok(())
        } else {
            writeln!(out, "{}", look.dim(text))
        }
    }

    fn command(&mut self, command: &str) -> anyhow::Result<Flow> {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        let look = Look::stdout();
        let mut out = std::io::stdout().lock();
        match (name, arg) {
            ("quit" | "exit" | "q", _) => return Ok(Flow::Quit),
            ("help" | "h" | "?", _) => {
                let help = HELP
                    .replace("{k}", &self.opts.k.to_string())
                    .replace("{mode}", &self.opts.mode.to_string());
                self.note(&mut out, &Look::PLAIN, &help)?;
            }
            ("new", _) => {
                self.earlier.clear();
                self.last = None;
                self.note(&mut out, &look, "(a new conversation)")?;
            }
            ("sources", _) => match &self.last {
                Some(a) if self.json => {
                    let sources =
                        serde_json::json!({ "citations": a.citations, "passages": a.passages });
                    writeln!(out, "{sources}")?;
                }
                Some(a) => print::all_sources(&mut out, a, &look)?,
                None => anyhow::bail!("no answer yet: ask a question first"),
            },
            ("k", Some(n)) => {
                let k = n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("/k takes a number of passages, not {n:?}"))?;
                self.set(AskOverrides {
                    k: Some(k),
                    ..self.overrides.clone()
                })?;
                self.note(&mut out, &look, &format!("(passages: {k})"))?;
            }
            ("mode", Some(m)) => {
                let mode: SearchMode = m.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                self.set(AskOverrides {
                    mode: Some(mode),
                    ..self.overrides.clone()
                })?;
                self.note(&mut out, &look, &format!("(retriever: {m})"))?;
            }
            ("k" | "mode", None) => {
                anyhow::bail!("/{name} needs a value; /help lists the commands")
            }
            _ => anyhow::bail!("unknown command /{name}; /help lists the commands"),
        }
        Ok(Flow::Go)
    }

    /// New overrides, kept only if they resolve to valid options.
    fn set(&mut self, overrides: AskOverrides) -> anyhow::Result<()> {
        self.opts = AskOptions::resolve(self.config, &overrides)?;
        self.overrides = overrides;
        Ok(())
    }

    /// Answers a question (a follow-up made to stand alone first). An
    /// interrupted answer is dropped, and is not part of the conversation.
    fn ask(&mut self, line: &str) -> anyhow::Result<Flow> {
        let asked = kbqa::chat::standalone_question(&self.earlier, line);
        let question = Question::parse(&asked, self.opts.k)?;
        // Looked up per answer: the terminal may have been resized.
        let look = Look::stdout();
        let mut out = std::io::stdout().lock();
        if asked != line {
            self.note(&mut out, &look, &format!("(asked as: {asked})"))?;
            out.flush()?;
        }
        let mut progress =
            AnswerProgress::on_stderr(ProgressWhen::Auto).stopping_on(self.interrupt.flag());
        self.interrupt.arm();
        let answer = kbqa::answer::ask(
            &self.kb,
            self.llm.as_ref(),
            &question,
            &self.opts,
            &mut |step| {
                progress.show(step);
                !self.interrupt.fired()
            },
        );
        let stopped = self.interrupt.disarm();
        progress.clear();
        let answer = answer?;
        if stopped || answer.finish == Some(Finish::Cancelled) {
            self.note(&mut out, &look, "[stopped]")?;
            return Ok(Flow::Failed);
        }
        if self.json {
            serde_json::to_writer(&mut out, &answer)?;
            writeln!(out)?;
        } else {
            print::answer(&mut out, &answer, &look)?;
            writeln!(out)?;
        }
        self.earlier.push(line.to_string());
        self.last = Some(answer);
        Ok(Flow::Go)
    }

    fn history_file(&self) -> PathBuf {
        self.config.home.join("chat_history")
    }
}

/// Whether `e` is stdout's reader having gone away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Ctrl-C while an answer is written stops that answer; at any other time
/// (loading, between piped questions, or a second Ctrl-C before the
/// answer stops) it ends the process as usual. At a prompt the line
/// editor reads Ctrl-C as a key, so no signal comes.
struct Interrupt {
    /// Set by SIGINT; while it is set, the next SIGINT exits.
    fired: Arc<AtomicBool>,
}

impl Interrupt {
    fn install() -> anyhow::Result<Interrupt> {
        use signal_hook::consts::SIGINT;
        let fired = Arc::new(AtomicBool::new(true));
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&fired))
            .context("handling Ctrl-C")?;
        signal_hook::flag::register(SIGINT, Arc::clone(&fired)).context("handling Ctrl-C")?;
        Ok(Interrupt { fired })
    }

    /// An answer is being written: the next Ctrl-C stops it.
    fn arm(&self) {
        self.fired.store(false, Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// The flag, for a spinner that says the answer is stopping.
    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fired)
    }

    /// The answer is done; returns whether Ctrl-C stopped it.
    fn disarm(&self) -> bool {
        self.fired.swap(true, Ordering::SeqCst)
    }
}
