//! `down/config/notice` and `up/config/status`: configuration pushed to a device.
//!
//! OpenWISP's agent polls the controller for its configuration checksum. fleetmq tells the
//! device instead, the moment its rendered configuration changes: a [`ConfigNotice`] names the
//! new archive's checksum and where to download it. The device downloads it, checks that the
//! bytes have that checksum, applies it and answers with a [`ConfigReport`] naming the same
//! checksum, so a report about an older configuration is recognised as such.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{ProtocolError, from_json, to_json};

/// The most characters of a device's `reason` for a failed apply (OpenWISP's
/// `error_reason` is a 1,024-character field).
pub const CONFIG_ERROR_REASON_MAX_CHARS: usize = 1024;

/// The device's configuration changed: fetch it from `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigNotice {
    /// MD5 of the configuration archive, 32 lowercase hex digits.
    #[serde(deserialize_with = "checksum")]
    pub checksum: String,
    /// Where the device downloads the archive (a tar.gz), with a credential of its own in it:
    /// no other header or token is needed.
    pub url: String,
}

impl ConfigNotice {
    /// Parses a payload received on `down/config/notice`.
    pub fn parse(payload: &[u8]) -> Result<ConfigNotice, ProtocolError> {
        from_json("config notice", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// What became of a configuration on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigOutcome {
    /// The device runs this configuration.
    Applied,
    /// The device could not apply it (`reason` says why).
    Error,
}

/// The device's answer on `up/config/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigReport {
    /// Applied or not.
    pub status: ConfigOutcome,
    /// The checksum of the configuration the report is about.
    #[serde(deserialize_with = "checksum")]
    pub checksum: String,
    /// Why it failed, at most [`CONFIG_ERROR_REASON_MAX_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "reason"
    )]
    pub reason: String,
}

impl ConfigReport {
    /// Parses a payload received on `up/config/status`.
    pub fn parse(payload: &[u8]) -> Result<ConfigReport, ProtocolError> {
        from_json("config status", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Whether `text` is an MD5 checksum as fleetmq writes them.
pub fn is_checksum(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn checksum<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if is_checksum(&text) {
        Ok(text)
    } else {
        Err(serde::de::Error::custom(
            "`checksum` must be 32 lowercase hex digits (an MD5)",
        ))
    }
}

fn reason<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let chars = text.chars().count();
    if chars > CONFIG_ERROR_REASON_MAX_CHARS {
        return Err(serde::de::Error::custom(format!(
            "`reason` has {chars} characters, at most {CONFIG_ERROR_REASON_MAX_CHARS} are allowed"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn notice_and_report_round_trip() {
        let notice = ConfigNotice {
            checksum: SUM.into(),
            url: "http://127.0.0.1:8000/controller/device/download-config/x/?key=k".into(),
        };
        assert_eq!(ConfigNotice::parse(&notice.to_bytes()).unwrap(), notice);
        let report = ConfigReport {
            status: ConfigOutcome::Error,
            checksum: SUM.into(),
            reason: "uci: Parse error".into(),
        };
        assert_eq!(ConfigReport::parse(&report.to_bytes()).unwrap(), report);
    }

    #[test]
    fn an_applied_report_needs_no_reason() {
        let report =
            ConfigReport::parse(format!(r#"{{"status":"applied","checksum":"{SUM}"}}"#).as_bytes())
                .unwrap();
        assert_eq!(report.status, ConfigOutcome::Applied);
        assert_eq!(report.reason, "");
    }

    #[test]
    fn a_report_without_a_valid_checksum_or_status_is_refused_saying_why() {
        let err = ConfigReport::parse(br#"{"status":"applied","checksum":"ABC"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 lowercase hex digits"), "{err}");
        let err =
            ConfigReport::parse(format!(r#"{{"status":"done","checksum":"{SUM}"}}"#).as_bytes())
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("invalid config status payload"), "{err}");
        assert!(ConfigReport::parse(b"applied").is_err());
    }

    #[test]
    fn an_overlong_reason_is_refused() {
        let reason = "x".repeat(CONFIG_ERROR_REASON_MAX_CHARS + 1);
        let payload = format!(r#"{{"status":"error","checksum":"{SUM}","reason":"{reason}"}}"#);
        let err = ConfigReport::parse(payload.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1024"), "{err}");
    }
}
