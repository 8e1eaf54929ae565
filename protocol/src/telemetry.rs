//! `up/telemetry`: a timestamped JSON object of metrics.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{ProtocolError, from_json, to_json};

/// An RFC 3339 timestamp, kept as the device sent it (so it round-trips byte for byte) but
/// guaranteed to parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(String);

impl Timestamp {
    /// The instant, for ordering and storage.
    pub fn to_datetime(&self) -> OffsetDateTime {
        // Checked in `TryFrom`, so this cannot fail; fall back to the epoch rather than panic.
        OffsetDateTime::parse(&self.0, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The timestamp as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Timestamp {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match OffsetDateTime::parse(&value, &Rfc3339) {
            Ok(_) => Ok(Timestamp(value)),
            Err(e) => Err(format!("timestamp `{value}` is not RFC 3339: {e}")),
        }
    }
}

impl From<Timestamp> for String {
    fn from(value: Timestamp) -> Self {
        value.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(value: OffsetDateTime) -> Self {
        Timestamp(value.format(&Rfc3339).unwrap_or_default())
    }
}

/// One telemetry sample. `metrics` is free-form so devices can add metrics without a server
/// release, but it must be a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// When the sample was taken, on the device's clock.
    pub timestamp: Timestamp,
    /// Metric name to value.
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

impl Telemetry {
    /// Parses a payload received on `up/telemetry`.
    pub fn parse(payload: &[u8]) -> Result<Telemetry, ProtocolError> {
        from_json("telemetry", payload)
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
    fn telemetry_round_trips_and_keeps_the_timestamp_text() {
        let raw =
            br#"{"timestamp":"2026-11-22T03:04:05.123+01:00","metrics":{"cpu":0.5,"uptime":12}}"#;
        let t = Telemetry::parse(raw).unwrap();
        assert_eq!(t.timestamp.as_str(), "2026-11-22T03:04:05.123+01:00");
        assert_eq!(t.timestamp.to_datetime().hour(), 3);
        assert_eq!(t.metrics["uptime"], 12);
        assert_eq!(Telemetry::parse(&t.to_bytes()).unwrap(), t);
    }

    #[test]
    fn bad_timestamps_and_non_object_metrics_are_refused() {
        let err = Telemetry::parse(br#"{"timestamp":"yesterday","metrics":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not RFC 3339"), "{err}");
        assert!(
            Telemetry::parse(br#"{"timestamp":"2026-11-22T03:04:05Z","metrics":[1]}"#).is_err()
        );
        assert!(Telemetry::parse(br#"{"metrics":{}}"#).is_err());
    }

    #[test]
    fn a_datetime_becomes_an_rfc3339_timestamp() {
        let ts = Timestamp::from(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(ts.as_str(), "1970-01-01T00:00:00Z");
    }
}
