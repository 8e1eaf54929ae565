//! Changes that may take back a login the broker already accepted: a device's key, its
//! deactivation or deletion; an organization's slug, deactivation or deletion; any user,
//! membership or token change. The backend announces each once it is committed, so that live
//! MQTT sessions can be judged again (the bridge asks the broker to), not only new logins.
//!
//! Delivery is a bounded broadcast: a subscriber that falls behind is told it lagged and must
//! assume that anything changed.
//!
//! Nodes sharing a PostgreSQL database hear each other's changes: each write hands its
//! change to its transaction too, and every other node announces it once the commit's notice
//! arrives (see `kv_backend::cluster`).

use tokio::sync::broadcast;

use crate::DeviceId;

/// Changes kept for a slow subscriber before it is told it lagged.
const BACKLOG: usize = 1024;

/// What changed, as far as logins are concerned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LoginChange {
    /// A device's key, deactivation, organization or existence.
    Device(DeviceId),
    /// An organization's slug, activity or existence (with its slug before the change):
    /// its devices' logins, and operators who manage it.
    Organization {
        /// The slug its live sessions were accepted under.
        slug: String,
    },
    /// A user, their memberships, roles or tokens: operators' logins.
    Users,
    /// Devices were registered: no live session is concerned, but an external broker's
    /// credential files must list them.
    DevicesAdded,
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct LoginChanges(broadcast::Sender<LoginChange>);

impl Default for LoginChanges {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl LoginChanges {
    /// Announces a committed change (nobody listening is fine).
    pub fn announce(&self, change: LoginChange) {
        let _ = self.0.send(change);
    }

    /// Changes announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LoginChange> {
        self.0.subscribe()
    }
}
