//! `kbqa chat` as a person uses it: in a real terminal (a tmux pane,
//! driven with send-keys and read with capture-pane), and piped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{model_home, repo, Scratch};

/// A `kbqa chat` session in its own tmux server, with its own kbqa home
/// (for the history file; the models are linked in from the real cache).
struct Pane {
    socket: String,
    home: PathBuf,
}

impl Pane {
    /// Starts `kbqa chat` in a 100×50 pane. When kbqa exits the pane
    /// prints its exit code and stays, so the test can read both.
    fn start(s: &Scratch, env: &[(&str, &str)]) -> Pane {
        let home = s.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let models = kbqa::models::fetch::models_dir(&model_home());
        let link = kbqa::models::fetch::models_dir(&home);
        if !link.exists() {
            std::os::unix::fs::symlink(&models, &link).unwrap();
        }
        let socket = format!(
            "kbqa-chat-{}-{}",
            std::process::id(),
            s.dir.path().display()
        )
        .replace(['/', '.'], "-");
        let mut command = format!(
            "cd {} && env -u KBQA_LOG KBQA_HOME={} KBQA_CONFIDENCE_THRESHOLD=0",
            shell(s.dir.path()),
            shell(&home)
        );
        for (k, v) in env {
            command.push_str(&format!(" {k}={}", shell(Path::new(v))));
        }
        command.push_str(&format!(
            " {} --corpus {} --index-dir {} chat; echo kbqa-exited-$?; sleep 600",
            shell(Path::new(env!("CARGO_BIN_EXE_kbqa"))),
            shell(&repo().join("corpus")),
            shell(&s.index_dir())
        ));
        let ok = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "100", "-y", "50", &command])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is needed for the terminal tests (apt-get install tmux)");
        assert!(ok.success(), "tmux new-session failed");
        Pane { socket, home }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` then Enter.
    fn line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "0", key]);
    }

    /// The whole screen and its scrollback, wrapped lines joined; with
    /// `codes`, colours and emphasis as escape codes.
    fn screen(&self, codes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-", "-t", "0"];
        if codes {
            args.push("-e");
        }
        self.tmux(&args)
    }

    /// Waits until `done` holds for the screen; panics with the screen
    /// after `secs`.
    fn wait(&self, what: &str, secs: u64, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(false);
            if done(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the `n`th prompt.
    fn prompt(&self, n: usize) -> String {
        self.wait(&format!("prompt {n}"), 180, |s| prompts(s) >= n)
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn prompts(screen: &str) -> usize {
    screen
        .lines()
        .filter(|l| l.starts_with("kbqa> ") || *l == "kbqa>")
        .count()
}

/// What the screen shows after the last line that starts with `marker`.
fn after<'a>(screen: &'a str, marker: &str) -> &'a str {
    screen.rfind(marker).map_or("", |i| &screen[i..])
}

fn shell(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn a_terminal_session_follows_up_shows_sources_stops_on_ctrl_c_and_leaves_on_ctrl_d() {
    let s = Scratch::with_shipped_index();
    let pane = Pane::start(&s, &[]);
    let screen = pane.prompt(1);
    assert!(screen.contains("kbqa: ready in"), "{screen}");

    pane.line("什么是RLHF？");
    pane.prompt(2);
    pane.line("它和SFT有什么区别？");
    let screen = pane.prompt(3);
    let follow_up = after(&screen, "kbqa> 它和SFT有什么区别？");
    assert!(
        follow_up.contains("(asked as: RLHF和SFT有什么区别？)"),
        "{screen}"
    );
    assert!(follow_up.contains("Sources:"), "{follow_up}");
    assert!(follow_up.contains("[1] "), "{follow_up}");

    // The last answer's full evidence: its passages whole, with scores.
    pane.line("/sources");
    let screen = pane.prompt(4);
    let sources = after(&screen, "kbqa> /sources");
    assert!(sources.contains("(score "), "{sources}");
    assert!(sources.contains(" › "), "{sources}");
    // Passages are shown whole, wrapped to the pane, where an answer's
    // sources quote at most 200 characters of a sentence.
    let longest_quote = sources
        .split("\n\n")
        .map(|block| {
            let lines = block.lines().filter(|l| l.starts_with("      "));
            lines.map(|l| l.trim().chars().count()).sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    assert!(longest_quote > 200, "{sources}");
    assert!(
        sources
            .lines()
            .all(|l| unicode_width::UnicodeWidthStr::width(l) <= 100),
        "lines fit the pane: {sources}"
    );

    // The evidence is dimmed on a colour terminal (SGR 2).
    assert!(pane.screen(true).contains("\x1b[2m"), "no dimmed text");

    // Ctrl-C while the answer is being worked on stops it, not the session.
    pane.line("What does EFLOPS mean?");
    pane.wait("the answer's progress", 120, |s| {
        let tail = after(s, "kbqa> What does EFLOPS mean?");
        tail.contains("retrieving…") || tail.contains("writing") || tail.contains("checking…")
    });
    pane.key("C-c");
    let screen = pane.prompt(5);
    let stopped = after(&screen, "kbqa> What does EFLOPS mean?");
    assert!(stopped.contains("[stopped]"), "{screen}");
    assert!(!stopped.contains("Sources:"), "{stopped}");

    // And the same question again gets its answer.
    pane.line("What does EFLOPS mean?");
    let screen = pane.prompt(6);
    let again = after(&screen, "kbqa> What does EFLOPS mean?");
    assert!(again.contains("Sources:"), "{screen}");
    assert!(again.contains("EFLOPS"), "{again}");

    pane.key("C-d");
    let screen = pane.wait("kbqa to exit", 30, |s| s.contains("kbqa-exited-"));
    assert!(screen.contains("kbqa-exited-0"), "{screen}");

    let history = std::fs::read_to_string(pane.home.join("chat_history")).unwrap();
    for q in ["什么是RLHF？", "它和SFT有什么区别？", "/sources"] {
        assert!(
            history.lines().any(|l| l == q),
            "{q} not in history:\n{history}"
        );
    }
}

#[test]
fn no_color_keeps_the_terminal_plain() {
    let s = Scratch::with_shipped_index();
    let pane = Pane::start(&s, &[("NO_COLOR", "1")]);
    pane.prompt(1);
    pane.line("What is SFT?");
    pane.prompt(2);
    let screen = pane.screen(true);
    let answer = after(&screen, "kbqa> What is SFT?");
    assert!(answer.contains("Sources:"), "{screen}");
    assert!(!answer.contains('\x1b'), "{answer:?}");
}

#[test]
fn piped_questions_get_plain_answers_and_follow_ups_still_work() {
    let s = Scratch::with_shipped_index();
    let run = |input: &str, args: &[&str]| {
        let mut cmd = s.command(&repo().join("corpus"));
        let mut child = cmd
            .arg("chat")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        crate::util::Run::from(child.wait_with_output().unwrap())
    };

    let out = run("什么是RLHF？\n\n它和SFT有什么区别？\n/sources\n", &[]).success();
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");
        assert!(!text.contains("kbqa>"), "a prompt in a pipe: {text}");
    }
    assert!(
        out.stdout.contains("(asked as: RLHF和SFT有什么区别？)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("\nSources:\n").count(),
        2,
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(score "), "/sources: {}", out.stdout);

    // JSON lines: one answer per line, the follow-up asked as it was
    // rewritten; notes go to stderr; a bad question and a bad command are
    // errors there, and make the exit status 1.
    let big = "问".repeat(2001);
    let out = run(
        &format!("What is SFT?\n{big}\n/mode vectr\nWhat are its steps?\n"),
        &["--json"],
    )
    .failure();
    for said in [
        "error: invalid query",
        "unknown search mode",
        "(asked as: What are SFT's steps?)",
        "2 line(s) got no answer",
    ] {
        assert!(out.stderr.contains(said), "{said}: {}", out.stderr);
    }
    let answers: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(answers.len(), 2, "{}", out.stdout);
    assert_eq!(answers[0]["question"], "What is SFT?");
    assert_eq!(answers[1]["question"], "What are SFT's steps?");
}
