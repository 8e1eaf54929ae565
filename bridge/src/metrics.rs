//! Counters of what the bridge did, exported on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cheap-to-clone counters.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Counters>);

#[derive(Default)]
struct Counters {
    uplink_messages: AtomicU64,
    uplink_refused: AtomicU64,
    telemetry_samples: AtomicU64,
    telemetry_batches: AtomicU64,
    commands_sent: AtomicU64,
    config_notices: AtomicU64,
    commands_answered: AtomicU64,
    commands_timed_out: AtomicU64,
    upgrades_succeeded: AtomicU64,
    upgrades_failed: AtomicU64,
    upgrades_aborted: AtomicU64,
    installations_succeeded: AtomicU64,
    installations_failed: AtomicU64,
    installations_aborted: AtomicU64,
    installations_declined: AtomicU64,
    inventories: AtomicU64,
}

impl Metrics {
    pub(crate) fn uplink(&self) {
        self.0.uplink_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.0.uplink_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn telemetry_committed(&self, samples: u64) {
        self.0
            .telemetry_samples
            .fetch_add(samples, Ordering::Relaxed);
        self.0.telemetry_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn command_sent(&self) {
        self.0.commands_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn config_notice(&self) {
        self.0.config_notices.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn command_answered(&self) {
        self.0.commands_answered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn command_timed_out(&self) {
        self.0.commands_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upgrade_finished(&self, status: fleetmq_store::UpgradeStatus) {
        use fleetmq_store::UpgradeStatus::*;
        let counter = match status {
            Success => &self.0.upgrades_succeeded,
            Failed => &self.0.upgrades_failed,
            Aborted => &self.0.upgrades_aborted,
            InProgress | Cancelled => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn inventories_stored(&self, n: u64) {
        self.0.inventories.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn installation_finished(&self, status: fleetmq_store::UpgradeStatus) {
        use fleetmq_store::UpgradeStatus::*;
        let counter = match status {
            Success => &self.0.installations_succeeded,
            Failed => &self.0.installations_failed,
            Aborted => &self.0.installations_aborted,
            Cancelled => &self.0.installations_declined,
            InProgress => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its Prometheus name and help text.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "fleetmq_upgrades_succeeded_total",
                "Upgrade operations the rollout engine saw succeed.",
                get(&c.upgrades_succeeded),
            ),
            (
                "fleetmq_upgrades_failed_total",
                "Upgrade operations that failed.",
                get(&c.upgrades_failed),
            ),
            (
                "fleetmq_upgrades_aborted_total",
                "Upgrade operations aborted by a batch's abort threshold.",
                get(&c.upgrades_aborted),
            ),
            (
                "fleetmq_software_inventories_total",
                "Software inventories (up/software) devices reported and the store kept.",
                get(&c.inventories),
            ),
            (
                "fleetmq_software_installations_succeeded_total",
                "Software installations (OTAO hops) the devices reported installed.",
                get(&c.installations_succeeded),
            ),
            (
                "fleetmq_software_installations_failed_total",
                "Software installations that failed.",
                get(&c.installations_failed),
            ),
            (
                "fleetmq_software_installations_aborted_total",
                "Software installations aborted by an abort threshold or a deactivation.",
                get(&c.installations_aborted),
            ),
            (
                "fleetmq_software_offers_declined_total",
                "Software offers devices declined.",
                get(&c.installations_declined),
            ),
            (
                "fleetmq_config_notices_total",
                "Config notices published to devices (down/config/notice).",
                get(&c.config_notices),
            ),
            (
                "fleetmq_uplink_messages_total",
                "Messages devices published under their up/ topics.",
                get(&c.uplink_messages),
            ),
            (
                "fleetmq_uplink_refused_total",
                "Device messages refused (unparsable payloads); each answered on the device's down/error.",
                get(&c.uplink_refused),
            ),
            (
                "fleetmq_telemetry_samples_total",
                "Telemetry samples committed.",
                get(&c.telemetry_samples),
            ),
            (
                "fleetmq_telemetry_batches_total",
                "Telemetry transactions committed.",
                get(&c.telemetry_batches),
            ),
            (
                "fleetmq_commands_sent_total",
                "Command requests published to devices (resends included).",
                get(&c.commands_sent),
            ),
            (
                "fleetmq_commands_answered_total",
                "Command results applied.",
                get(&c.commands_answered),
            ),
            (
                "fleetmq_commands_timed_out_total",
                "Commands failed for lack of an answer in time.",
                get(&c.commands_timed_out),
            ),
        ]
    }
}
