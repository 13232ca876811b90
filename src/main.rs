//! The `kbqa` command: flags in, one resolved configuration, library
//! calls, human or JSON output out (see [`cli`]).

mod cli;

use clap::Parser;

use crate::cli::args::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // A server logs its requests; a command-line run only its warnings.
    let default_filter = match cli.command {
        Command::Serve { .. } => "warn,kbqa=info",
        _ => "warn",
    };
    // With KBQA_LOG set (e.g. `kbqa=debug`), each stage's span reports its
    // time when it closes: where a start or an answer spends it.
    let explicit = tracing_subscriber::EnvFilter::try_from_env("KBQA_LOG").ok();
    let span_events = if explicit.is_some() {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            explicit.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_span_events(span_events)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
