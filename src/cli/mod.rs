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
    let config = Config::load(cli.global.config.as_deref(), &settings)?;
    kbqa::models::init_threads(config.threads);
    match cli.command {
        Command::Index { rebuild, .. } => commands::index(&config, rebuild),
        Command::Search { query, k, json, .. } => commands::search(&config, &query, k, json),
        Command::Ask {
            question,
            json,
            progress,
            ..
        } => commands::ask(&config, &question, json, progress),
        Command::Chat { json, .. } => chat::chat(&config, json),
        Command::Serve { .. } => serve::serve(config),
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
