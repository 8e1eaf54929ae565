//! Live events: what an operator watching the console sees change at once (a device going
//! online or offline, a command answered or timed out, a batch upgrade's progress), announced
//! after the commit that stored it — in this process, and on
//! every other node sharing the database, carried by the commit's notice (see
//! `kv_backend::cluster`). The API streams them to the console (`GET /api/v1/events/`); a
//! subscriber that falls behind the bounded backlog is told it lagged and reloads.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::upgrade::{BatchStatus, StatusCounts};
use crate::{BatchId, CommandId, CommandStatus, DeviceId, OrgId, Timestamp};

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
    /// A batch upgrade's operations changed status (one started, succeeded, failed, was
    /// aborted or cancelled, or went with its device): one event per batch per commit, with
    /// the counts as committed.
    Batch {
        /// The batch.
        batch: BatchId,
        /// Its organization: who may see the event. `None` for a shared build's batch, which
        /// may span organizations: superusers only (as the batch itself).
        organization: Option<OrgId>,
        /// Its status, from the counts.
        status: BatchStatus,
        /// Its operations per status.
        counts: StatusCounts,
        /// Its operations.
        total: u32,
        /// When (the batch's last change).
        at: Timestamp,
    },
}

impl LiveEvent {
    /// The organization whose members may see it; `None` when only those who see every
    /// organization may (see [`LiveEvent::Batch`]).
    pub fn organization(&self) -> Option<OrgId> {
        match self {
            LiveEvent::Presence { organization, .. } | LiveEvent::Command { organization, .. } => {
                Some(*organization)
            }
            LiveEvent::Batch { organization, .. } => *organization,
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
