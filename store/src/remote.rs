//! What other nodes sharing the store's PostgreSQL database commit, for the parts of a node
//! that keep state of their own derived from some tables (the rollout engine on the leader
//! node, say) and must start over when another node wrote those tables.
//!
//! The store itself already keeps its caches and its broadcasts ([`crate::LoginChange`],
//! [`crate::ConfigChange`]) in step with the other nodes; this is the rest, by table name
//! (the kv tables of [`crate::tables`]). On redb nothing is ever sent: one process has the
//! file.
//!
//! Delivery is a bounded broadcast: a subscriber that falls behind is told it lagged and must
//! assume that anything changed, as after [`RemoteChange::Everything`].

use tokio::sync::broadcast;

/// Changes kept for a slow subscriber before it is told it lagged.
const BACKLOG: usize = 1024;

/// What another node committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    /// One commit of another node changed these tables (their names in [`crate::tables`]).
    Tables(Vec<String>),
    /// Other nodes' commits may have gone unheard (this node lost its connection to the
    /// database's notices for a while): anything may have changed.
    Everything,
}

impl RemoteChange {
    /// Whether the change may concern `table` (a name of [`crate::tables`]).
    pub fn concerns(&self, table: &str) -> bool {
        match self {
            RemoteChange::Tables(tables) => tables.iter().any(|t| t == table),
            RemoteChange::Everything => true,
        }
    }
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct RemoteChanges(broadcast::Sender<RemoteChange>);

impl Default for RemoteChanges {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl RemoteChanges {
    /// Passes a remote change on (nobody listening is fine).
    pub fn announce(&self, change: RemoteChange) {
        let _ = self.0.send(change);
    }

    /// Changes heard from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RemoteChange> {
        self.0.subscribe()
    }
}
