//! What the decision source must decide again: a set of organizations and devices, filled by
//! the API's hook, the uplink, the session events and the rollout engine, drained by each
//! decision pass. A set, so it is bounded by the number of organizations and devices however
//! often they change.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fleetmq_store::{DeviceId, OrgId};
use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct Pending {
    /// Organizations to decide whole.
    pub(super) organizations: HashSet<OrgId>,
    /// Devices to decide.
    pub(super) devices: HashSet<DeviceId>,
}

/// What must be decided again; cheap to clone. Pending work is a set, so it is bounded by the
/// number of organizations and devices however often they change.
#[derive(Clone, Default)]
pub struct Triggers {
    pending: Arc<Mutex<Pending>>,
    pub(super) wake: Arc<Notify>,
}

impl Triggers {
    /// Decide every device of `org` again.
    pub fn organization(&self, org: OrgId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.organizations.insert(org);
        }
        self.wake.notify_one();
    }

    /// Decide `device` again.
    pub fn device(&self, device: DeviceId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.devices.insert(device);
        }
        self.wake.notify_one();
    }

    pub(super) fn take(&self) -> Pending {
        self.pending
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default()
    }
}
