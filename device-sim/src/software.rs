//! The device's application software (OTAO, [`fleetmq_protocol::software`]): which
//! applications it runs, whether it consents to offers, and how deliveries install.
//!
//! ```text
//! down/software/offer   ─▶ up/software/status accepted | rejected        (--software-consent)
//! down/software/deliver ─▶ up/software/status installing
//!                          … install time (a timer; the device keeps serving) …
//!                       ─▶ up/software/status installed + up/software (new inventory)
//!                       or up/software/status failed + reason           (--software-fail-fraction)
//! ```
//!
//! `SoftwareAgent` is the state and the rules, free of sockets and clocks: each call returns
//! the `Effect`s for the device task in [`device`](crate::device) to carry out (publish a
//! status or the inventory, start the install timer, count an outcome). Operations are
//! remembered by id, so a repeated offer or delivery (the server repeats the current step
//! after every reconnection) is answered with the operation's current status and never
//! installs twice; a delivery of the version already running is `installed` at once.
//! Whether an installation fails is decided by a hash of the device id and the operation id,
//! so a test or a benchmark run gives the same devices the same failures.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use fleetmq_protocol::software::{
    SoftwareDelivery, SoftwareInventory, SoftwareOffer, SoftwareOutcome, SoftwareStatus,
};
use uuid::Uuid;

use crate::update::splitmix64;

/// How many operations a device remembers for idempotent answers. A server repeats only an
/// operation's current step, so the last few are plenty; older ones are forgotten (an
/// installation still running is kept longest).
pub const REMEMBERED_OPERATIONS: usize = 64;

/// Why a delivery for an application the device does not run fails.
pub const NOT_INSTALLED: &str = "application not installed";
/// Why a delivery fails when the failure fraction picks it.
pub const SIMULATED_FAILURE: &str = "simulated installation failure";
/// Why an offer is declined under [`Consent::Reject`].
pub const DECLINED: &str = "declined by the device's software consent policy";

/// What a device answers to a `down/software/offer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consent {
    /// Every offer is `accepted`.
    #[default]
    Accept,
    /// Every offer is `rejected` (with [`DECLINED`] as the reason).
    Reject,
}

/// A device's application software: what it runs when it starts and how it treats offers and
/// deliveries ([`DeviceConfig::software`](crate::DeviceConfig::software)). A fleet gives every
/// device the same settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftwareConfig {
    /// Application name → the version the device runs at start; reported on `up/software`
    /// after every connection when not empty.
    pub applications: BTreeMap<String, String>,
    /// The answer to every offer.
    pub consent: Consent,
    /// Share (0–1) of installations that end `failed`, picked per device and operation by a
    /// hash, so reruns fail the same ones.
    pub fail_fraction: f64,
    /// Time between `installing` and `installed` (or `failed`).
    pub install_time: Duration,
}

impl Default for SoftwareConfig {
    /// No applications, consent to every offer, no failures, 200 ms per installation (the
    /// `fleetmq-sim` defaults).
    fn default() -> Self {
        SoftwareConfig {
            applications: BTreeMap::new(),
            consent: Consent::Accept,
            fail_fraction: 0.0,
            install_time: Duration::from_millis(200),
        }
    }
}

/// What the device task does after the agent handled something, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Publish this on `up/software/status`.
    Status(SoftwareStatus),
    /// Publish this on `up/software`.
    Inventory(SoftwareInventory),
    /// Call [`SoftwareAgent::finish`] with this operation after the install time.
    Schedule(Uuid),
    /// An offer was answered (for the device's events).
    OfferAnswered {
        /// The offer as received.
        offer: SoftwareOffer,
        /// The answer.
        status: SoftwareOutcome,
    },
    /// The device now runs `version` of `app` (count it, tell the tests).
    Installed {
        /// The application.
        app: String,
        /// Its new version.
        version: String,
    },
    /// An installation failed (count it, tell the tests).
    Failed {
        /// The application.
        app: String,
        /// The version that was not installed.
        version: String,
        /// Why.
        reason: String,
    },
}

/// Where one remembered operation stands.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// An offer answered `accepted` or `rejected`; a delivery may follow under the same id.
    Offered(SoftwareStatus),
    /// A delivery being installed (the timer runs).
    Installing {
        app: String,
        version: String,
        status: SoftwareStatus,
    },
    /// A delivery that ended `installed` or `failed`.
    Delivered(SoftwareStatus),
}

