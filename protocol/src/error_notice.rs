//! `down/error`: the server tells a device why one of its payloads was refused.
//!
//! Without it a device publishing malformed telemetry would never learn; the broker has
//! already PUBACKed the message by the time the bridge parses it.

use serde::{Deserialize, Serialize};

use crate::{ProtocolError, from_json, to_json};

/// A refusal notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorNotice {
    /// Human-readable reason, typically a [`ProtocolError`]'s `Display`.
    pub reason: String,
    /// The topic the refused message was published on.
    pub topic: String,
}

impl ErrorNotice {
    /// A notice for a payload on `topic` refused because of `error`.
    pub fn new(topic: impl Into<String>, error: &ProtocolError) -> ErrorNotice {
        ErrorNotice {
            reason: error.to_string(),
            topic: topic.into(),
        }
    }

    /// Parses a payload received on `down/error`.
    pub fn parse(payload: &[u8]) -> Result<ErrorNotice, ProtocolError> {
        from_json("error notice", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Telemetry;

    #[test]
    fn notice_carries_the_parse_error_and_round_trips() {
        let topic = "fleetmq/v1/acme/d1/up/telemetry";
        let err = Telemetry::parse(b"{not json").unwrap_err();
        let notice = ErrorNotice::new(topic, &err);
        assert!(notice.reason.starts_with("invalid telemetry payload"));
        assert_eq!(ErrorNotice::parse(&notice.to_bytes()).unwrap(), notice);
    }
}
