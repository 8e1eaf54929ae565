//! Application software (OTAO): what a device runs, and the server's offers to change it.
//!
//! ```text
//! device ── up/software {"applications": {"smart-kettle": "1.0.2"}} ──────────────▶ server
//! server ── down/software/offer {id, appName, version, from, metadata} ───────────▶ device   (consent only)
//! device ── up/software/status {id, status: accepted | rejected} ─────────────────▶ server
//! server ── down/software/deliver {id, appName, version, from, specification} ───▶ device
//! device ── up/software/status {id, status: installing | installed | failed} ────▶ server
//! ```
//!
//! The device reports its [`SoftwareInventory`] when it connects and whenever it changes. The
//! server decides which version each application should move to and delivers one hop at a
//! time: a [`SoftwareDelivery`] carries the software's specification exactly as the operator
//! published it. When the application asks for consent, a [`SoftwareOffer`] comes first and
//! nothing is delivered until the device accepts it. Every [`SoftwareStatus`] names the
//! operation's `id`, so an answer to an older offer is recognised as such; devices answer a
//! repeated offer or delivery of the same `id` idempotently (the server repeats the current
//! step when a device reconnects).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::{ProtocolError, from_json, to_json};

/// The most applications one device may report.
pub const APPLICATIONS_MAX: usize = 64;
/// The most characters of an application name.
pub const APP_NAME_MAX_CHARS: usize = 128;
/// The most characters of a software version.
pub const SOFTWARE_VERSION_MAX_CHARS: usize = 64;
/// The most characters of a device's reason for a failure or a refusal.
pub const SOFTWARE_REASON_MAX_CHARS: usize = 1024;

/// `up/software`: every application the device runs, by name, with its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareInventory {
    /// Application name → the version it runs.
    #[serde(deserialize_with = "applications")]
    pub applications: BTreeMap<String, String>,
}

