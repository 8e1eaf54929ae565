//! `up/presence`: retained `online`/`offline` status.
//!
//! A device publishes `{"status":"online",...}` (retained) right after CONNACK and registers
//! `{"status":"offline"}` (retained) as its last will, so the broker announces it offline when
//! the connection dies without a clean DISCONNECT.
//!
//! The descriptive fields obey the same limits as the REST API's device fields (the API reads
//! the constants below): a presence that breaks one is refused as a whole, on `down/error`,
//! rather than stored truncated, because `model` decides which firmware a device may get.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{ProtocolError, from_json, to_json};

/// The most characters of a device's `model`, `os` and `system`, whoever reports them: the
/// device on `up/presence` or a REST client (the API's device body uses this constant).
pub const DEVICE_TEXT_MAX_CHARS: usize = 128;

/// The most characters of a reported `firmware_version`: a firmware build's version is at most
/// this long in the REST API, so a longer one cannot name any build.
pub const FIRMWARE_VERSION_MAX_CHARS: usize = 32;

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
    /// Hardware model, at most [`DEVICE_TEXT_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_model"
    )]
    pub model: Option<String>,
    /// Operating system identifier, at most [`DEVICE_TEXT_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_os"
    )]
    pub os: Option<String>,
    /// System/board description, at most [`DEVICE_TEXT_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_system"
    )]
    pub system: Option<String>,
    /// Installed firmware version, at most [`FIRMWARE_VERSION_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_firmware_version"
    )]
    pub firmware_version: Option<String>,
}

/// An optional text of at most `max` characters; the message, naming the field, is what the
/// device reads on `down/error` (serde adds the position).
fn bounded_text<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
    max: usize,
) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text {
        Some(t) if t.chars().count() > max => Err(serde::de::Error::custom(format!(
            "`{field}` has {} characters, at most {max} are allowed",
            t.chars().count()
        ))),
        text => Ok(text),
    }
}

fn bounded_model<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_text(d, "model", DEVICE_TEXT_MAX_CHARS)
}

fn bounded_os<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_text(d, "os", DEVICE_TEXT_MAX_CHARS)
}

fn bounded_system<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_text(d, "system", DEVICE_TEXT_MAX_CHARS)
}

fn bounded_firmware_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    bounded_text(d, "firmware_version", FIRMWARE_VERSION_MAX_CHARS)
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

    #[test]
    fn descriptive_fields_are_refused_past_the_rest_apis_limits() {
        let at_limit = Presence {
            model: Some("m".repeat(DEVICE_TEXT_MAX_CHARS)),
            os: Some("é".repeat(DEVICE_TEXT_MAX_CHARS)),
            firmware_version: Some("1".repeat(FIRMWARE_VERSION_MAX_CHARS)),
            ..Presence::status(PresenceStatus::Online)
        };
        assert_eq!(Presence::parse(&at_limit.to_bytes()).unwrap(), at_limit);
        for field in ["model", "os", "system"] {
            let long = format!(
                r#"{{"status":"online","{field}":"{}"}}"#,
                "x".repeat(DEVICE_TEXT_MAX_CHARS + 1)
            );
            let err = Presence::parse(long.as_bytes()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{field}` has 129 characters")),
                "{err}"
            );
            assert!(err.contains("at most 128"), "{field}: {err}");
        }
        let long = format!(
            r#"{{"status":"online","firmware_version":"{}"}}"#,
            "1".repeat(FIRMWARE_VERSION_MAX_CHARS + 1)
        );
        assert!(Presence::parse(long.as_bytes()).is_err());
    }
}
