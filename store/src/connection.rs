//! How the server reaches devices: credentials, and the connection of a device through them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ConnectionId, CredentialsId, DeviceId, OrgId, Timestamp};

/// How a connector reaches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Connector {
    /// fleetmq's own: the device's MQTT session with this server (device key auth).
    #[serde(rename = "fleetmq.connection.connectors.mqtt.Mqtt")]
    Mqtt,
    /// OpenWISP's SSH connector; stored for compatibility, not used by fleetmq.
    #[serde(rename = "openwisp_controller.connection.connectors.ssh.Ssh")]
    Ssh,
}

impl Connector {
    /// The dotted name shown by the API.
    pub fn name(self) -> &'static str {
        match self {
            Connector::Mqtt => "fleetmq.connection.connectors.mqtt.Mqtt",
            Connector::Ssh => "openwisp_controller.connection.connectors.ssh.Ssh",
        }
    }

    /// Accepts the dotted names and the short forms `mqtt` and `ssh`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mqtt" | "fleetmq.connection.connectors.mqtt.Mqtt" => Some(Connector::Mqtt),
            "ssh" | "openwisp_controller.connection.connectors.ssh.Ssh" => Some(Connector::Ssh),
            _ => None,
        }
    }

    /// The update strategy a connection through this connector gets when none is given.
    pub fn default_update_strategy(self) -> &'static str {
        match self {
            Connector::Mqtt => "fleetmq.connection.update_strategies.mqtt",
            Connector::Ssh => "openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt",
        }
    }
}

/// The writable part of credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialsFields {
    /// Owning organization; `None` = shared by every organization.
    pub organization: Option<OrgId>,
    /// Display name.
    pub name: String,
    /// How they are used.
    pub connector: Connector,
    /// Add a connection with these credentials to every device of the organization.
    pub auto_add: bool,
    /// Connector parameters (SSH: username with password or key, port).
    pub params: Map<String, Value>,
}

/// Stored credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// Identity.
    pub id: CredentialsId,
    /// What users may change.
    pub fields: CredentialsFields,
    /// When they were created.
    pub created: Timestamp,
    /// When they last changed.
    pub modified: Timestamp,
}

/// The writable part of a device connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionFields {
    /// Credentials used.
    pub credentials: CredentialsId,
    /// How configuration updates are pushed.
    pub update_strategy: String,
    /// Disabled connections are not used.
    pub enabled: bool,
}

/// Whether a connection worked the last time it was tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConnectionHealth {
    /// `None` until first tried.
    pub is_working: Option<bool>,
    /// Why it failed last.
    pub failure_reason: String,
    /// When it was last tried (for MQTT: the device last connected or disconnected).
    pub last_attempt: Option<Timestamp>,
}

/// A device's connection through some credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConnection {
    /// Identity.
    pub id: ConnectionId,
    /// The device.
    pub device: DeviceId,
    /// What users may change.
    pub fields: ConnectionFields,
    /// Maintained by the server.
    pub health: ConnectionHealth,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}