impl Step {
    fn status(&self) -> &SoftwareStatus {
        match self {
            Step::Offered(status) | Step::Delivered(status) => status,
            Step::Installing { status, .. } => status,
        }
    }
}

/// One device's applications and operations. Lives as long as the device task, across
/// reconnections and reboots.
#[derive(Debug)]
pub(crate) struct SoftwareAgent {
    applications: BTreeMap<String, String>,
    consent: Consent,
    fail_fraction: f64,
    /// Seed of the failure draw: a hash of the device id.
    seed: u64,
    /// Oldest first, at most [`REMEMBERED_OPERATIONS`].
    operations: VecDeque<(Uuid, Step)>,
}

impl SoftwareAgent {
    /// The software of device `device_id` as `config` starts it.
    pub(crate) fn new(device_id: &str, config: &SoftwareConfig) -> SoftwareAgent {
        SoftwareAgent {
            applications: config.applications.clone(),
            consent: config.consent,
            fail_fraction: if config.fail_fraction.is_finite() {
                config.fail_fraction.clamp(0.0, 1.0)
            } else {
                0.0
            },
            seed: fnv1a(device_id.as_bytes()),
            operations: VecDeque::new(),
        }
    }

    /// The inventory to report now.
    pub(crate) fn inventory(&self) -> SoftwareInventory {
        SoftwareInventory {
            applications: self.applications.clone(),
        }
    }

    /// What to publish after a (re)connection: the inventory, when the device runs anything.
    pub(crate) fn on_connect(&self) -> Vec<Effect> {
        if self.applications.is_empty() {
            Vec::new()
        } else {
            vec![Effect::Inventory(self.inventory())]
        }
    }

    /// Answers an offer: by the consent policy, or with the current status of an operation
    /// already known.
    pub(crate) fn on_offer(&mut self, offer: SoftwareOffer) -> Vec<Effect> {
        if let Some(step) = self.find(offer.id) {
            return vec![Effect::Status(step.status().clone())];
        }
        let status = match self.consent {
            Consent::Accept => status(offer.id, SoftwareOutcome::Accepted, ""),
            Consent::Reject => status(offer.id, SoftwareOutcome::Rejected, DECLINED),
        };
        self.remember(offer.id, Step::Offered(status.clone()));
        vec![
            Effect::Status(status.clone()),
            Effect::OfferAnswered {
                offer,
                status: status.status,
            },
        ]
    }

    /// Starts a delivery: `installing` and a timer, or an answer at once (a repeat, the
    /// version already running, an application the device does not run).
    pub(crate) fn on_delivery(&mut self, delivery: SoftwareDelivery) -> Vec<Effect> {
        if let Some(step) = self.find(delivery.id)
            && !matches!(step, Step::Offered(_))
        {
            return vec![Effect::Status(step.status().clone())];
        }
        let id = delivery.id;
        match self.applications.get(&delivery.app_name) {
            None => {
                let status = status(id, SoftwareOutcome::Failed, NOT_INSTALLED);
                self.remember(id, Step::Delivered(status.clone()));
                vec![
                    Effect::Status(status),
                    Effect::Failed {
                        app: delivery.app_name,
                        version: delivery.version,
                        reason: NOT_INSTALLED.to_owned(),
                    },
                ]
            }
            Some(running) if *running == delivery.version => {
                let status = status(id, SoftwareOutcome::Installed, "");
                self.remember(id, Step::Delivered(status.clone()));
                vec![Effect::Status(status)]
            }
            Some(_) => {
                let status = status(id, SoftwareOutcome::Installing, "");
                self.remember(
                    id,
                    Step::Installing {
                        app: delivery.app_name,
                        version: delivery.version,
                        status: status.clone(),
                    },
                );
                vec![Effect::Status(status), Effect::Schedule(id)]
            }
        }
    }

