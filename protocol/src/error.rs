//! The single error type of the wire contract.

use crate::topic::Direction;

/// Why a topic or a payload does not follow the fleetmq wire contract. The `Display` text is
/// meant to be sent back to the device verbatim in a `down/error` notice.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The topic does not start with the `fleetmq` root level.
    #[error("topic `{0}` is not in the fleetmq/ tree")]
    NotFleetmqTopic(String),
    /// The topic is in the fleetmq tree but under a version this build does not speak.
    #[error("unsupported topic version `{0}`, expected `v1`")]
    UnsupportedVersion(String),
    /// Levels are missing, empty, or contain wildcards.
    #[error("malformed topic `{topic}`: {reason}")]
    MalformedTopic {
        /// The offending topic.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The direction level is neither `up` nor `down`.
    #[error("unknown direction `{0}`, expected `up` or `down`")]
    UnknownDirection(String),
    /// The channel is not one of the channels defined for that direction.
    #[error("unknown {direction} channel `{channel}`")]
    UnknownChannel {
        /// Direction of the topic.
        direction: Direction,
        /// The channel as received.
        channel: String,
    },
    /// The payload is not valid JSON for the channel's type, or a value is out of range.
    #[error("invalid {kind} payload: {source}")]
    InvalidPayload {
        /// Which payload type was expected.
        kind: &'static str,
        /// The serde error, including our own range checks and the position.
        #[source]
        source: serde_json::Error,
    },
    /// A `method`/`path` pair that is not an npm.system_update 2.0 call.
    #[error("unknown npm.system_update call `{method} {path}`")]
    UnknownCall {
        /// The verb.
        method: String,
        /// The resource path.
        path: String,
    },
    /// `images/upload` without base64 image bytes in `body.data`.
    #[error("invalid images/upload body: expected {{\"data\": <base64 image>}}")]
    InvalidUpload,
    /// MQTT 5 correlation data of an answer that names no request, or another request than
    /// its payload's `id`.
    #[error("correlation data {0}")]
    Correlation(&'static str),
    /// A client id, username or topic level that is not a device id's wire form.
    #[error("`{0}` is not a device id (a lowercase hyphenated UUID)")]
    InvalidDeviceId(String),
    /// A response status outside 100–599.
    #[error("invalid update response status {0}")]
    InvalidStatus(u16),
    /// A payload larger than the server takes on its channel.
    #[error("{kind} payload of {size} bytes is larger than the {max} bytes allowed")]
    PayloadTooLarge {
        /// Which payload type it was.
        kind: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The most allowed.
        max: usize,
    },
    /// A telemetry sample stamped further ahead of the server's clock than it allows: stored,
    /// it would stay the device's latest sample and outlive retention.
    #[error(
        "timestamp `{timestamp}` is more than {max_skew_secs} s ahead of the server's clock ({now})"
    )]
    TimestampAhead {
        /// The timestamp as sent.
        timestamp: String,
        /// The server's clock when it refused it.
        now: String,
        /// How far ahead a timestamp may be, in seconds.
        max_skew_secs: u64,
    },
}
