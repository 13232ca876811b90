//! Following the shared index (`index_backend = "postgres"`): a replica
//! learns of a new live generation from the database's `NOTIFY`, or by
//! polling when a notification may have been missed (at start, after a
//! reconnect, every `database.poll_ms`), and reloads the knowledge bases
//! it has open. No request is dropped: a reload swaps the index under new
//! requests only ([`State::reload`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::state::State;
use crate::config::{DatabaseConfig, IndexBackend};
use crate::index::pg::{Db, CHANNEL};
use crate::index::Store;

/// Starts following the database, if this server's index lives in one.
pub(crate) fn spawn(state: Arc<State>) {
    let config = state.config();
    if config.index_backend != IndexBackend::Postgres {
        return;
    }
    let database = config.database.clone();
    let poll = Duration::from_millis(config.database.poll_ms);
    // `Some(kb)`: kb was announced; `None`: check every open one.
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    std::thread::Builder::new()
        .name("kbqa-listen".into())
        .spawn(move || listen(&database, poll, &tx))
        .expect("spawn the listener thread");
    tokio::spawn(async move {
        // Per knowledge base, a generation that could not be opened: not
        // tried again until another one is live.
        let mut refused: HashMap<String, String> = HashMap::new();
        while let Some(announced) = rx.recv().await {
            let names: Vec<String> = match announced {
                Some(kb) => vec![kb],
                None => state.kb_names().iter().map(|n| n.to_string()).collect(),
            };
            for name in names {
                follow(&state, &name, &mut refused).await;
            }
        }
    });
}

/// Reloads knowledge base `name` if it is open and the database's live
/// generation is another one.
async fn follow(state: &Arc<State>, name: &str, refused: &mut HashMap<String, String>) {
    let Some(serving) = state.serving(name) else {
        return; // not open here: it opens at the live generation when first used
    };
    let Ok(config) = state.kb_config(Some(name)).cloned() else {
        return;
    };
    let live = tokio::task::spawn_blocking(move || Store::for_config(&config)?.live_name()).await;
    match live {
        Ok(Ok(Some(live))) if live != serving && refused.get(name) != Some(&live) => {
            match state.reload(name).await {
                Ok(_) => {
                    refused.remove(name);
                }
                // The database went away meanwhile: try again at the next poll.
                Err(e @ ApiError::DatabaseUnavailable(_)) => {
                    tracing::warn!(
                        kb = name,
                        "cannot follow the new generation yet: {}",
                        e.message()
                    )
                }
                Err(e) => {
                    tracing::error!(kb = name, generation = %live, "the new generation cannot be served: {}", e.message());
                    refused.insert(name.to_string(), live);
                }
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(kb = name, "cannot check the live generation: {e}"),
        Err(e) => tracing::warn!(kb = name, "checking the live generation failed: {e}"),
    }
}

/// The blocking half: `LISTEN` on a connection of its own, reconnecting
/// with the poll interval as backoff; sends what to check until the
/// server is gone.
fn listen(database: &DatabaseConfig, poll: Duration, tx: &mpsc::UnboundedSender<Option<String>>) {
    loop {
        match Db::connect(database).and_then(|db| db.dedicated()) {
            Ok(mut client) => {
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok() {
                    // Whatever happened while not listening.
                    if tx.send(None).is_err() {
                        return;
                    }
                    loop {
                        let next = client.notifications().timeout_iter(poll).next();
                        let message = match next {
                            Ok(Some(n)) => Some(n.payload().to_string()),
                            Err(e) => {
                                tracing::warn!("lost the database's notifications: {e}");
                                break;
                            }
                            Ok(None) if client.is_closed() => break,
                            Ok(None) => None,
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot listen for new generations: {e}"),
        }
        std::thread::sleep(poll);
        if tx.send(None).is_err() {
            return;
        }
    }
}