    /// Ends installation `id` once its install time has passed: `installed` (and the new
    /// inventory) or, when the failure draw picks it, `failed`. Nothing for an operation no
    /// longer installing.
    pub(crate) fn finish(&mut self, id: Uuid) -> Vec<Effect> {
        let Some(position) = self.operations.iter().position(|(op, _)| *op == id) else {
            return Vec::new();
        };
        let Step::Installing { app, version, .. } = &self.operations[position].1 else {
            return Vec::new();
        };
        let (app, version) = (app.clone(), version.clone());
        if self.fails(id) {
            let status = status(id, SoftwareOutcome::Failed, SIMULATED_FAILURE);
            self.operations[position].1 = Step::Delivered(status.clone());
            return vec![
                Effect::Status(status),
                Effect::Failed {
                    app,
                    version,
                    reason: SIMULATED_FAILURE.to_owned(),
                },
            ];
        }
        self.applications.insert(app.clone(), version.clone());
        let status = status(id, SoftwareOutcome::Installed, "");
        self.operations[position].1 = Step::Delivered(status.clone());
        vec![
            Effect::Status(status),
            Effect::Inventory(self.inventory()),
            Effect::Installed { app, version },
        ]
    }

    /// Whether installation `id` fails: a uniform draw in [0, 1) from the device and the
    /// operation, below the failure fraction.
    fn fails(&self, id: Uuid) -> bool {
        let (high, low) = id.as_u64_pair();
        let hash = splitmix64(splitmix64(self.seed ^ high) ^ low);
        let draw = (hash >> 11) as f64 / (1u64 << 53) as f64;
        draw < self.fail_fraction
    }

    fn find(&self, id: Uuid) -> Option<&Step> {
        self.operations
            .iter()
            .find(|(op, _)| *op == id)
            .map(|(_, step)| step)
    }

    /// Records `step` as operation `id`'s newest, forgetting the oldest operation (one not
    /// installing, if any) past the bound.
    fn remember(&mut self, id: Uuid, step: Step) {
        self.operations.retain(|(op, _)| *op != id);
        if self.operations.len() >= REMEMBERED_OPERATIONS {
            let oldest = self
                .operations
                .iter()
                .position(|(_, step)| !matches!(step, Step::Installing { .. }))
                .unwrap_or(0);
            self.operations.remove(oldest);
        }
        self.operations.push_back((id, step));
    }

    /// The versions the device runs now.
    #[cfg(test)]
    fn applications(&self) -> &BTreeMap<String, String> {
        &self.applications
    }
}

fn status(id: Uuid, outcome: SoftwareOutcome, reason: &str) -> SoftwareStatus {
    SoftwareStatus {
        id,
        status: outcome,
        reason: reason.to_owned(),
    }
}

