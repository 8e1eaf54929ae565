//! Live events: what an operator watching the console sees change at once (a device going
//! online or offline, a command answered or timed out), announced after the commit that stored it — in this process, and on
//! every other node sharing the database, carried by the commit's notice (see
//! `kv_backend::cluster`). The API streams them to the console (`GET /api/v1/events/`); a
//! subscriber that falls behind the bounded backlog is told it lagged and reloads.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{CommandId, CommandStatus, DeviceId, OrgId, Timestamp};

/// Events kept for a slow subscriber before it is told it lagged.
const BACKLOG: usize = 4096;

/// One change, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A device's MQTT session opened (`online`) or ended.
    Presence {
        /// The device.
        device: DeviceId,
        /// Its organization: who may see the event.
        organization: OrgId,
        /// Connected now.
        online: bool,
        /// When it happened.
        at: Timestamp,
    },
    /// A command ended: answered by its device, or failed (timed out).
    Command {
        /// The command.
        command: CommandId,
        /// Its device.
        device: DeviceId,
        /// The device's organization: who may see the event.
        organization: OrgId,
        /// How it ended.
        status: CommandStatus,
        /// When.
        at: Timestamp,
    },
}

impl LiveEvent {
    /// The organization whose members may see it.
    pub fn organization(&self) -> OrgId {
        match self {
            LiveEvent::Presence { organization, .. } | LiveEvent::Command { organization, .. } => {
                *organization
            }
        }
    }
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct LiveEvents(broadcast::Sender<LiveEvent>);

impl Default for LiveEvents {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl LiveEvents {
    /// Announces a committed change (nobody listening is fine).
    pub fn announce(&self, event: LiveEvent) {
        let _ = self.0.send(event);
    }

    /// Events announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.0.subscribe()
    }
}
