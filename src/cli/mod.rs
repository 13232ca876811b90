//! The `kbqa` command line, a thin edge over the library: flags
//! ([`args`]) are resolved once, with the config file and the `KBQA_*`
//! environment, into a validated [`kbqa::Config`]; a command
//! ([`commands`], [`chat`], [`serve`]) calls the library; [`print`] shows
//! the result, fitted to the terminal by [`term`]; [`progress`] draws
//! what long work is doing.

pub mod args;
pub mod chat;
pub mod commands;
pub mod engines;
pub mod kb;
pub mod print;
pub mod progress;
pub mod serve;
pub mod term;

use kbqa::config::layers;
use kbqa::Config;

use self::args::{Cli, Command, EvalCommand, ModelsCommand};

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = layers::from_env(std::env::vars());
    settings.extend(cli.global.settings());
    settings.extend(cli.command.settings());
    let all = Config::load(cli.global.config.as_deref(), &settings)?;
    kbqa::models::init_threads(all.threads);
    // The server and `kb` take every knowledge base; the other commands
    // the one `--kb` names (checked by `Config::load`).
    let config = all.selected()?;
    match cli.command {
        Command::Kb(command) => kb::run(&all, cli.global.config.as_deref(), command),
        Command::Serve { .. } => serve::serve(all),
        Command::Index {
            rebuild, all: true, ..
        } => {
            for name in all.kb_names() {
                eprintln!("kbqa: knowledge base {name}");
                commands::index(&all.for_kb(name)?, rebuild)?;
            }
            Ok(())
        }
        Command::Index { rebuild, .. } => commands::index(&config, rebuild),
        Command::Search { query, k, json, .. } => commands::search(&config, &query, k, json),
        Command::Ask {
            question,
            json,
            progress,
            ..
        } => commands::ask(&config, &question, json, progress),
        Command::Chat { json, .. } => chat::chat(&config, json),
        Command::Eval(EvalCommand::Answers {
            set,
            only,
            report,
            oracle,
            ..
        }) => commands::eval_answers(
            &config,
            commands::EvalAnswers {
                set,
                only,
                report,
                oracle,
            },
        ),
        Command::Eval(EvalCommand::Retrieval {
            set,
            report,
            translate,
            ..
        }) => commands::eval_retrieval(&config, &set, report, translate),
        Command::Models(ModelsCommand::Fetch { names, force }) => {
            commands::models_fetch(&config, names, force)
        }
        Command::Models(ModelsCommand::List) => {
            commands::models_list(&config);
            Ok(())
        }
    }
}
