//! One software installation's walk (OTAO), as pure functions next to [`super::machine`]'s
//! firmware steps: each takes the installation and what happened, changes it, and returns the
//! messages to send the device. The engine persists the change before it sends them.
//!
//! ```text
//!                    consent ─▶ Offered ──accepted──┐        rejected: cancelled
//! Queued ──dispatch──┤                              ▼
//!                    └───────────────────────▶ Delivering ──installing──▶ Installing ──installed──▶ success
//!    ▲                                              │ no answer in time (online): retry with backoff
//!    └──────────────────────────────────────────────┘ offline: wait, resend on reconnect
//! ```
//! `failed` from the device fails the installation; the hop is not offered again until the
//! software changes. The device's current version changes only on `installed` (the store does
//! that in the same transaction).

use fleetmq_protocol::{
    DownChannel, SoftwareDelivery, SoftwareOffer, SoftwareOutcome, SoftwareStatus, Topic,
};
use fleetmq_store::{InstallStep, Installation, Timestamp, UpgradeStatus};

use super::machine::{UpgradePolicy, after};

/// A message for the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Ask for consent.
    Offer(SoftwareOffer),
    /// Install.
    Deliver(SoftwareDelivery),
}

impl Message {
    /// Where it goes and its payload.
    pub fn publication(&self, org_slug: &str, device: &str) -> (String, Vec<u8>) {
        match self {
            Message::Offer(offer) => (
                Topic::down(org_slug, device, DownChannel::SoftwareOffer).to_string(),
                offer.to_bytes(),
            ),
            Message::Deliver(delivery) => (
                Topic::down(org_slug, device, DownChannel::SoftwareDeliver).to_string(),
                delivery.to_bytes(),
            ),
        }
    }
}

fn offer(inst: &Installation) -> Message {
    Message::Offer(SoftwareOffer {
        id: inst.id.0,
        app_name: inst.app_name.clone(),
        version: inst.version.to_string(),
        from: inst.from.clone(),
        metadata: inst.metadata.clone(),
    })
}

fn delivery(inst: &Installation) -> Message {
    Message::Deliver(SoftwareDelivery {
        id: inst.id.0,
        app_name: inst.app_name.clone(),
        version: inst.version.to_string(),
        from: inst.from.clone(),
        specification: inst.specification.clone(),
    })
}

fn deliver(inst: &mut Installation, policy: &UpgradePolicy, now: Timestamp) -> Vec<Message> {
    inst.step = InstallStep::Delivering;
    inst.not_before = None;
    inst.deadline = Some(after(now, policy.fetch_timeout));
    inst.note(format!("Delivered {} to the device", inst.version), now);
    vec![delivery(inst)]
}

/// Starts a queued installation: an offer when the application asks for consent, else the
/// delivery.
pub fn dispatch(inst: &mut Installation, policy: &UpgradePolicy, now: Timestamp) -> Vec<Message> {
    if inst.consent {
        inst.step = InstallStep::Offered;
        inst.not_before = None;
        // Consent is a person's decision: no deadline.
        inst.deadline = None;
        inst.note(
            format!("Offered {} for the device's consent", inst.version),
            now,
        );
        vec![offer(inst)]
    } else {
        deliver(inst, policy, now)
    }
}

/// The message of the current step again (the device reconnected, the server restarted):
/// devices answer repeats of the same id idempotently.
pub fn resend(inst: &Installation) -> Vec<Message> {
    match inst.step {
        InstallStep::Offered => vec![offer(inst)],
        InstallStep::Delivering | InstallStep::Installing => vec![delivery(inst)],
        InstallStep::Queued | InstallStep::Done => Vec::new(),
    }
}

