//! The broker's [`Persistence`] over the store: retained messages and persistent sessions
//! survive a restart in the same redb file as everything else.
//!
//! The broker and the store each define their rows (neither depends on the other); this maps
//! one onto the other. Both calls run on the blocking pool through [`Store::run`], so the
//! broker's async workers never wait on disk; the broker already group-commits, so one
//! `apply` is one store transaction.

use fleetmq_broker::{BrokerError, Persistence, PersistenceFuture, StateChange, StoredState};
use fleetmq_store::{BrokerRowChange, BrokerRows, Store, StoreError};

/// Where the broker keeps what must survive a restart: the store's broker rows
/// ([`fleetmq_store::BrokerStateStore`]).
#[derive(Clone)]
pub struct BrokerState {
    store: Store,
}

impl BrokerState {
    /// Persistence for the broker in `store` (plug it in with
    /// [`fleetmq_broker::Broker::with_persistence`]).
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Persistence for BrokerState {
    fn load(&self) -> PersistenceFuture<'_, StoredState> {
        Box::pin(async move {
            let rows = self
                .store
                .run(|db| db.load_broker_state())
                .await
                .map_err(refused)?;
            Ok(stored_state(rows))
        })
    }

    fn apply(&self, changes: Vec<StateChange>) -> PersistenceFuture<'_, ()> {
        Box::pin(async move {
            let changes: Vec<BrokerRowChange> = changes.into_iter().map(row_change).collect();
            self.store
                .run(move |db| db.apply_broker_state(changes))
                .await
                .map_err(refused)
        })
    }
}

/// A store failure as the broker sees it: nothing was applied, nothing is acknowledged.
fn refused(error: StoreError) -> BrokerError {
    BrokerError::Persistence(error.to_string())
}

fn stored_state(rows: BrokerRows) -> StoredState {
    StoredState {
        retained: rows.retained,
        sessions: rows.sessions,
        queued: rows.queued,
    }
}

fn row_change(change: StateChange) -> BrokerRowChange {
    match change {
        StateChange::Retained { topic, record } => BrokerRowChange::Retained { topic, record },
        StateChange::Session { key, record } => BrokerRowChange::Session { key, record },
        StateChange::Queued { key, seq, record } => BrokerRowChange::Queued { key, seq, record },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_the_broker_applies_it_loads_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = BrokerState::new(Store::open(dir.path()).expect("open"));
            state
                .apply(vec![
                    StateChange::Retained {
                        topic: "org/a/status".to_owned(),
                        record: Some(b"online".to_vec()),
                    },
                    StateChange::Session {
                        key: "client-1".to_owned(),
                        record: Some(b"subs".to_vec()),
                    },
                    StateChange::Queued {
                        key: "client-1".to_owned(),
                        seq: 1,
                        record: Some(b"m1".to_vec()),
                    },
                    StateChange::Queued {
                        key: "client-2".to_owned(),
                        seq: 1,
                        record: Some(b"orphan".to_vec()),
                    },
                    StateChange::Session {
                        key: "client-2".to_owned(),
                        record: None,
                    },
                ])
                .await
                .expect("apply");
        }

        let state = BrokerState::new(Store::open(dir.path()).expect("reopen"));
        assert_eq!(
            state.load().await.expect("load"),
            StoredState {
                retained: vec![("org/a/status".to_owned(), b"online".to_vec())],
                sessions: vec![("client-1".to_owned(), b"subs".to_vec())],
                queued: vec![("client-1".to_owned(), 1, b"m1".to_vec())],
            }
        );
    }
}
