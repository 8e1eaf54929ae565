//! What the MQTT broker keeps across a restart: retained messages and persistent sessions
//! (clean session 0) with the messages queued for them.
//!
//! The store keeps these as rows of opaque bytes by key: the broker encodes and decodes its
//! own records, so the store knows no MQTT types and does not depend on the broker (the
//! bridge maps between the two). Three kinds of row:
//! - a **retained** message per topic;
//! - a **session** record per persistent session key;
//! - a **queued** message per (session key, sequence number).
//!
//! The broker group-commits its changes: [`crate::BrokerStateStore::apply_broker_state`]
//! takes a batch, in the order the broker made the changes, and applies it in one write
//! transaction, so a QoS 1/2 message is acknowledged only once it is durable, and a crash
//! leaves either the whole batch or none of it.

/// Every broker row, as last applied: what the broker loads when it starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BrokerRows {
    /// Topic → retained-message record, in topic order.
    pub retained: Vec<(String, Vec<u8>)>,
    /// Session key → session record, in key order.
    pub sessions: Vec<(String, Vec<u8>)>,
    /// (session key, sequence number) → queued-message record, in key then sequence order.
    pub queued: Vec<(String, u64, Vec<u8>)>,
}

/// One change to the broker's rows. `Some` sets a row, `None` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerRowChange {
    /// Sets or clears the retained message of `topic`.
    Retained {
        /// The topic.
        topic: String,
        /// The record, or `None` to delete.
        record: Option<Vec<u8>>,
    },
    /// Sets a session's record, or (`None`) deletes the session **and all its queued rows**:
    /// a session that is gone has nothing left to deliver.
    Session {
        /// The session key.
        key: String,
        /// The record, or `None` to delete the session and its queue.
        record: Option<Vec<u8>>,
    },
    /// Adds or removes one queued message of a session.
    Queued {
        /// The session key.
        key: String,
        /// The message's sequence number within the session.
        seq: u64,
        /// The record, or `None` to delete.
        record: Option<Vec<u8>>,
    },
}
