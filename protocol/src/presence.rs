//! `up/presence`: retained `online`/`offline` status.
//!
//! A device publishes `{"status":"online",...}` (retained) right after CONNACK and registers
//! `{"status":"offline"}` (retained) as its last will, so the broker announces it offline when
//! the connection dies without a clean DISCONNECT.

use serde::{Deserialize, Serialize};

use crate::{ProtocolError, from_json, to_json};

/// Whether the device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Connected.
    Online,
    /// Disconnected (usually published by the broker from the last will).
    Offline,
}

/// The presence message; the optional fields let the server learn the device's hardware and
/// firmware without a separate registration call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// Online or offline.
    pub status: PresenceStatus,
    /// Hardware model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Operating system identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// System/board description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Installed firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
}

impl Presence {
    /// A bare status message, e.g. the `offline` last will.
    pub fn status(status: PresenceStatus) -> Presence {
        Presence {
            status,
            model: None,
            os: None,
            system: None,
            firmware_version: None,
        }
    }

    /// Parses a payload received on `up/presence`.
    pub fn parse(payload: &[u8]) -> Result<Presence, ProtocolError> {
        from_json("presence", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_presence_round_trips() {
        let p = Presence {
            status: PresenceStatus::Online,
            model: Some("TP-Link WDR4300".into()),
            os: Some("OpenWrt 23.05".into()),
            system: Some("Atheros AR9344".into()),
            firmware_version: Some("1.2.3".into()),
        };
        assert_eq!(Presence::parse(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn offline_will_is_just_the_status() {
        let will = Presence::status(PresenceStatus::Offline).to_bytes();
        assert_eq!(will, br#"{"status":"offline"}"#);
        assert_eq!(
            Presence::parse(&will).unwrap().status,
            PresenceStatus::Offline
        );
    }

    #[test]
    fn unknown_status_is_refused_with_a_reason() {
        let err = Presence::parse(br#"{"status":"asleep"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid presence payload"), "{err}");
        assert!(err.contains("asleep"), "{err}");
        assert!(Presence::parse(b"{}").is_err());
        assert!(Presence::parse(b"online").is_err());
    }
}
