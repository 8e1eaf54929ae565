//! Mass-upgrade targeting follows OpenWISP's rules over any backend: device firmware of a
//! sibling build is upgraded to the image of the same type, firmware-less devices only with
//! `upgrade_all`, deactivated devices never; waves are assigned in plan order.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use fleetmq_store::batch::{start_batch, targets};
use fleetmq_store::{
    AccountStore, BatchError, Build, BuildFields, CategoryFields, Device, DeviceStore,
    FirmwareStore, Image, ImageId, KvBackend, Limit, MassUpgrade, Narrowing, OrgId,
    OrganizationFields, Rollout, Scope, Slug, Timestamp, UpgradeOperation, UpgradePlan,
    UpgradeStore, Waves,
};

const SIM_TYPE: &str = "fleetmq-sim-squashfs-sysupgrade.bin";

struct World {
    _store: Fixture,
    db: KvBackend,
    org: OrgId,
    old: (Build, Image),
    new: (Build, Image),
    /// Devices created so far (their MAC addresses).
    created: std::cell::Cell<u8>,
}

fn world(engine: Engine) -> World {
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
    let category = db
        .create_category(CategoryFields {
            organization: Some(org),
            name: "sim".into(),
            description: String::new(),
        })
        .expect("category");
    let build = |version: &str| {
        let build = db
            .create_build(BuildFields {
                category: category.id,
                version: version.into(),
                os: "OpenWrt".into(),
                changelog: String::new(),
            })
            .expect("build");
        let image = db
            .create_image(Image {
                id: ImageId::new(),
                build: build.id,
                kind: SIM_TYPE.into(),
                size: 1,
                sha256: "ab".into(),
                created: Timestamp::now(),
            })
            .expect("image");
        (build, image)
    };
    let old = build("1.0");
    let new = build("2.0");
    World {
        _store: store,
        db,
        org,
        old,
        new,
        created: std::cell::Cell::new(0),
    }
}

impl World {
    fn device(&self, name: &str, model: &str) -> Device {
        let n = self.created.get();
        self.created.set(n + 1);
        self.db
            .create_device(
                support::device_fields(self.org, name, u32::from(n), model),
                None,
            )
            .expect("device")
    }

    /// Points the device's firmware at `image` (as a single upgrade does).
    fn runs(&self, device: &Device, (build, image): &(Build, Image)) {
        self.db
            .start_upgrades(UpgradePlan {
                batch: None,
                operations: vec![UpgradeOperation::new(device, image, build, None, 0)],
            })
            .expect("firmware set");
    }

    fn upgrade_to_new(&self) -> MassUpgrade {
        MassUpgrade::new(self.new.0.clone(), Some(self.org), Scope::All)
    }
}

fn names(devices: impl IntoIterator<Item = Device>) -> Vec<String> {
    let mut names: Vec<String> = devices
        .into_iter()
        .map(|d| d.fields.name.as_str().to_owned())
        .collect();
    names.sort();
    names
}

fn a_mass_upgrade_reaches_sibling_firmware_and_bare_devices_only_with_upgrade_all(engine: Engine) {
    let w = world(engine);
    let on_old = w.device("on-old", "sim-board");
    let on_new = w.device("on-new", "sim-board");
    let off = w.device("off", "sim-board");
    w.device("bare", "sim-board");
    w.device("wrong", "TP-Link Archer C7 v5");
    w.runs(&on_old, &w.old);
    w.runs(&on_new, &w.new);
    w.runs(&off, &w.old);
    w.db.set_device_deactivated(off.id, true)
        .expect("deactivated");

    let plan = targets(&w.db, &w.upgrade_to_new(), &Narrowing::default()).expect("targets");
    assert_eq!(
        names(plan.firmwares.iter().map(|t| t.device.clone())),
        ["on-old"]
    );
    assert_eq!(plan.firmwares[0].image.id, w.new.1.id);
    assert_eq!(plan.firmwares[0].firmware.image, w.old.1.id);
    assert_eq!(
        names(plan.devices.iter().map(|t| t.device.clone())),
        ["bare"]
    );

    let (_, started) = start_batch(
        &w.db,
        &w.upgrade_to_new(),
        &Narrowing::default(),
        false,
        Rollout::default(),
    )
    .expect("started");
    assert_eq!(
        started.operations.len(),
        1,
        "without upgrade_all: firmware only"
    );
    assert_eq!(started.operations[0].device, on_old.id);
    // on-old's firmware now points at the new build: only upgrade_all finds anything.
    let nothing = start_batch(
        &w.db,
        &w.upgrade_to_new(),
        &Narrowing::default(),
        false,
        Rollout::default(),
    );
    assert!(
        matches!(nothing, Err(BatchError::NothingMatches)),
        "{nothing:?}"
    );
    let group = uuid::Uuid::new_v4();
    let unknown = targets(
        &w.db,
        &w.upgrade_to_new(),
        &Narrowing {
            group: Some(group),
            location: None,
        },
    );
    assert!(matches!(unknown, Err(BatchError::UnknownGroup(g)) if g == group));
}

fn a_started_batch_keeps_its_rollout_and_spreads_operations_over_its_waves(engine: Engine) {
    let w = world(engine);
    for name in ["ap-a", "ap-b", "ap-c", "ap-d"] {
        w.device(name, "sim-board");
    }
    let rollout = Rollout::new(
        Limit::try_from(2i64).ok(),
        None,
        Waves::try_from(vec![50u64, 100]).expect("waves"),
        None,
    );
    let (id, started) = start_batch(
        &w.db,
        &w.upgrade_to_new(),
        &Narrowing::default(),
        true,
        rollout.clone(),
    )
    .expect("started");
    let mut waves: Vec<u32> = started.operations.iter().map(|o| o.wave).collect();
    waves.sort();
    assert_eq!(waves, [0, 0, 1, 1]);
    let stored = w.db.batch(id).expect("read").expect("stored");
    assert_eq!(stored.rollout, rollout);
    assert_eq!(stored.counts.in_progress, 4);
}

on_both_engines!(
    a_mass_upgrade_reaches_sibling_firmware_and_bare_devices_only_with_upgrade_all,
    a_started_batch_keeps_its_rollout_and_spreads_operations_over_its_waves,
);
