//! [`DeviceId`]: who a device is, on the wire and in the store.
//!
//! A device's id is its MQTT client id, its username, and the device level of its topics. On
//! the wire it is written one way only, the lowercase hyphenated UUID
//! (`67e55044-10b1-426f-9247-bb680e5fe0c8`): MQTT compares client ids and topic levels as
//! strings, so a second spelling of the same UUID would be a second device to the router and
//! to every subscriber. [`DeviceId::from_str`](std::str::FromStr) therefore accepts only that
//! form; JSON (serde) accepts what [`Uuid`] does, as the REST API always has.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProtocolError;

/// Identifies a device; also its MQTT client id and username, and its topics' device level.
/// Parsed once where text enters (CONNECT, a topic, a URL), trusted after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub Uuid);

/// Length of a device id's wire form.
const WIRE_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

impl DeviceId {
    /// A fresh random (v4) id, for a new device.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The 16 big-endian bytes; sorts like the id (the store's index key prefix).
    pub fn bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// The id as one integer (the store's primary key).
    pub fn key(&self) -> u128 {
        self.0.as_u128()
    }

    /// Whether `level` (a client id or a topic level) is this id's wire form. Compares
    /// without allocating: the broker asks on every PUBLISH and SUBSCRIBE.
    pub fn is(&self, level: &str) -> bool {
        let mut buffer = [0u8; WIRE_LEN];
        self.0.hyphenated().encode_lower(&mut buffer) == level
    }
}

impl Default for DeviceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for DeviceId {
    type Err = ProtocolError;

    /// Parses the wire form, and only it (see the module docs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Uuid::try_parse(s) {
            Ok(uuid) if DeviceId(uuid).is(s) => Ok(DeviceId(uuid)),
            _ => Err(ProtocolError::InvalidDeviceId(s.to_owned())),
        }
    }
}

impl From<Uuid> for DeviceId {
    fn from(uuid: Uuid) -> Self {
        DeviceId(uuid)
    }
}

impl From<DeviceId> for Uuid {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lowercase_hyphenated_form_is_a_device_id() {
        let id = DeviceId::new();
        let wire = id.to_string();
        assert_eq!(wire.parse::<DeviceId>().ok(), Some(id));
        assert!(id.is(&wire));
        for other in [
            wire.to_uppercase(),
            id.0.simple().to_string(),
            id.0.urn().to_string(),
            id.0.braced().to_string(),
            format!("{wire} "),
            String::new(),
            "dev-1".to_owned(),
        ] {
            assert!(other.parse::<DeviceId>().is_err(), "{other}");
            assert!(!id.is(&other), "{other}");
        }
    }

    #[test]
    fn json_keeps_the_uuid_form() {
        let id = DeviceId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
    }
}
