//! Upgrade persistence keeps its promises: a cancel and an engine step never both win, batch
//! counts follow their operations, newer upgrades supersede older ones, success installs the
//! device's firmware, reports merge, and everything survives a reopen.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use fleetmq_store::{
    AccountStore, Backend, Batch, BatchId, BatchStatus, Build, BuildFields, CancelOutcome,
    CategoryFields, Device, DeviceFilter, DeviceStore, FirmwareStore, Image, ImageId, KvBackend,
    LiveEvent, OrgId, OrganizationFields, PageRequest, Rollout, Scope, Slug, StoreError, Timestamp,
    UpdateReport, UpgradeFilter, UpgradeOperation, UpgradePlan, UpgradeStatus, UpgradeStep,
    UpgradeStore,
};
use serde_json::json;
use tokio::sync::broadcast;

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: 1000,
};

struct World {
    _store: Fixture,
    db: KvBackend,
    org: OrgId,
    devices: Vec<Device>,
    build: Build,
    image: Image,
}

fn world(engine: Engine, devices: u32) -> World {
    let store = Fixture::new(engine);
    let db = store.open();
    let org = db
        .create_organization(OrganizationFields {
            name: "Acme".into(),
            slug: Slug::parse("acme").expect("slug"),
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        })
        .expect("org")
        .id;
    let devices = (0..devices)
        .map(|n| {
            db.create_device(
                support::device_fields(org, &format!("ap-{n}"), n, "sim-board"),
                None,
            )
            .expect("device")
        })
        .collect();
    let category = db
        .create_category(CategoryFields {
            organization: Some(org),
            name: "sim".into(),
            description: String::new(),
        })
        .expect("category");
    let build = db
        .create_build(BuildFields {
            category: category.id,
            version: "2.0".into(),
            os: "OpenWrt".into(),
            changelog: String::new(),
        })
        .expect("build");
    let image = db
        .create_image(Image {
            id: ImageId::new(),
            build: build.id,
            kind: "fleetmq-sim-squashfs-sysupgrade.bin".into(),
            size: 1,
            sha256: "ab".into(),
            created: Timestamp::now(),
        })
        .expect("image");
    World {
        _store: store,
        db,
        org,
        devices,
        build,
        image,
    }
}

impl World {
    fn batch(&self) -> Batch {
        Batch {
            id: BatchId::new(),
            build: self.build.id,
            organization: Some(self.org),
            rollout: Rollout::default(),
            counts: Default::default(),
            note: String::new(),
            created: Timestamp::now(),
            modified: Timestamp::now(),
        }
    }

    fn op(&self, device: usize, batch: Option<&Batch>) -> UpgradeOperation {
        UpgradeOperation::new(
            &self.devices[device],
            &self.image,
            &self.build,
            batch.map(|b| b.id),
            0,
        )
    }
}

fn a_cancel_and_an_engine_step_never_both_win(engine: Engine) {
    let w = world(engine, 2);
    let batch = w.batch();
    let plan = UpgradePlan {
        batch: Some(batch.clone()),
        operations: vec![w.op(0, Some(&batch)), w.op(1, Some(&batch))],
    };
    let started = w.db.start_upgrades(plan).expect("started");
    assert_eq!(started.batch.as_ref().expect("batch").counts.in_progress, 2);
    let [first, second] = started.operations.as_slice() else {
        panic!("two operations")
    };

    // Cancelled first: the engine's later step is refused.
    let CancelOutcome::Cancelled(_) = w.db.cancel_upgrade(first.id).expect("cancel") else {
        panic!("cancellable at 0 %")
    };
    let mut step = first.clone();
    step.step = UpgradeStep::Fetching;
    step.progress = 10;
    let refused = w.db.write_upgrades(vec![step], Vec::new()).expect("write");
    assert_eq!(refused, vec![first.id]);
    let stored = w.db.upgrade(first.id).expect("read").expect("exists");
    assert_eq!(stored.status, UpgradeStatus::Cancelled);

    // Flashing first: the cancel is refused.
    let mut flashing = second.clone();
    flashing.step = UpgradeStep::Flashing;
    flashing.progress = 65;
    assert!(
        w.db.write_upgrades(vec![flashing], Vec::new())
            .expect("write")
            .is_empty()
    );
    assert!(matches!(
        w.db.cancel_upgrade(second.id).expect("cancel"),
        CancelOutcome::TooLate(_)
    ));

    let batch = w.db.batch(batch.id).expect("read").expect("exists");
    assert_eq!((batch.counts.in_progress, batch.counts.cancelled), (1, 1));
    assert_eq!(batch.status(), BatchStatus::InProgress);
}

