//! Commands sent to devices and what they answered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CommandId, ConnectionId, DeviceId, Timestamp};

/// What a command does on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandType {
    /// A shell command (`input.command`).
    Custom,
    /// Reboot the device.
    Reboot,
    /// Change the device's root password (`input.password`).
    ChangePassword,
}

impl CommandType {
    /// The name clients send.
    pub fn name(self) -> &'static str {
        match self {
            CommandType::Custom => "custom",
            CommandType::Reboot => "reboot",
            CommandType::ChangePassword => "change_password",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            CommandType::Custom,
            CommandType::Reboot,
            CommandType::ChangePassword,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

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
