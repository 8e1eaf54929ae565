//! The persistence boundary: where retained messages and persistent sessions (clean session
//! 0) go so that they survive a restart.
//!
//! The broker does not know the store; the server plugs one in with
//! [`Broker::with_persistence`](crate::Broker::with_persistence). Records are opaque bytes
//! the broker encodes and decodes itself (the store only keeps rows by key), so the store
//! needs no MQTT types:
//! - a **retained** message per topic;
//! - a **session** record per persistent session key (its subscriptions);
//! - the **queued** messages of a persistent session, by the session key and a sequence
//!   number that only grows within the session.
//!
//! [`Persistence::apply`] takes changes in the order the broker made them and must apply
//! each batch atomically; a QoS 1/2 message queued for a persistent session is acknowledged
//! to its publisher only once the batch holding it is applied.

use std::future::Future;
use std::pin::Pin;

use crate::BrokerError;

/// What [`Persistence::load`] returns: every row, as last applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// Topic → retained-message record.
    pub retained: Vec<(String, Vec<u8>)>,
    /// Session key → session record.
    pub sessions: Vec<(String, Vec<u8>)>,
    /// (session key, sequence number) → queued-message record, in no particular order.
    pub queued: Vec<(String, u64, Vec<u8>)>,
}

/// One change to the stored rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Sets (`Some`) or clears (`None`) the retained message of `topic`.
    Retained {
        /// The topic.
        topic: String,
        /// The record, or `None` to delete.
        record: Option<Vec<u8>>,
    },
    /// Sets a session's record, or (`None`) deletes the session **and all its queued rows**.
    Session {
        /// The session key.
        key: String,
        /// The record, or `None` to delete the session and its queue.
        record: Option<Vec<u8>>,
    },
    /// Adds (`Some`) or removes (`None`) one queued message of a session.
    Queued {
        /// The session key.
        key: String,
        /// The message's sequence number within the session.
        seq: u64,
        /// The record, or `None` to delete.
        record: Option<Vec<u8>>,
    },
}

/// The future [`Persistence`] methods return.
pub type PersistenceFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// Where the broker keeps what must survive a restart (the server plugs in the store).
pub trait Persistence: Send + Sync + 'static {
    /// Every stored row; called once, when the broker starts.
    fn load(&self) -> PersistenceFuture<'_, StoredState>;

    /// Applies `changes`, in order, in one atomic, durable write.
    fn apply(&self, changes: Vec<StateChange>) -> PersistenceFuture<'_, ()>;
}
