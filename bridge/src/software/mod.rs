//! The OTAO decision source: which software installation each device should have, decided
//! again whenever something that matters changes, and handed to the rollout engine.
//!
//! What triggers a decision ([`Triggers`], coalescing, so a connect storm of 10,000 devices
//! costs one read of each organization's catalogue per pass, not 10,000):
//! - an organization's software, filters or applications changed, or a device's attributes
//!   (the API tells the server, which calls [`Triggers::organization`]);
//! - a device connected, reported its inventory, or finished a hop ([`Triggers::device`]);
//! - a filter's rollout date passed: the task sleeps until the next date of any targeted
//!   version (no polling) and then decides that organization again.
//!
//! A decision is [`fleetmq_store::next_hop`] per device and application, over the versions
//! open to that device ([`Software::open_at`]) minus the hops it failed or declined since the
//! version last changed. The installations are stored first ([`SoftwareStore::start_installations`],
//! which skips devices that already have one in progress for the application) and only then
//! handed to the engine, which owns everything after: limits, consent, delivery, retries.
//!
//! [`SoftwareStore::start_installations`]: fleetmq_store::SoftwareStore::start_installations

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use fleetmq_store::{
    DeviceId, Endpoint, Installation, OrgId, Software, SoftwareView, Store, StoreError, Timestamp,
    next_hop,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::rollout::Rollouts;
use triggers::Pending;
pub use triggers::Triggers;

pub mod triggers;

/// A device inventory waiting for its transaction, and who waits for it.
type PendingInventory = (
    DeviceId,
    BTreeMap<String, String>,
    oneshot::Sender<Result<(), String>>,
);

/// Group commit of devices' `up/software` inventories: whatever queued up while the previous
/// transaction ran is written in the next one, so a fleet reconnecting costs a few commits,
/// not one per device. Each device's message is acknowledged once its transaction committed.
#[derive(Clone)]
pub struct Inventories {
    queue: mpsc::Sender<PendingInventory>,
}

impl Inventories {
    /// Inventories written in one transaction at most.
    const MAX_BATCH: usize = 4096;

    /// Starts the writer; it triggers a decision for every device it stored.
    pub fn start(
        store: Store,
        triggers: Triggers,
        metrics: crate::Metrics,
        shutdown: CancellationToken,
    ) -> (Inventories, tokio::task::JoinHandle<()>) {
        // Bounded: a device waits for room (its PUBACK waits) rather than memory growing.
        let (queue, mut inbox) = mpsc::channel::<PendingInventory>(Self::MAX_BATCH);
        let task = tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    () = shutdown.cancelled() => return,
                    first = inbox.recv() => match first {
                        Some(first) => first,
                        None => return,
                    },
                };
                let mut batch = vec![first];
                while batch.len() < Self::MAX_BATCH {
                    match inbox.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (inventories, acks): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|(device, apps, ack)| ((device, apps), (device, ack)))
                    .unzip();
                match store.run(move |db| db.set_inventories(inventories)).await {
                    Ok(missing) => {
                        metrics.inventories_stored(acks.len().saturating_sub(missing.len()) as u64);
                        for (device, ack) in acks {
                            if !missing.contains(&device) {
                                triggers.device(device);
                            }
                            let _ = ack.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "software inventories not stored");
                        for (_, ack) in acks {
                            let _ = ack.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        (Inventories { queue }, task)
    }

    /// Stores a device's whole inventory; resolves once it is committed.
    pub async fn write(
        &self,
        device: DeviceId,
        applications: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.queue
            .send((device, applications, ack))
            .await
            .map_err(|_| "the inventory writer stopped".to_owned())?;
        done.await
            .map_err(|_| "the inventory writer stopped".to_owned())?
    }
}

/// Decides installations until shutdown. Starts by deciding every organization with software
/// (work that was due while the server was down).
pub async fn decide(
    store: Store,
    rollouts: Rollouts,
    triggers: Triggers,
    shutdown: CancellationToken,
) {
    match store.run(|db| db.software_organizations()).await {
        Ok(orgs) => orgs.into_iter().for_each(|org| triggers.organization(org)),
        Err(e) => tracing::error!(error = %e, "cannot list organizations with software"),
    }
    // The next rollout date per organization.
    let mut dates: HashMap<OrgId, Timestamp> = HashMap::new();
    loop {
        let next = dates.values().min().copied();
        let sleep = async {
            match next {
                Some(at) => {
                    let wait = at.as_micros().saturating_sub(Timestamp::now().as_micros());
                    tokio::time::sleep(Duration::from_micros(wait.max(0) as u64)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = triggers.wake.notified() => {}
            () = sleep => {}
        }
        let now = Timestamp::now();
        // Organizations whose date came.
        let due: Vec<OrgId> = dates
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(org, _)| *org)
            .collect();
        for org in due {
            dates.remove(&org);
            triggers.organization(org);
        }
        let Pending {
            organizations,
            devices,
        } = triggers.take();
        if organizations.is_empty() && devices.is_empty() {
            continue;
        }
        // Kept to decide again if the pass fails: a trigger is never lost to a store error.
        let retry = (organizations.clone(), devices.clone());
        match pass(&store, &rollouts, organizations, devices).await {
            Ok(next_dates) => {
                for (org, date) in next_dates {
                    match date {
                        Some(at) => dates.insert(org, at),
                        None => dates.remove(&org),
                    };
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "software decisions failed; retrying in 5 s");
                retry
                    .0
                    .into_iter()
                    .for_each(|org| triggers.organization(org));
                retry
                    .1
                    .into_iter()
                    .for_each(|device| triggers.device(device));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

/// One pass: decides the organizations (every device) and the devices (of any organization),
/// stores the installations and hands them to the engine. Returns each fully decided
/// organization's next rollout date.
async fn pass(
    store: &Store,
    rollouts: &Rollouts,
    organizations: HashSet<OrgId>,
    devices: HashSet<DeviceId>,
) -> Result<Vec<(OrgId, Option<Timestamp>)>, StoreError> {
    let started = std::time::Instant::now();
    let (organizations_n, devices_n) = (organizations.len(), devices.len());
    let (plans, dates, catalogue) = store
        .run(move |db| {
            // The devices' organizations, unless the whole organization is decided anyway or
            // has no software (nothing to plan). Only briefs are read: a reconnecting fleet
            // costs no device record here.
            let mut only: HashMap<OrgId, HashSet<DeviceId>> = HashMap::new();
            if !devices.is_empty() {
                let with_software: HashSet<OrgId> =
                    db.software_organizations()?.into_iter().collect();
                for device in devices {
                    if let Some(found) = db.device_brief(device)?
                        && with_software.contains(&found.organization)
                        && !organizations.contains(&found.organization)
                    {
                        only.entry(found.organization).or_default().insert(device);
                    }
                }
            }
            let now = Timestamp::now();
            let mut plans = Vec::new();
            let mut dates = Vec::new();
            let mut catalogue = Vec::new();
            for org in organizations {
                let view = db.software_view(org)?;
                dates.push((org, next_rollout_date(&view, now)));
                plans.push(plan(&view, None, now));
                catalogue.extend(view.catalogue);
            }
            for (org, devices) in only {
                let ids: Vec<DeviceId> = devices.iter().copied().collect();
                let view = db.software_view_of(org, &ids)?;
                plans.push(plan(&view, None, now));
            }
            Ok((plans, dates, catalogue))
        })
        .await?;
    tracing::debug!(
        organizations = organizations_n,
        devices = devices_n,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "software decisions read and planned"
    );
    // Rollout limits the operator changed apply to installations already under way.
    for software in catalogue {
        rollouts.software_changed(software);
    }
    for (software, installations) in plans {
        if installations.is_empty() {
            continue;
        }
        let stored = store
            .run(move |db| db.start_installations(installations))
            .await?;
        if !stored.is_empty() {
            tracing::debug!(
                installations = stored.len(),
                "software installations planned"
            );
            let used: HashSet<_> = stored.iter().map(|i| i.software).collect();
            let software = software
                .into_iter()
                .filter(|s| used.contains(&s.id))
                .collect();
            rollouts.installations(software, stored);
        }
    }
    Ok(dates)
}

/// The earliest rollout date still to come among the organization's targeted versions.
fn next_rollout_date(view: &SoftwareView, now: Timestamp) -> Option<Timestamp> {
    view.catalogue
        .iter()
        .filter_map(|s| s.next_rollout_date(now))
        .min()
}

/// The installations `view`'s endpoints (or only `devices` of them) should get now, with the
/// software versions they install.
pub fn plan(
    view: &SoftwareView,
    devices: Option<&HashSet<DeviceId>>,
    now: Timestamp,
) -> (Vec<Software>, Vec<Installation>) {
    let mut by_app: BTreeMap<&str, Vec<Software>> = BTreeMap::new();
    for software in &view.catalogue {
        by_app
            .entry(software.app_name.as_str())
            .or_default()
            .push(software.clone());
    }
    let busy: HashSet<(DeviceId, &str)> = view
        .in_progress
        .iter()
        .map(|i| (i.device, i.app_name.as_str()))
        .collect();
    let refused: HashMap<(DeviceId, fleetmq_store::SoftwareId), Timestamp> = view
        .refused
        .iter()
        .map(|r| ((r.device, r.software), r.at))
        .collect();
    let mut used: HashMap<fleetmq_store::SoftwareId, Software> = HashMap::new();
    let mut installations = Vec::new();
    for endpoint in &view.endpoints {
        if devices.is_some_and(|only| !only.contains(&endpoint.device.id)) {
            continue;
        }
        for (app, current) in &endpoint.software {
            if busy.contains(&(endpoint.device.id, app.as_str())) {
                continue;
            }
            let Some(catalogue) = by_app.get(app.as_str()) else {
                continue;
            };
            let open = |s: &Software| open_to(s, endpoint, view, &refused, now);
            if let Some((next, _target)) = next_hop(catalogue, current, open) {
                let consent = view
                    .applications
                    .get(app)
                    .is_some_and(|a| a.consent_required);
                installations.push(Installation::new(
                    &endpoint.device,
                    next,
                    current,
                    consent,
                    now,
                ));
                used.entry(next.id).or_insert_with(|| next.clone());
            }
        }
    }
    (used.into_values().collect(), installations)
}

/// Whether `software` is open to `endpoint` now: its strategy and filters allow it, and the
/// endpoint did not fail or decline it since it last changed.
fn open_to(
    software: &Software,
    endpoint: &Endpoint,
    view: &SoftwareView,
    refused: &HashMap<(DeviceId, fleetmq_store::SoftwareId), Timestamp>,
    now: Timestamp,
) -> bool {
    software.open_at(endpoint, &view.filters, now)
        && refused
            .get(&(endpoint.device.id, software.id))
            .is_none_or(|at| *at < software.modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_store::{
        Application, Device, DeviceFields, DeviceKey, DeviceName, MacAddress, RefusedHop, Rollout,
        RolloutStrategy, SemVer, SoftwareFields, SoftwareId, StatusCounts,
    };

    fn device(org: OrgId) -> Device {
        Device {
            id: DeviceId::new(),
            fields: DeviceFields {
                name: DeviceName::parse("d").unwrap(),
                organization: org,
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
        }
    }

    fn software(org: OrgId, version: &str, from: &[&str]) -> Software {
        Software {
            id: SoftwareId::new(),
            organization: org,
            app_name: "kettle".into(),
            version: SemVer::parse(version).unwrap(),
            fields: SoftwareFields {
                specification: serde_json::json!({ "v": version }),
                metadata: serde_json::Value::Null,
                upgradable_from: from.iter().map(|v| SemVer::parse(v).unwrap()).collect(),
                rollout_strategy: RolloutStrategy::General,
                filters: Vec::new(),
                rollout: Rollout::default(),
            },
            counts: StatusCounts::default(),
            note: String::new(),
            created: Timestamp::now(),
            modified: Timestamp::now(),
        }
    }

    fn view(org: OrgId, devices: usize) -> SoftwareView {
        SoftwareView {
            catalogue: vec![
                software(org, "1.1.0", &["1.0.0"]),
                software(org, "1.2.0", &["1.1.0"]),
                software(org, "1.5.0", &["1.0.0"]),
            ],
            endpoints: (0..devices)
                .map(|_| Endpoint {
                    device: device(org),
                    location: None,
                    software: BTreeMap::from([("kettle".to_owned(), "1.0.0".to_owned())]),
                })
                .collect(),
            ..SoftwareView::default()
        }
    }

    fn targets(installations: &[Installation]) -> Vec<String> {
        installations
            .iter()
            .map(|i| i.version.to_string())
            .collect()
    }

    #[test]
    fn each_device_gets_its_first_hop_towards_the_highest_version_once() {
        let org = OrgId::new();
        let mut view = view(org, 3);
        let now = Timestamp::now();
        let (used, planned) = plan(&view, None, now);
        assert_eq!(targets(&planned), vec!["1.5.0"; 3]);
        assert_eq!(used.len(), 1);
        assert!(planned.iter().all(|i| !i.consent && i.from == "1.0.0"));
        assert_eq!(planned[0].specification["v"], "1.5.0");

        // A device with an installation in progress for the application gets nothing more.
        let busy = planned[0].clone();
        view.in_progress.push(busy);
        let only: HashSet<DeviceId> = view.endpoints.iter().map(|e| e.device.id).collect();
        assert_eq!(plan(&view, Some(&only), now).1.len(), 2);
        let one = HashSet::from([view.endpoints[2].device.id]);
        let (_, planned) = plan(&view, Some(&one), now);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].device, view.endpoints[2].device.id);
    }

    #[test]
    fn a_failed_or_declined_hop_is_not_offered_again_until_the_software_changes() {
        let org = OrgId::new();
        let mut view = view(org, 1);
        let now = Timestamp::now();
        let device = view.endpoints[0].device.id;
        let failed = view.catalogue[2].id;
        view.refused.push(RefusedHop {
            device,
            software: failed,
            at: now,
        });
        view.applications.insert(
            "kettle".into(),
            Application {
                organization: org,
                name: "kettle".into(),
                consent_required: true,
                created: now,
                modified: now,
            },
        );
        // 1.5.0 is closed to it: the other path, towards 1.2.0, opens.
        let (_, planned) = plan(&view, None, now);
        assert_eq!(targets(&planned), vec!["1.1.0"]);
        assert!(planned[0].consent);
        // The operator changed 1.5.0 after the failure: offered again.
        view.catalogue[2].modified = Timestamp::from_micros(now.as_micros() + 1);
        assert_eq!(targets(&plan(&view, None, now).1), vec!["1.5.0"]);
    }
}
