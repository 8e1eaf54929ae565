//! The MQTT wire contract of fleetmq, shared by the broker, the bridge and the device simulator.
//!
//! Everything a device and the server must agree on lives here and nowhere else: the versioned
//! topic tree (`fleetmq/v1/{org_slug}/{device_id}/{up|down}/{channel}`), the JSON payloads of
//! each channel, and the access rules the broker enforces on every PUBLISH and SUBSCRIBE. The
//! crate is deliberately small and synchronous (no tokio, no storage) so that a device build
//! only pulls serde.
//!
//! # Layout
//! - [`id`]: [`DeviceId`], a device's identity on the wire and in the store.
//! - [`topic`]: the topic tree, [`Topic`] parsing/building and the subscription filter helpers.
//! - [`acl`]: [`Principal`] and the pure publish/subscribe authorization rules.
//! - [`presence`]: retained `up/presence` online/offline message (the device's last will).
//! - [`telemetry`]: `up/telemetry` metrics with an RFC 3339 timestamp.
//! - [`coordinates`]: `up/coordinates` GeoJSON point feature.
//! - [`command`]: `down/command/request` and `up/command/result`.
//! - [`config`]: `down/config/notice` and `up/config/status`, configuration pushed to a device.
//! - [`system_update`]: npm.system_update 2.0 as `down/update/request`, `up/update/response`,
//!   and the `up/update` and `up/images` state notifications.
//! - [`software`]: application software (OTAO): `up/software` inventories, `down/software/offer`
//!   and `down/software/deliver`, answered on `up/software/status`.
//! - [`error_notice`]: `down/error`, why the server refused a device payload.
//! - [`uplink`]: [`Uplink::parse`], the payload type chosen by the up channel (for the bridge).
//! - [`error`]: [`ProtocolError`], the one error type of this crate.

pub mod acl;
pub mod command;
pub mod config;
pub mod coordinates;
pub mod error;
pub mod error_notice;
pub mod id;
pub mod presence;
pub mod software;
pub mod system_update;
pub mod telemetry;
pub mod topic;
pub mod uplink;

pub use acl::{OrgScope, Principal};
pub use command::{CommandRequest, CommandResult, CommandStatus, CommandType};
pub use config::{ConfigNotice, ConfigOutcome, ConfigReport};
pub use coordinates::{Coordinates, OutOfRange};
pub use error::ProtocolError;
pub use error_notice::ErrorNotice;
pub use id::DeviceId;
pub use presence::{DEVICE_TEXT_MAX_CHARS, FIRMWARE_VERSION_MAX_CHARS, Presence, PresenceStatus};
pub use software::{
    SoftwareDelivery, SoftwareInventory, SoftwareOffer, SoftwareOutcome, SoftwareStatus,
};
pub use system_update::{
    Call, HistoryEntry, ImageResource, ImageState, ImagesResource, UpdateRequest, UpdateResource,
    UpdateResponse, UpdateState,
};
pub use telemetry::{Telemetry, TelemetryLimits, Timestamp};
pub use topic::{Channel, Direction, DownChannel, Topic, UpChannel};
pub use uplink::Uplink;

/// Deserializes a JSON payload, naming the payload kind in the error so that a device reading
/// `down/error` learns which message was refused and why.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    payload: &[u8],
) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|source| ProtocolError::InvalidPayload { kind, source })
}

/// Serializes a payload type. Our payload types contain only strings, numbers and JSON values
/// with string keys, for which serde_json cannot fail.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