fn success_installs_the_firmware_and_the_batch_status_follows_openwisp(engine: Engine) {
    let w = world(engine, 2);
    let batch = w.batch();
    let started =
        w.db.start_upgrades(UpgradePlan {
            batch: Some(batch.clone()),
            operations: vec![w.op(0, Some(&batch)), w.op(1, Some(&batch))],
        })
        .expect("started");
    let firmware =
        w.db.device_firmware(w.devices[0].id)
            .expect("read")
            .expect("firmware set on start");
    assert!(!firmware.installed);

    let mut ok = started.operations[0].clone();
    ok.finish(UpgradeStatus::Success, "done");
    let mut bad = started.operations[1].clone();
    bad.finish(UpgradeStatus::Failed, "broken");
    w.db.write_upgrades(vec![ok, bad], Vec::new())
        .expect("write");
    assert!(
        w.db.device_firmware(w.devices[0].id)
            .expect("read")
            .expect("firmware")
            .installed
    );
    assert!(
        !w.db
            .device_firmware(w.devices[1].id)
            .expect("read")
            .expect("firmware")
            .installed
    );
    let batch = w.db.batch(batch.id).expect("read").expect("batch");
    assert_eq!((batch.counts.success, batch.counts.failed), (1, 1));
    assert_eq!(batch.status(), BatchStatus::Failed);
    assert!(w.db.active_upgrades().expect("active").is_empty());
}

fn a_newer_upgrade_supersedes_the_one_in_progress(engine: Engine) {
    let w = world(engine, 1);
    let first =
        w.db.start_upgrades(UpgradePlan {
            batch: None,
            operations: vec![w.op(0, None)],
        })
        .expect("first");
    let second =
        w.db.start_upgrades(UpgradePlan {
            batch: None,
            operations: vec![w.op(0, None)],
        })
        .expect("second");
    assert_eq!(second.superseded.len(), 1);
    assert_eq!(second.superseded[0].id, first.operations[0].id);
    let old =
        w.db.upgrade(first.operations[0].id)
            .expect("read")
            .expect("kept");
    assert_eq!(old.status, UpgradeStatus::Aborted);
    let active = w.db.active_upgrades().expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, second.operations[0].id);
    let listed =
        w.db.list_upgrades(
            &Scope::All,
            &UpgradeFilter {
                device: Some(w.devices[0].id),
                status: Some(UpgradeStatus::Aborted),
                ..UpgradeFilter::default()
            },
            ALL,
        )
        .expect("list");
    assert_eq!(listed.count, 1);
    // Another tenant's scope sees nothing.
    let other =
        w.db.list_upgrades(
            &Scope::Orgs(vec![OrgId::new()]),
            &UpgradeFilter::default(),
            ALL,
        )
        .expect("list");
    assert_eq!(other.count, 0);
}

/// The live events already announced (the store announces after each commit, before the
/// call returns).
fn announced(live: &mut broadcast::Receiver<LiveEvent>) -> Vec<LiveEvent> {
    let mut events = Vec::new();
    while let Ok(event) = live.try_recv() {
        events.push(event);
    }
    events
}

/// The status and counts (in progress, success, failed, aborted, cancelled) of batch events.
fn batch_states(events: &[LiveEvent]) -> Vec<(BatchStatus, [u32; 5], u32)> {
    events
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Batch {
                status,
                counts,
                total,
                ..
            } => Some((
                *status,
                [
                    counts.in_progress,
                    counts.success,
                    counts.failed,
                    counts.aborted,
                    counts.cancelled,
                ],
                *total,
            )),
            _ => None,
        })
        .collect()
}

fn a_batch_is_one_live_event_per_commit_that_changes_its_counts(engine: Engine) {
    let w = world(engine, 3);
    let mut live = w.db.live_events();
    let batch = w.batch();
    let started =
        w.db.start_upgrades(UpgradePlan {
            batch: Some(batch.clone()),
            operations: (0..3).map(|n| w.op(n, Some(&batch))).collect(),
        })
        .expect("started");
    let events = announced(&mut live);
    assert_eq!(
        batch_states(&events),
        [(BatchStatus::InProgress, [3, 0, 0, 0, 0], 3)],
        "three operations started in one commit: one event"
    );
    assert!(matches!(
        &events[0],
        LiveEvent::Batch { batch: id, organization: Some(org), .. }
            if *id == batch.id && *org == w.org
    ));

    // A step that changes no status is no event.
    let mut fetching = started.operations[0].clone();
    fetching.step = UpgradeStep::Fetching;
    fetching.progress = 20;
    w.db.write_upgrades(vec![fetching], Vec::new())
        .expect("write");
    assert!(announced(&mut live).is_empty(), "no status changed");

    let CancelOutcome::Cancelled(_) =
        w.db.cancel_upgrade(started.operations[2].id)
            .expect("cancel")
    else {
        panic!("cancelled before flashing")
    };
    let mut done = Vec::new();
    for (n, status) in [(0, UpgradeStatus::Success), (1, UpgradeStatus::Success)] {
        let mut op = started.operations[n].clone();
        op.finish(status, "done");
        done.push(op);
    }
    w.db.write_upgrades(done, Vec::new()).expect("write");
    assert_eq!(
        batch_states(&announced(&mut live)),
        [
            (BatchStatus::InProgress, [2, 0, 0, 0, 1], 3),
            (BatchStatus::Cancelled, [0, 2, 0, 0, 1], 3),
        ],
        "the cancel, then both successes in one event"
    );

    // A device deleted takes its operation out of the batch's counts: that is news too.
    w.db.set_device_deactivated(w.devices[2].id, true)
        .expect("deactivate");
    assert!(announced(&mut live).is_empty(), "nothing was left to abort");
    w.db.delete_device(w.devices[2].id).expect("delete");
    assert_eq!(
        batch_states(&announced(&mut live)),
        [(BatchStatus::Success, [0, 2, 0, 0, 0], 2)]
    );
}

