//! The seam where a device's rendered configuration may have changed.
//!
//! Every write that can change what a device's configuration renders to (its templates, its
//! own config or context, its group or organization, a template it uses, its group's
//! templates or context) names the affected devices to one function inside its transaction,
//! `redb_backend::configuration_changed`. Today that function only collects them; after the
//! commit the backend announces them as one [`ConfigChange`] on [`ConfigChanges`]
//! ([`crate::Backend::config_changes`]). Re-rendering, checksums, the `modified` status and the
//! MQTT notice plug in there: in the transaction (render, compare checksums) or as a
//! subscriber (push). Affected devices are found through index tables (template → devices,
//! group → devices), never by scanning every device.
//!
//! Delivery is a bounded broadcast: a subscriber that falls behind is told it lagged and must
//! assume that every configuration changed.

use tokio::sync::broadcast;

use crate::DeviceId;

/// Announcements kept for a slow subscriber before it is told it lagged.
const BACKLOG: usize = 1024;

/// Devices whose rendered configuration may have changed in one committed write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// The devices, each once, in id order.
    pub devices: Vec<DeviceId>,
}

impl ConfigChange {
    /// Whether no device is affected.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct ConfigChanges(broadcast::Sender<ConfigChange>);

impl Default for ConfigChanges {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl ConfigChanges {
    /// Announces a committed change; an empty one is not sent.
    pub fn announce(&self, change: &ConfigChange) {
        if !change.is_empty() {
            let _ = self.0.send(change.clone());
        }
    }

    /// Changes announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigChange> {
        self.0.subscribe()
    }
}
