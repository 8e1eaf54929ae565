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
        let action = action.model_permission();
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
                Software => action == Action::View,
                OAuthClient => false,
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
    /// Application software (OTAO): versions, applications' settings, endpoint filters and
    /// what endpoints run. Operators read; administrators also write.
    Software,
    /// OAuth 2.0 clients of the OTAO API: administrators only.
    OAuthClient,
}

/// What a request wants to do to an object: one of Django's model permissions, or a named
/// custom action guarded by one of them.
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
    /// Deactivate a device (its sessions end; it may then be deleted).
    Deactivate,
    /// Reactivate a deactivated device.
    Activate,
    /// Cancel an upgrade or a batch of them.
    Cancel,
}

impl Action {
    /// The model permission that grants this action: OpenWISP guards its custom actions
    /// (deactivate, activate, cancel) with the change permission.
    pub fn model_permission(self) -> Action {
        match self {
            Action::Deactivate | Action::Activate | Action::Cancel => Action::Change,
            other => other,
        }
    }
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

    #[test]
    fn operators_read_software_and_only_administrators_manage_oauth_clients() {
        assert!(Group::Operator.permits(Resource::Software, Action::View));
        assert!(!Group::Operator.permits(Resource::Software, Action::Change));
        assert!(Group::Administrator.permits(Resource::Software, Action::Change));
        assert!(!Group::Operator.permits(Resource::OAuthClient, Action::View));
        assert!(Group::Administrator.permits(Resource::OAuthClient, Action::Add));
    }

    #[test]
    fn custom_actions_need_the_change_permission() {
        assert!(Group::Operator.permits(Resource::Device, Action::Deactivate));
        assert!(!Group::Operator.permits(Resource::UpgradeOperation, Action::Cancel));
        assert!(Group::Administrator.permits(Resource::BatchUpgradeOperation, Action::Cancel));
    }
}