impl SoftwareInventory {
    /// Parses a payload received on `up/software`.
    pub fn parse(payload: &[u8]) -> Result<SoftwareInventory, ProtocolError> {
        from_json("software inventory", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// `down/software/offer`: may the device move `appName` from `from` to `version`? Sent only
/// for applications that ask for consent; answered `accepted` or `rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoftwareOffer {
    /// The operation; every answer names it.
    pub id: Uuid,
    /// The application.
    pub app_name: String,
    /// The version offered.
    pub version: String,
    /// The version the device runs now.
    pub from: String,
    /// The software's metadata as the operator published it (release notes, say).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl SoftwareOffer {
    /// Parses a payload received on `down/software/offer`.
    pub fn parse(payload: &[u8]) -> Result<SoftwareOffer, ProtocolError> {
        from_json("software offer", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// `down/software/deliver`: install `version` of `appName` (running `from`) as `specification`
/// says; answered `installing`, then `installed` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoftwareDelivery {
    /// The operation; every answer names it.
    pub id: Uuid,
    /// The application.
    pub app_name: String,
    /// The version to install.
    pub version: String,
    /// The version the device runs now.
    pub from: String,
    /// The software's specification, exactly as the operator published it.
    #[serde(default)]
    pub specification: serde_json::Value,
}

impl SoftwareDelivery {
    /// Parses a payload received on `down/software/deliver`.
    pub fn parse(payload: &[u8]) -> Result<SoftwareDelivery, ProtocolError> {
        from_json("software delivery", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Where the device stands with an offer or a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoftwareOutcome {
    /// The device consents to the offer: deliver it.
    Accepted,
    /// The device declines the offer.
    Rejected,
    /// The device is installing the delivery.
    Installing,
    /// The device runs the delivered version.
    Installed,
    /// The device could not install it (`reason` says why).
    Failed,
}

/// `up/software/status`: the device's answer about operation `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareStatus {
    /// The operation the answer is about.
    pub id: Uuid,
    /// What the device did.
    pub status: SoftwareOutcome,
    /// Why it failed or declined, at most [`SOFTWARE_REASON_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "reason"
    )]
    pub reason: String,
}

impl SoftwareStatus {
    /// Parses a payload received on `up/software/status`.
    pub fn parse(payload: &[u8]) -> Result<SoftwareStatus, ProtocolError> {
        from_json("software status", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

fn applications<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let apps = BTreeMap::<String, String>::deserialize(d)?;
    if apps.len() > APPLICATIONS_MAX {
        return Err(serde::de::Error::custom(format!(
            "{} applications reported, at most {APPLICATIONS_MAX} are allowed",
            apps.len()
        )));
    }
    for (name, version) in &apps {
        let name_chars = name.chars().count();
        if name_chars == 0 || name_chars > APP_NAME_MAX_CHARS {
            return Err(serde::de::Error::custom(format!(
                "application names have 1 to {APP_NAME_MAX_CHARS} characters, `{}` has {name_chars}",
                name.chars().take(APP_NAME_MAX_CHARS).collect::<String>()
            )));
        }
        let version_chars = version.chars().count();
        if version_chars == 0 || version_chars > SOFTWARE_VERSION_MAX_CHARS {
            return Err(serde::de::Error::custom(format!(
                "versions have 1 to {SOFTWARE_VERSION_MAX_CHARS} characters, the version of `{name}` has {version_chars}"
            )));
        }
    }
    Ok(apps)
}

fn reason<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let reason = String::deserialize(d)?;
    let chars = reason.chars().count();
    if chars > SOFTWARE_REASON_MAX_CHARS {
        return Err(serde::de::Error::custom(format!(
            "`reason` has {chars} characters, at most {SOFTWARE_REASON_MAX_CHARS} are allowed"
        )));
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inventory_names_each_application_once_with_bounded_texts() {
        let inventory =
            SoftwareInventory::parse(br#"{"applications":{"smart-kettle":"1.0.2","ui":"2.0.0"}}"#)
                .unwrap();
        assert_eq!(inventory.applications["smart-kettle"], "1.0.2");
        assert_eq!(
            SoftwareInventory::parse(&inventory.to_bytes()).ok(),
            Some(inventory)
        );

        let too_many: BTreeMap<String, String> = (0..=APPLICATIONS_MAX)
            .map(|i| (format!("app-{i}"), "1.0.0".to_owned()))
            .collect();
        let payload = serde_json::to_vec(&serde_json::json!({ "applications": too_many })).unwrap();
        let err = SoftwareInventory::parse(&payload).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");

        for bad in [
            r#"{"applications":{"":"1.0.0"}}"#,
            r#"{"applications":{"app":""}}"#,
            r#"{"applications":{"app":1}}"#,
            r#"{"applications":["app"]}"#,
            r#"{"apps":{}}"#,
        ] {
            let err = SoftwareInventory::parse(bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid software inventory payload"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn offers_and_deliveries_use_the_otao_field_names() {
        let id = Uuid::new_v4();
        let delivery = SoftwareDelivery {
            id,
            app_name: "smart-kettle".into(),
            version: "1.0.3".into(),
            from: "1.0.2".into(),
            specification: serde_json::json!({"link": "ftp://software-repository"}),
        };
        let json: serde_json::Value = serde_json::from_slice(&delivery.to_bytes()).unwrap();
        assert_eq!(json["appName"], "smart-kettle");
        assert_eq!(json["specification"]["link"], "ftp://software-repository");
        assert_eq!(
            SoftwareDelivery::parse(&delivery.to_bytes()).ok(),
            Some(delivery)
        );

        let offer = SoftwareOffer {
            id,
            app_name: "smart-kettle".into(),
            version: "1.0.3".into(),
            from: "1.0.2".into(),
            metadata: serde_json::json!("Ubuntu 17.10"),
        };
        assert_eq!(SoftwareOffer::parse(&offer.to_bytes()).ok(), Some(offer));
    }

    #[test]
    fn a_status_names_its_operation_and_bounds_its_reason() {
        let id = Uuid::new_v4();
        let status = SoftwareStatus::parse(
            format!(r#"{{"id":"{id}","status":"failed","reason":"disk full"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(status.status, SoftwareOutcome::Failed);
        assert_eq!(status.reason, "disk full");
        let long = "x".repeat(SOFTWARE_REASON_MAX_CHARS + 1);
        let err = SoftwareStatus::parse(
            format!(r#"{{"id":"{id}","status":"failed","reason":"{long}"}}"#).as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at most 1024"), "{err}");
        assert!(SoftwareStatus::parse(br#"{"id":"nope","status":"installed"}"#).is_err());
        assert!(
            SoftwareStatus::parse(format!(r#"{{"id":"{id}","status":"downloaded"}}"#).as_bytes())
                .is_err()
        );
    }
}
