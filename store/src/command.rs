//! Commands sent to devices and what they answered.
//!
//! What a command does is the wire contract's [`CommandType`] (re-exported): the REST API, the
//! store and the device agree on one list. [`CommandStatus`] is the store's: the device's
//! outcome ([`fleetmq_protocol::CommandStatus`]) plus the state before it answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use fleetmq_protocol::CommandType;

use crate::{CommandId, ConnectionId, DeviceId, Timestamp};

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandStatus {
    /// Sent or waiting for the device.
    InProgress,
    /// The device ran it successfully.
    Success,
    /// It failed, or timed out.
    Failed,
}

/// A device's answer ends its command with the same outcome.
impl From<fleetmq_protocol::CommandStatus> for CommandStatus {
    fn from(outcome: fleetmq_protocol::CommandStatus) -> Self {
        match outcome {
            fleetmq_protocol::CommandStatus::Success => CommandStatus::Success,
            fleetmq_protocol::CommandStatus::Failed => CommandStatus::Failed,
        }
    }
}

impl CommandStatus {
    /// The name clients see.
    pub fn name(self) -> &'static str {
        match self {
            CommandStatus::InProgress => "in-progress",
            CommandStatus::Success => "success",
            CommandStatus::Failed => "failed",
        }
    }
}

/// A stored command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Identity; also the correlation id on MQTT.
    pub id: CommandId,
    /// Target device.
    pub device: DeviceId,
    /// Connection it goes through.
    pub connection: Option<ConnectionId>,
    /// What it does.
    pub kind: CommandType,
    /// Parameters (`null` for reboot).
    pub input: Value,
    /// What the device answered.
    pub output: String,
    /// Where it stands.
    pub status: CommandStatus,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}
