//! Typed UUIDv4 identifiers, so a device id is never passed where an organization id belongs.
//!
//! [`DeviceId`] is the wire contract's ([`fleetmq_protocol::DeviceId`]): a device's id is also
//! its MQTT client id and topic level, so there is one definition, parsed the same way.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use fleetmq_protocol::DeviceId;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The 16 big-endian bytes indexes use as key prefix.
            pub fn bytes(&self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            /// The u128 form primary tables are keyed by.
            pub fn key(&self) -> u128 {
                self.0.as_u128()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies an organization (tenant).
    OrgId
);
id_type!(
    /// Identifies a user.
    UserId
);
id_type!(
    /// Identifies a location.
    LocationId
);
id_type!(
    /// Identifies a floor plan.
    FloorPlanId
);
id_type!(
    /// Identifies a floor plan's image file (a new one per upload).
    PlanImageId
);
id_type!(
    /// Identifies a set of access credentials.
    CredentialsId
);
id_type!(
    /// Identifies a device's connection (a device using some credentials).
    ConnectionId
);
id_type!(
    /// Identifies a command sent to a device.
    CommandId
);
id_type!(
    /// Identifies a firmware category.
    CategoryId
);
id_type!(
    /// Identifies a firmware build.
    BuildId
);
id_type!(
    /// Identifies a firmware image (and its file).
    ImageId
);
id_type!(
    /// Identifies one device's upgrade operation.
    UpgradeId
);
id_type!(
    /// Identifies a batch (mass) upgrade.
    BatchId
);
id_type!(
    /// Identifies a configuration template.
    TemplateId
);
id_type!(
    /// Identifies a device group.
    GroupId
);
id_type!(
    /// Identifies one published version of an application's software (OTAO).
    SoftwareId
);
id_type!(
    /// Identifies an endpoint filter (OTAO): a named query over devices.
    FilterId
);
id_type!(
    /// Identifies one device's installation of one software version (one hop).
    InstallationId
);
id_type!(
    /// Identifies a VPN server.
    VpnId
);
