//! `up/telemetry`: a timestamped JSON object of metrics, and the limits the server puts on it.

use std::time::Duration;

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

/// What the server takes of a sample beyond its shape. Operators set the limits (server
/// flags); a sample that breaks one is refused and the device told why on `down/error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryLimits {
    /// How far ahead of the server's clock a sample's timestamp may be. A sample from the
    /// future would stay the device's latest forever and escape retention; a little skew is
    /// normal for devices synchronised by NTP.
    pub max_clock_skew: Duration,
    /// The largest sample payload, in bytes: bounds what one message costs to store and to
    /// serve back in a history page.
    pub max_sample_bytes: usize,
}

impl Default for TelemetryLimits {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(5 * 60),
            max_sample_bytes: 64 * 1024,
        }
    }
}

impl TelemetryLimits {
    /// Refuses a payload larger than `max_sample_bytes` (before it is parsed).
    pub fn check_size(&self, payload: &[u8]) -> Result<(), ProtocolError> {
        if payload.len() <= self.max_sample_bytes {
            return Ok(());
        }
        Err(ProtocolError::PayloadTooLarge {
            kind: "telemetry",
            size: payload.len(),
            max: self.max_sample_bytes,
        })
    }

    /// Refuses a timestamp more than `max_clock_skew` ahead of `now` (the server's clock,
    /// injected so the rule is a pure function).
    pub fn check_timestamp(
        &self,
        timestamp: &Timestamp,
        now: OffsetDateTime,
    ) -> Result<(), ProtocolError> {
        let skew = time::Duration::try_from(self.max_clock_skew).unwrap_or(time::Duration::MAX);
        // Past the end of time nothing is ahead of the limit.
        let Some(limit) = now.checked_add(skew) else {
            return Ok(());
        };
        if timestamp.to_datetime() <= limit {
            return Ok(());
        }
        Err(ProtocolError::TimestampAhead {
            timestamp: timestamp.as_str().to_owned(),
            now: Timestamp::from(now).as_str().to_owned(),
            max_skew_secs: self.max_clock_skew.as_secs(),
        })
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
    fn timestamps_ahead_of_the_clock_by_more_than_the_skew_are_refused() {
        let limits = TelemetryLimits {
            max_clock_skew: Duration::from_secs(300),
            ..TelemetryLimits::default()
        };
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let at = |offset: time::Duration| Timestamp::from(now + offset);
        assert!(
            limits
                .check_timestamp(&at(time::Duration::ZERO), now)
                .is_ok()
        );
        assert!(
            limits
                .check_timestamp(&at(-time::Duration::days(400)), now)
                .is_ok(),
            "the past is retention's business"
        );
        assert!(
            limits
                .check_timestamp(&at(time::Duration::seconds(300)), now)
                .is_ok()
        );
        let err = limits
            .check_timestamp(&at(time::Duration::seconds(301)), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 300 s ahead"), "{err}");
        let far = Timestamp::try_from("9999-12-31T23:59:59Z".to_owned()).unwrap();
        assert!(limits.check_timestamp(&far, now).is_err());
        let unlimited = TelemetryLimits {
            max_clock_skew: Duration::MAX,
            ..TelemetryLimits::default()
        };
        assert!(unlimited.check_timestamp(&far, now).is_ok());
    }

    #[test]
    fn samples_larger_than_the_limit_are_refused_with_both_sizes() {
        let limits = TelemetryLimits {
            max_sample_bytes: 10,
            ..TelemetryLimits::default()
        };
        assert!(limits.check_size(&[b' '; 10]).is_ok());
        let err = limits.check_size(&[b' '; 11]).unwrap_err().to_string();
        assert_eq!(
            err,
            "telemetry payload of 11 bytes is larger than the 10 bytes allowed"
        );
    }

    #[test]
    fn a_datetime_becomes_an_rfc3339_timestamp() {
        let ts = Timestamp::from(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(ts.as_str(), "1970-01-01T00:00:00Z");
    }
}