/// The device answered about this installation.
pub fn on_status(
    inst: &mut Installation,
    status: &SoftwareStatus,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Message> {
    let reason = if status.reason.is_empty() {
        "no reason given".to_owned()
    } else {
        status.reason.clone()
    };
    match (inst.step, status.status) {
        (InstallStep::Done | InstallStep::Queued, _) => Vec::new(),
        (InstallStep::Offered, SoftwareOutcome::Accepted) => {
            inst.note("The device accepted the offer", now);
            deliver(inst, policy, now)
        }
        (InstallStep::Offered, SoftwareOutcome::Rejected) => {
            inst.finish(
                UpgradeStatus::Cancelled,
                format!("The device declined the offer: {reason}"),
                now,
            );
            Vec::new()
        }
        (_, SoftwareOutcome::Accepted | SoftwareOutcome::Rejected) => Vec::new(),
        (InstallStep::Offered, _) => Vec::new(),
        (InstallStep::Delivering, SoftwareOutcome::Installing) => {
            inst.step = InstallStep::Installing;
            inst.deadline = Some(after(now, policy.flash_timeout));
            inst.note("The device is installing it", now);
            Vec::new()
        }
        (InstallStep::Installing, SoftwareOutcome::Installing) => Vec::new(),
        (_, SoftwareOutcome::Installed) => {
            inst.finish(
                UpgradeStatus::Success,
                format!("The device runs {} {}", inst.app_name, inst.version),
                now,
            );
            Vec::new()
        }
        (_, SoftwareOutcome::Failed) => {
            inst.finish(
                UpgradeStatus::Failed,
                format!("The device could not install it: {reason}"),
                now,
            );
            Vec::new()
        }
    }
}

/// The rollout was aborted (its software's abort threshold tripped).
pub fn abort(inst: &mut Installation, note: &str, now: Timestamp) {
    inst.finish(UpgradeStatus::Aborted, note, now);
}

/// The current step's deadline passed. An offline device is waited for without spending a
/// retry; an online one that did not answer is retried with backoff, and an installation that
/// began but never finished fails.
pub fn on_deadline(inst: &mut Installation, online: bool, policy: &UpgradePolicy, now: Timestamp) {
    match inst.step {
        InstallStep::Installing => inst.finish(
            UpgradeStatus::Failed,
            format!(
                "The device did not report {} installed within {} s",
                inst.version,
                policy.flash_timeout.as_secs()
            ),
            now,
        ),
        InstallStep::Delivering if !online => {
            inst.step = InstallStep::Queued;
            inst.deadline = None;
            inst.note(
                "The device is offline; the installation continues when it reconnects",
                now,
            );
        }
        InstallStep::Delivering => {
            if inst.attempt >= policy.max_retries {
                inst.finish(
                    UpgradeStatus::Failed,
                    format!(
                        "No answer from the device to the delivery; giving up after {} attempts",
                        inst.attempt + 1
                    ),
                    now,
                );
                return;
            }
            inst.attempt += 1;
            let factor = 2u32.saturating_pow(inst.attempt - 1);
            let wait = policy
                .backoff
                .saturating_mul(factor)
                .min(policy.max_backoff);
            inst.step = InstallStep::Queued;
            inst.deadline = None;
            inst.not_before = Some(after(now, wait));
            inst.note(
                format!(
                    "No answer from the device to the delivery; retry {} of {} in {} s",
                    inst.attempt,
                    policy.max_retries,
                    wait.as_secs_f64()
                ),
                now,
            );
        }
        InstallStep::Queued | InstallStep::Offered | InstallStep::Done => {
            inst.deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::DeviceId;
    use fleetmq_store::{
        Device, DeviceFields, DeviceKey, DeviceName, MacAddress, OrgId, Rollout, RolloutStrategy,
        Software, SoftwareFields, SoftwareId, StatusCounts,
    };

    fn installation(consent: bool) -> Installation {
        let device = Device {
            id: DeviceId::new(),
            fields: DeviceFields {
                name: DeviceName::parse("d1").unwrap(),
                organization: OrgId::new(),
                group: None,
                mac_address: MacAddress::parse("00:11:22:33:44:55").unwrap(),
                key: DeviceKey::generate(),
                last_ip: None,
                management_ip: None,
                model: String::new(),
                os: String::new(),
                system: String::new(),
                notes: String::new(),
                hardware_id: String::new(),
            },
            config: None,
            is_deactivated: false,
            created: Timestamp::now(),
            modified: Timestamp::now(),
        };
        let software = Software {
            id: SoftwareId::new(),
            organization: device.fields.organization,
            app_name: "kettle".into(),
            version: fleetmq_store::SemVer::new(1, 1, 0),
            fields: SoftwareFields {
                specification: serde_json::json!({"link": "ftp://repo/1.1.0"}),
                metadata: serde_json::json!("notes"),
                upgradable_from: vec![fleetmq_store::SemVer::new(1, 0, 0)],
                rollout_strategy: RolloutStrategy::General,
                filters: Vec::new(),
                rollout: Rollout::default(),
            },
            counts: StatusCounts::default(),
            note: String::new(),
            created: Timestamp::now(),
            modified: Timestamp::now(),
        };
        Installation::new(&device, &software, "1.0.0", consent, Timestamp::now())
    }

    fn status(id: fleetmq_store::InstallationId, outcome: SoftwareOutcome) -> SoftwareStatus {
        SoftwareStatus {
            id: id.0,
            status: outcome,
            reason: "disk full".into(),
        }
    }

    fn answer(inst: &mut Installation, outcome: SoftwareOutcome) -> Vec<Message> {
        let status = status(inst.id, outcome);
        on_status(inst, &status, &UpgradePolicy::default(), Timestamp::now())
    }

    #[test]
    fn without_consent_the_specification_is_delivered_and_installed_reports_success() {
        let (p, now) = (UpgradePolicy::default(), Timestamp::now());
        let mut inst = installation(false);
        let sent = dispatch(&mut inst, &p, now);
        let [Message::Deliver(d)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(d.specification["link"], "ftp://repo/1.1.0");
        assert_eq!((d.from.as_str(), d.version.as_str()), ("1.0.0", "1.1.0"));
        answer(&mut inst, SoftwareOutcome::Installing);
        assert_eq!(inst.step, InstallStep::Installing);
        assert_eq!(resend(&inst), vec![delivery(&inst)]);
        answer(&mut inst, SoftwareOutcome::Installed);
        assert_eq!(
            (inst.status, inst.step),
            (UpgradeStatus::Success, InstallStep::Done)
        );
        // A late repeat changes nothing.
        answer(&mut inst, SoftwareOutcome::Failed);
        assert_eq!(inst.status, UpgradeStatus::Success);
    }

    #[test]
    fn with_consent_nothing_is_delivered_before_the_device_accepts() {
        let (p, now) = (UpgradePolicy::default(), Timestamp::now());
        let mut inst = installation(true);
        let sent = dispatch(&mut inst, &p, now);
        assert!(matches!(sent.as_slice(), [Message::Offer(o)] if o.metadata == "notes"));
        assert_eq!((inst.step, inst.deadline), (InstallStep::Offered, None));
        // Installing before consent is ignored.
        answer(&mut inst, SoftwareOutcome::Installing);
        assert_eq!(inst.step, InstallStep::Offered);
        let sent = answer(&mut inst, SoftwareOutcome::Accepted);
        assert!(matches!(sent.as_slice(), [Message::Deliver(_)]));

        let mut declined = installation(true);
        dispatch(&mut declined, &p, now);
        answer(&mut declined, SoftwareOutcome::Rejected);
        assert_eq!(declined.status, UpgradeStatus::Cancelled);
        assert!(
            declined.log.ends_with("declined the offer: disk full"),
            "{}",
            declined.log
        );
    }

    #[test]
    fn silence_is_retried_with_backoff_offline_waits_and_a_stalled_install_fails() {
        let (p, now) = (UpgradePolicy::default(), Timestamp::now());
        let mut inst = installation(false);
        dispatch(&mut inst, &p, now);
        on_deadline(&mut inst, false, &p, now);
        assert_eq!((inst.step, inst.attempt), (InstallStep::Queued, 0));
        for attempt in 1..=p.max_retries {
            dispatch(&mut inst, &p, now);
            on_deadline(&mut inst, true, &p, now);
            assert_eq!((inst.step, inst.attempt), (InstallStep::Queued, attempt));
            assert!(inst.not_before.is_some_and(|t| t > now));
        }
        dispatch(&mut inst, &p, now);
        on_deadline(&mut inst, true, &p, now);
        assert_eq!(inst.status, UpgradeStatus::Failed);

        let mut stalled = installation(false);
        dispatch(&mut stalled, &p, now);
        answer(&mut stalled, SoftwareOutcome::Installing);
        on_deadline(&mut stalled, false, &p, now);
        assert_eq!(stalled.status, UpgradeStatus::Failed);
    }
}