fn the_firmware_version_filter_lists_devices_running_that_build(engine: Engine) {
    let w = world(engine, 3);
    let started =
        w.db.start_upgrades(UpgradePlan {
            batch: None,
            operations: (0..3).map(|n| w.op(n, None)).collect(),
        })
        .expect("started");
    let on = |version: &str| {
        w.db.list_devices(
            &Scope::Orgs(vec![w.org]),
            &DeviceFilter {
                firmware_version: Some(version.into()),
                ..Default::default()
            },
            ALL,
        )
        .expect("list")
        .items
        .iter()
        .map(|d| d.id)
        .collect::<Vec<_>>()
    };
    assert!(on("2.0").is_empty(), "upgrading is not running it yet");

    let mut ok = started.operations[0].clone();
    ok.finish(UpgradeStatus::Success, "done");
    let mut also = started.operations[2].clone();
    also.finish(UpgradeStatus::Success, "done");
    let mut bad = started.operations[1].clone();
    bad.finish(UpgradeStatus::Failed, "broken");
    w.db.write_upgrades(vec![ok, also, bad], Vec::new())
        .expect("write");
    assert_eq!(on("2.0"), [w.devices[2].id, w.devices[0].id]);
    assert!(on("2").is_empty(), "the version is matched whole");
    assert!(on("1.0").is_empty());
    let elsewhere =
        w.db.list_devices(
            &Scope::Orgs(vec![OrgId::new()]),
            &DeviceFilter {
                firmware_version: Some("2.0".into()),
                ..Default::default()
            },
            ALL,
        )
        .expect("list");
    assert_eq!(elsewhere.count, 0, "another scope sees none of them");
}

fn reports_merge_and_upgrades_survive_a_reopen(engine: Engine) {
    let store = Fixture::new(engine);
    let w = world(engine, 1);
    let device = w.devices[0].id;
    w.db.write_upgrades(
        Vec::new(),
        vec![(
            device,
            UpdateReport {
                update: Some(json!({"state": "IDLE"})),
                images: None,
                modified: Some(Timestamp::now()),
            },
        )],
    )
    .expect("update report");
    w.db.write_upgrades(
        Vec::new(),
        vec![(
            device,
            UpdateReport {
                update: None,
                images: Some(json!({"items": []})),
                modified: Some(Timestamp::now()),
            },
        )],
    )
    .expect("images report");
    let report = w.db.update_report(device).expect("read").expect("stored");
    assert_eq!(report.update, Some(json!({"state": "IDLE"})));
    assert_eq!(report.images, Some(json!({"items": []})));

    // Deleting the device removes its upgrades; unknown operations are NotFound.
    let started =
        w.db.start_upgrades(UpgradePlan {
            batch: None,
            operations: vec![w.op(0, None)],
        })
        .expect("started");
    w.db.set_device_deactivated(device, true)
        .expect("deactivate");
    w.db.delete_device(device).expect("delete");
    assert!(
        w.db.upgrade(started.operations[0].id)
            .expect("read")
            .is_none()
    );
    assert!(matches!(
        w.db.cancel_upgrade(started.operations[0].id),
        Err(StoreError::NotFound)
    ));

    // Durable across a reopen.
    let db = store.open();
    let secret = db.secret("download-links").expect("secret");
    drop(db);
    let db = store.open();
    assert_eq!(db.secret("download-links").expect("secret"), secret);
}

on_both_engines!(
    a_cancel_and_an_engine_step_never_both_win,
    a_batch_is_one_live_event_per_commit_that_changes_its_counts,
    the_firmware_version_filter_lists_devices_running_that_build,
    success_installs_the_firmware_and_the_batch_status_follows_openwisp,
    a_newer_upgrade_supersedes_the_one_in_progress,
    reports_merge_and_upgrades_survive_a_reopen,
);
