//! `kbqa serve`: the process around the HTTP service (listener, model
//! loading in the background, signals).

use anyhow::Context;
use kbqa::config::Backend;
use kbqa::server::State;
use kbqa::Config;

/// `kbqa serve`: listens at once (so `/healthz` answers and `/readyz`
/// says "loading"), opens the index and loads the models in the
/// background, and serves until SIGTERM or Ctrl-C.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.addr))?;
        let addr = listener.local_addr()?;
        eprintln!("kbqa: listening on http://{addr}");
        if !config.server.api_keys.is_empty() {
            eprintln!(
                "kbqa: {} API key(s) set: /v1 routes need `Authorization: Bearer <key>`",
                config.server.api_keys.len()
            );
        }
        match (&config.slack.signing_secret, &config.slack.bot_token) {
            (None, _) => eprintln!(
                "kbqa: Slack routes off (set KBQA_SLACK_SIGNING_SECRET to turn them on)"
            ),
            (Some(_), None) => eprintln!(
                "kbqa: Slack routes on, but KBQA_SLACK_BOT_TOKEN is not set: mentions cannot be answered"
            ),
            (Some(_), Some(_)) => eprintln!(
                "kbqa: Slack routes on: /slack/events, /slack/commands (Web API {})",
                config.slack.api_base
            ),
        }
        let state = State::new(config.clone());
        let loading = state.clone();
        let loader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            // The default knowledge base opens now; others on first use. A
            // shared index's database that is down is waited for (the
            // server answers 503 meanwhile), not a reason to exit.
            let selected = config.selected()?;
            let kb = loop {
                match super::engines::open(&selected) {
                    Err(e) if matches!(
                        e.downcast_ref::<kbqa::Error>(),
                        Some(kbqa::Error::DatabaseUnreachable { .. })
                    ) =>
                    {
                        eprintln!("kbqa: waiting for the database: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(
                            config.database.poll_ms.min(5000),
                        ));
                    }
                    other => break other?,
                }
            };
            // The first search should not pay for loading it. An embeddings
            // server that is down is not fatal: BM25 works, and the next
            // vector search connects again.
            if let Err(e) = kb.embedder() {
                if config.embedder.backend != Backend::Openai {
                    return Err(e.into());
                }
                eprintln!("kbqa: warning: {e}");
            }
            let llm = super::engines::load_llm(&config)?;
            loading.set_engine(kb, llm);
            eprintln!("kbqa: ready");
            Ok(())
        });
        tokio::spawn(async move {
            let failed = match loader.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            eprintln!("error: cannot start serving: {failed}");
            std::process::exit(1);
        });
        kbqa::server::serve(state, listener, shutdown_signal()).await?;
        eprintln!("kbqa: stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
