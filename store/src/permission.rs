//! OpenWISP's default permission groups, Operator and Administrator, as a pure function.

use serde::{Deserialize, Serialize};

/// A permission group a user can be put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Group {
    /// Runs the fleet: devices, configuration, locations, connections; sees firmware, VPNs, PKI.
    Operator,
    /// Everything an operator does plus VPNs, credentials, PKI and firmware management.
    Administrator,
}

impl Group {
    /// The group's name as OpenWISP spells it.
    pub fn name(self) -> &'static str {
        match self {
            Group::Operator => "Operator",
            Group::Administrator => "Administrator",
        }
    }

    /// Parses a group name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Operator" => Some(Group::Operator),
            "Administrator" => Some(Group::Administrator),
            _ => None,
        }
    }

    /// Whether the group grants `action` on `resource`.
    pub fn permits(self, resource: Resource, action: Action) -> bool {
        use Resource::*;
        match self {
            Group::Administrator => true,
            Group::Operator => match resource {
                Device | Config | Template | Location | FloorPlan | DeviceLocation
                | DeviceGroup | DeviceConnection => true,
                Command => matches!(action, Action::Add | Action::View),
                Vpn | Ca | Cert => action == Action::View,
                Build
                | FirmwareImage
                | DeviceFirmware
                | UpgradeOperation
                | BatchUpgradeOperation => action == Action::View,
                Credentials | Category => false,
            },
        }
    }
}

/// The kinds of object permissions are granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Devices.
    Device,
    /// Device configurations.
    Config,
    /// Configuration templates.
    Template,
    /// Locations.
    Location,
    /// Floor plans.
    FloorPlan,
    /// Device ↔ location links.
    DeviceLocation,
    /// Device groups.
    DeviceGroup,
    /// Device connections.
    DeviceConnection,
    /// Commands sent to devices.
    Command,
    /// Access credentials.
    Credentials,
    /// VPN servers.
    Vpn,
    /// Certificate authorities.
    Ca,
    /// Certificates.
    Cert,
    /// Firmware categories.
    Category,
    /// Firmware builds.
    Build,
    /// Firmware images.
    FirmwareImage,
    /// A device's installed firmware.
    DeviceFirmware,
    /// Upgrade operations.
    UpgradeOperation,
    /// Batch upgrade operations.
    BatchUpgradeOperation,
}

/// What a request wants to do, derived from its HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read.
    View,
    /// Create.
    Add,
    /// Modify.
    Change,
    /// Remove.
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_manage_devices_but_only_view_firmware_and_never_credentials() {
        let op = Group::Operator;
        assert!(op.permits(Resource::Device, Action::Delete));
        assert!(op.permits(Resource::Command, Action::Add));
        assert!(!op.permits(Resource::Command, Action::Delete));
        assert!(op.permits(Resource::Build, Action::View));
        assert!(!op.permits(Resource::Build, Action::Add));
        assert!(!op.permits(Resource::Credentials, Action::View));
        assert!(!op.permits(Resource::Category, Action::View));
        assert!(Group::Administrator.permits(Resource::Category, Action::Add));
    }
}
