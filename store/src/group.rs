//! Device groups: devices of one organization that share templates, configuration variables
//! and metadata. A device's group brings the group's templates into its configuration; when
//! the group's templates change, every device of the group swaps the old ones for the new.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{GroupId, OrgId, Timestamp};

/// What a client may set of a device group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFields {
    /// At most 60 characters, unique per organization.
    pub name: String,
    /// Owning organization (groups are never shared).
    pub organization: OrgId,
    /// Free text.
    pub description: String,
    /// Ordered templates its devices get; neither default nor required ones.
    pub templates: Vec<Uuid>,
    /// Configuration variables of its devices.
    pub context: Map<String, Value>,
    /// Anything integrations want to keep with the group; never rendered.
    pub meta_data: Map<String, Value>,
}

/// A stored device group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceGroup {
    /// Identity.
    pub id: GroupId,
    /// What clients set.
    pub fields: GroupFields,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub modified: Timestamp,
}

/// Which groups a list returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupFilter {
    /// OpenWISP's `empty` filter, named backwards as OpenWISP has it: `true` keeps the groups
    /// that have devices, `false` those that have none.
    pub empty: Option<bool>,
}