/// FNV-1a, 64 bits: a stable hash of the device id (std's hasher may change between
/// releases, and failures must stay reproducible).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    fn agent(adjust: impl FnOnce(&mut SoftwareConfig)) -> SoftwareAgent {
        let mut config = SoftwareConfig::default();
        config
            .applications
            .insert("smart-kettle".into(), "1.0.2".into());
        adjust(&mut config);
        SoftwareAgent::new(DEVICE, &config)
    }

    fn offer(id: Uuid) -> SoftwareOffer {
        SoftwareOffer {
            id,
            app_name: "smart-kettle".into(),
            version: "1.0.3".into(),
            from: "1.0.2".into(),
            metadata: serde_json::Value::Null,
        }
    }

    fn delivery(id: Uuid, app: &str, version: &str) -> SoftwareDelivery {
        SoftwareDelivery {
            id,
            app_name: app.into(),
            version: version.into(),
            from: "1.0.2".into(),
            specification: serde_json::json!({"link": "ftp://software-repository"}),
        }
    }

    fn statuses(effects: &[Effect]) -> Vec<(SoftwareOutcome, &str)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Status(s) => Some((s.status, s.reason.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offers_follow_the_consent_policy_and_repeats_get_the_same_answer() {
        let id = Uuid::new_v4();
        let mut accepting = agent(|_| {});
        assert_eq!(
            statuses(&accepting.on_offer(offer(id))),
            [(SoftwareOutcome::Accepted, "")]
        );
        assert_eq!(
            accepting.on_offer(offer(id)),
            [Effect::Status(status(id, SoftwareOutcome::Accepted, ""))]
        );
        let mut rejecting = agent(|c| c.consent = Consent::Reject);
        assert_eq!(
            statuses(&rejecting.on_offer(offer(id))),
            [(SoftwareOutcome::Rejected, DECLINED)]
        );
    }

    #[test]
    fn a_delivery_installs_after_the_timer_then_repeats_answer_installed() {
        let mut agent = agent(|_| {});
        assert_eq!(
            agent.on_connect(),
            [Effect::Inventory(agent.inventory())],
            "the starting inventory is reported on connect"
        );
        let id = Uuid::new_v4();
        agent.on_offer(offer(id));
        let effects = agent.on_delivery(delivery(id, "smart-kettle", "1.0.3"));
        assert_eq!(statuses(&effects), [(SoftwareOutcome::Installing, "")]);
        assert_eq!(effects.last(), Some(&Effect::Schedule(id)));
        assert_eq!(
            statuses(&agent.on_delivery(delivery(id, "smart-kettle", "1.0.3"))),
            [(SoftwareOutcome::Installing, "")],
            "a repeat while installing starts nothing"
        );
        assert_eq!(agent.applications()["smart-kettle"], "1.0.2");

        let done = agent.finish(id);
        assert_eq!(statuses(&done), [(SoftwareOutcome::Installed, "")]);
        assert!(done.contains(&Effect::Installed {
            app: "smart-kettle".into(),
            version: "1.0.3".into()
        }));
        assert_eq!(agent.applications()["smart-kettle"], "1.0.3");
        assert!(agent.finish(id).is_empty(), "finished once");
        assert_eq!(
            agent.on_delivery(delivery(id, "smart-kettle", "1.0.3")),
            [Effect::Status(status(id, SoftwareOutcome::Installed, ""))]
        );
        // Another operation for the running version: installed at once, no timer.
        let again = Uuid::new_v4();
        assert_eq!(
            agent.on_delivery(delivery(again, "smart-kettle", "1.0.3")),
            [Effect::Status(status(
                again,
                SoftwareOutcome::Installed,
                ""
            ))]
        );
    }

    #[test]
    fn unknown_applications_and_drawn_failures_fail_with_a_reason() {
        let mut agent_ = agent(|_| {});
        let id = Uuid::new_v4();
        assert_eq!(
            statuses(&agent_.on_delivery(delivery(id, "toaster", "1.0.0"))),
            [(SoftwareOutcome::Failed, NOT_INSTALLED)]
        );
        let mut failing = agent(|c| c.fail_fraction = 1.0);
        failing.on_delivery(delivery(id, "smart-kettle", "1.0.3"));
        assert_eq!(
            statuses(&failing.finish(id)),
            [(SoftwareOutcome::Failed, SIMULATED_FAILURE)]
        );
        assert_eq!(failing.applications()["smart-kettle"], "1.0.2");
        assert_eq!(
            statuses(&failing.on_delivery(delivery(id, "smart-kettle", "1.0.3"))),
            [(SoftwareOutcome::Failed, SIMULATED_FAILURE)]
        );
    }

    #[test]
    fn the_failure_draw_is_reproducible_and_near_the_fraction() {
        let half = agent(|c| c.fail_fraction = 0.5);
        let ids: Vec<Uuid> = (0..2000u128).map(Uuid::from_u128).collect();
        let draws: Vec<bool> = ids.iter().map(|id| half.fails(*id)).collect();
        let again = agent(|c| c.fail_fraction = 0.5);
        assert_eq!(
            draws,
            ids.iter().map(|id| again.fails(*id)).collect::<Vec<_>>()
        );
        let failed = draws.iter().filter(|f| **f).count();
        assert!((900..1100).contains(&failed), "{failed} of 2000");
        let never = agent(|_| {});
        assert!(ids.iter().all(|id| !never.fails(*id)));
    }

    #[test]
    fn remembered_operations_are_bounded_and_keep_a_running_installation() {
        let mut agent = agent(|_| {});
        let installing = Uuid::new_v4();
        agent.on_delivery(delivery(installing, "smart-kettle", "2.0.0"));
        let first_offer = Uuid::new_v4();
        agent.on_offer(offer(first_offer));
        for _ in 0..REMEMBERED_OPERATIONS {
            agent.on_offer(offer(Uuid::new_v4()));
        }
        assert_eq!(agent.operations.len(), REMEMBERED_OPERATIONS);
        assert!(
            agent.find(first_offer).is_none(),
            "the oldest answer is forgotten"
        );
        assert_eq!(
            statuses(&agent.finish(installing)),
            [(SoftwareOutcome::Installed, "")]
        );
    }
}
