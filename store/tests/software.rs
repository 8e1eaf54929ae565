//! Application software (OTAO) persistence keeps its promises: versions are unique per
//! application, filters belong to their organization and cannot go while used, filters select
//! the right endpoints, inventories replace or merge, installations start one at a time per
//! application and move counts and device versions, refused hops come and go, deletions leave
//! nothing behind, and everything survives a reopen.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use std::collections::BTreeMap;

use fleetmq_store::{
    AccountStore, ConfigBackend, ConfigFields, ConfigStore, Device, DeviceFields, DeviceStore,
    FilterActivation, FilterFields, FilterId, FilterQuery, GroupFields, InstallStep, Installation,
    KvBackend, OrgId, OrganizationFields, PageRequest, Rollout, RolloutStrategy, Scope, Slug,
    Software, SoftwareFields, SoftwareStore, StoreError, Timestamp, Unique, UpgradeStatus,
};
use semver::Version;
use serde_json::json;

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: 1000,
};

struct World {
    store: Fixture,
    db: KvBackend,
    org: OrgId,
}

fn org_fields(slug: &str) -> OrganizationFields {
    OrganizationFields {
        name: slug.into(),
        slug: Slug::parse(slug).expect("slug"),
        description: String::new(),
        email: String::new(),
        url: String::new(),
        is_active: true,
    }
}

fn world(engine: Engine) -> World {
    let store = Fixture::new(engine);
    let db = store.open();
    let org = db.create_organization(org_fields("acme")).expect("org").id;
    World { store, db, org }
}

fn device_fields(org: OrgId, n: u32, model: &str) -> DeviceFields {
    support::device_fields(org, &format!("kettle-{n}"), n, model)
}

fn v(text: &str) -> Version {
    Version::parse(text).expect("version")
}

fn fields(from: &[&str]) -> SoftwareFields {
    SoftwareFields {
        specification: json!({"image": "kettle.bin"}),
        metadata: json!({"notes": "first"}),
        upgradable_from: from.iter().map(|f| v(f)).collect(),
        rollout_strategy: RolloutStrategy::General,
        filters: Vec::new(),
        rollout: Rollout::default(),
    }
}

fn filter_fields(org: OrgId, query: FilterQuery) -> FilterFields {
    FilterFields {
        organization: org,
        name: "some".into(),
        query,
    }
}

impl World {
    fn device(&self, n: u32) -> Device {
        self.db
            .create_device(device_fields(self.org, n, "kettle"), None)
            .expect("device")
    }

    fn publish(&self, version: &str, from: &[&str]) -> Software {
        self.db
            .create_software(self.org, "brew", v(version), fields(from))
            .expect("software")
    }

    fn inventory(&self, device: &Device, version: &str) {
        self.db
            .set_device_software(
                device.id,
                BTreeMap::from([("brew".to_owned(), version.to_owned())]),
                true,
            )
            .expect("inventory");
    }

    fn counts_of(&self, software: &Software) -> fleetmq_store::StatusCounts {
        self.db
            .software(self.org, "brew", &software.version)
            .expect("read")
            .expect("software")
            .counts
    }
}

fn versions_are_unique_per_application_and_listed_lowest_first(engine: Engine) {
    let w = world(engine);
    w.publish("1.10.0", &["1.2.0"]);
    w.publish("1.2.0", &[]);
    let again = w.db.create_software(w.org, "brew", v("1.2.0"), fields(&[]));
    assert!(matches!(
        again,
        Err(StoreError::Unique(Unique::SoftwareVersion))
    ));
    // Another application may use the same version.
    w.db.create_software(w.org, "toast", v("1.2.0"), fields(&[]))
        .expect("other application");

    let versions: Vec<String> =
        w.db.list_software(w.org, "brew")
            .expect("list")
            .iter()
            .map(|s| s.version.to_string())
            .collect();
    assert_eq!(versions, ["1.2.0", "1.10.0"], "semantic, not text, order");
    let application = w.db.application(w.org, "brew").expect("read").expect("app");
    assert!(!application.consent_required);
    assert_eq!(
        w.db.application_organizations(&Scope::All, "brew")
            .expect("orgs"),
        vec![w.org]
    );
    assert!(
        w.db.application_organizations(&Scope::Orgs(vec![OrgId::new()]), "brew")
            .expect("orgs")
            .is_empty()
    );
    assert_eq!(w.db.software_organizations().expect("orgs"), vec![w.org]);
}

fn a_version_may_only_name_filters_of_its_organization(engine: Engine) {
    let w = world(engine);
    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    let foreign =
        w.db.create_filter(filter_fields(other, FilterQuery::default()))
            .expect("filter");
    for filter in [foreign.id, FilterId::new()] {
        let mut targeted = fields(&[]);
        targeted.rollout_strategy = RolloutStrategy::Targeted;
        targeted.filters = vec![FilterActivation {
            filter,
            rollout_date: None,
        }];
        let refused = w.db.create_software(w.org, "brew", v("1.0.0"), targeted);
        assert!(
            matches!(
                refused,
                Err(StoreError::Rule {
                    field: "filters",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    assert!(w.db.list_software(w.org, "brew").expect("list").is_empty());
}

fn an_update_keeps_the_specification_and_clears_the_engine_note(engine: Engine) {
    let w = world(engine);
    let published = w.publish("1.0.0", &[]);
    w.db.suspend_software(published.id, "too many failures".into())
        .expect("suspend");
    let suspended = w.counts_of(&published);
    assert_eq!(suspended.total(), 0);
    let stored =
        w.db.software(w.org, "brew", &published.version)
            .expect("read")
            .expect("software");
    assert_eq!(stored.fields.rollout_strategy, RolloutStrategy::Suspended);
    assert_eq!(stored.note, "too many failures");

    let mut changed = fields(&["0.9.0"]);
    changed.specification = json!({"image": "evil.bin"});
    changed.metadata = json!({"notes": "second"});
    let updated = w.db.update_software(published.id, changed).expect("update");
    assert_eq!(updated.fields.specification, json!({"image": "kettle.bin"}));
    assert_eq!(updated.fields.metadata, json!({"notes": "second"}));
    assert_eq!(updated.fields.upgradable_from, vec![v("0.9.0")]);
    assert_eq!(updated.fields.rollout_strategy, RolloutStrategy::General);
    assert!(updated.note.is_empty());
    assert!(updated.modified >= stored.modified);
    assert_eq!(
        w.db.software(w.org, "brew", &published.version)
            .expect("read")
            .expect("software"),
        updated
    );
}

fn a_filter_in_use_cannot_be_deleted_nor_moved_to_another_organization(engine: Engine) {
    let w = world(engine);
    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    let filter =
        w.db.create_filter(filter_fields(w.org, FilterQuery::default()))
            .expect("filter");
    let mut targeted = fields(&[]);
    targeted.rollout_strategy = RolloutStrategy::Targeted;
    targeted.filters = vec![FilterActivation {
        filter: filter.id,
        rollout_date: Some(Timestamp::now()),
    }];
    let software =
        w.db.create_software(w.org, "brew", v("1.0.0"), targeted)
            .expect("software");
    assert!(matches!(
        w.db.delete_filter(filter.id),
        Err(StoreError::InUse)
    ));
    assert!(matches!(
        w.db.update_filter(filter.id, filter_fields(other, FilterQuery::default())),
        Err(StoreError::Rule { .. })
    ));

    w.db.update_software(software.id, fields(&[]))
        .expect("untarget");
    w.db.delete_filter(filter.id).expect("no longer used");
    assert!(w.db.filter(filter.id).expect("read").is_none());
    assert_eq!(w.db.list_filters(&Scope::All, ALL).expect("list").count, 0);
}

fn filter_endpoints_match_the_query_among_the_organizations_active_devices_newest_first(
    engine: Engine,
) {
    let w = world(engine);
    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    let group =
        w.db.create_group(GroupFields {
            name: "kitchen".into(),
            organization: w.org,
            description: String::new(),
            templates: Vec::new(),
            context: Default::default(),
            meta_data: Default::default(),
        })
        .expect("group");
    let kettles: Vec<Device> = (0..5).map(|n| w.device(n)).collect();
    w.db.create_device(device_fields(w.org, 10, "toaster"), None)
        .expect("toaster");
    w.db.create_device(device_fields(other, 11, "kettle"), None)
        .expect("another organization's kettle");
    w.db.set_device_deactivated(kettles[0].id, true)
        .expect("deactivate");
    let mut grouped = device_fields(w.org, 20, "kettle");
    grouped.group = Some(group.id.0);
    let grouped = w.db.create_device(grouped, None).expect("grouped");
    let mut context = serde_json::Map::new();
    context.insert("region".into(), json!("eu"));
    let european =
        w.db.create_device(
            device_fields(w.org, 21, "lamp"),
            Some(ConfigFields {
                backend: ConfigBackend::OpenWrt,
                templates: Vec::new(),
                context,
                config: Default::default(),
            }),
        )
        .expect("european");

    let by_model =
        w.db.create_filter(filter_fields(
            w.org,
            FilterQuery {
                model: Some("kettle".into()),
                ..FilterQuery::default()
            },
        ))
        .expect("filter");
    let all = w.db.filter_endpoints(by_model.id, ALL).expect("endpoints");
    // Four active kettles of its own, plus the grouped one; newest first.
    let expected: Vec<_> = [grouped.id, kettles[4].id, kettles[3].id, kettles[2].id]
        .into_iter()
        .chain([kettles[1].id])
        .collect();
    assert_eq!(all.count, 5);
    assert_eq!(all.items.iter().map(|d| d.id).collect::<Vec<_>>(), expected);
    let second =
        w.db.filter_endpoints(
            by_model.id,
            PageRequest {
                offset: 2,
                limit: 2,
            },
        )
        .expect("page");
    assert_eq!(second.count, 5);
    assert_eq!(
        second.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        expected[2..4]
    );

    let queries = [
        (
            FilterQuery {
                group: Some(group.id),
                ..FilterQuery::default()
            },
            vec![grouped.id],
        ),
        (
            FilterQuery {
                metadata: BTreeMap::from([("region".into(), "eu".into())]),
                ..FilterQuery::default()
            },
            vec![european.id],
        ),
        (
            FilterQuery {
                devices: vec![kettles[2].id, kettles[0].id],
                ..FilterQuery::default()
            },
            vec![kettles[2].id],
        ),
    ];
    for (query, expected) in queries {
        let filter =
            w.db.create_filter(filter_fields(w.org, query.clone()))
                .expect("filter");
        let page = w.db.filter_endpoints(filter.id, ALL).expect("endpoints");
        assert_eq!(
            page.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            expected,
            "{query:?}"
        );
    }
    assert!(matches!(
        w.db.filter_endpoints(FilterId::new(), ALL),
        Err(StoreError::NotFound)
    ));
}

fn an_inventory_replaces_the_whole_list_and_a_rest_write_only_its_applications(engine: Engine) {
    let w = world(engine);
    let device = w.device(1);
    let apps = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect()
    };
    let listed = |list: Vec<fleetmq_store::DeviceSoftware>| -> Vec<(String, String)> {
        list.into_iter().map(|s| (s.app_name, s.version)).collect()
    };
    w.db.set_device_software(
        device.id,
        apps(&[("brew", "1.0.0"), ("toast", "2.0")]),
        true,
    )
    .expect("inventory");
    let merged =
        w.db.set_device_software(device.id, apps(&[("alarm", "0.1")]), false)
            .expect("merge");
    assert_eq!(
        listed(merged),
        [
            ("alarm".to_owned(), "0.1".to_owned()),
            ("brew".to_owned(), "1.0.0".to_owned()),
            ("toast".to_owned(), "2.0".to_owned())
        ]
    );
    let replaced =
        w.db.set_device_software(device.id, apps(&[("brew", "1.1.0")]), true)
            .expect("replace");
    assert_eq!(listed(replaced), [("brew".to_owned(), "1.1.0".to_owned())]);
    assert_eq!(
        listed(w.db.device_software(device.id).expect("read")),
        [("brew".to_owned(), "1.1.0".to_owned())]
    );
    assert!(matches!(
        w.db.set_device_software(fleetmq_store::DeviceId::new(), apps(&[]), true),
        Err(StoreError::NotFound)
    ));
}

fn installations_start_one_at_a_time_per_application_and_never_on_deactivated_devices(
    engine: Engine,
) {
    let w = world(engine);
    let first = w.publish("1.1.0", &["1.0.0"]);
    let (busy, off, gone) = (w.device(1), w.device(2), w.device(3));
    w.db.set_device_deactivated(off.id, true)
        .expect("deactivate");
    w.db.delete_device(gone.id).expect("delete");
    let now = Timestamp::now();
    let started =
        w.db.start_installations(vec![
            Installation::new(&busy, &first, "1.0.0", false, now),
            Installation::new(&busy, &first, "1.0.0", false, now),
            Installation::new(&off, &first, "1.0.0", false, now),
            Installation::new(&gone, &first, "1.0.0", false, now),
        ])
        .expect("start");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].device, busy.id);
    let again =
        w.db.start_installations(vec![Installation::new(&busy, &first, "1.0.0", false, now)])
            .expect("start again");
    assert!(
        again.is_empty(),
        "one in progress per device and application"
    );
    assert_eq!(w.counts_of(&first).in_progress, 1);
    assert_eq!(w.db.active_installations().expect("active"), started);
    assert_eq!(w.db.device_installations(busy.id).expect("device"), started);

    // Deactivating the device aborts it.
    w.db.set_device_deactivated(busy.id, true)
        .expect("deactivate");
    let aborted =
        w.db.installation(started[0].id)
            .expect("read")
            .expect("installation");
    assert_eq!(aborted.status, UpgradeStatus::Aborted);
    assert_eq!(aborted.step, InstallStep::Done);
    assert!(aborted.log.ends_with("The device was deactivated"));
    assert!(w.db.active_installations().expect("active").is_empty());
    let counts = w.counts_of(&first);
    assert_eq!((counts.in_progress, counts.aborted), (0, 1));
    // The engine's late step is left alone.
    let mut late = started[0].clone();
    late.finish(UpgradeStatus::Success, "installed", Timestamp::now());
    assert_eq!(
        w.db.write_installations(vec![late]).expect("write"),
        vec![started[0].id]
    );
}

fn a_success_sets_the_device_version_and_moves_the_counts(engine: Engine) {
    let w = world(engine);
    let next = w.publish("1.1.0", &["1.0.0"]);
    let device = w.device(1);
    w.inventory(&device, "1.0.0");
    let started =
        w.db.start_installations(vec![Installation::new(
            &device,
            &next,
            "1.0.0",
            false,
            Timestamp::now(),
        )])
        .expect("start");
    let mut installing = started[0].clone();
    installing.step = InstallStep::Installing;
    installing.note("installing", Timestamp::now());
    assert!(
        w.db.write_installations(vec![installing.clone()])
            .expect("write")
            .is_empty()
    );
    assert_eq!(w.counts_of(&next).in_progress, 1);

    let mut done = installing;
    done.finish(UpgradeStatus::Success, "installed", Timestamp::now());
    assert!(
        w.db.write_installations(vec![done.clone()])
            .expect("write")
            .is_empty()
    );
    let counts = w.counts_of(&next);
    assert_eq!((counts.in_progress, counts.success), (0, 1));
    let software = w.db.device_software(device.id).expect("read");
    assert_eq!(software.len(), 1);
    assert_eq!(software[0].version, "1.1.0");
    assert_eq!(
        w.db.installation(done.id).expect("read").expect("stored"),
        done
    );
    assert!(w.db.active_installations().expect("active").is_empty());
    let view = w.db.software_view(w.org).expect("view");
    assert_eq!(
        view.endpoints[0].software.get("brew").map(String::as_str),
        Some("1.1.0")
    );
}

fn a_refused_hop_shows_in_the_view_until_a_later_installation_succeeds(engine: Engine) {
    let w = world(engine);
    let next = w.publish("1.1.0", &["1.0.0"]);
    let device = w.device(1);
    w.inventory(&device, "1.0.0");
    let start = |created: Timestamp| {
        w.db.start_installations(vec![Installation::new(
            &device, &next, "1.0.0", true, created,
        )])
        .expect("start")
        .remove(0)
    };
    let mut declined = start(Timestamp::now());
    let view = w.db.software_view(w.org).expect("view");
    assert_eq!(view.in_progress, vec![declined.clone()]);
    assert!(view.refused.is_empty());

    declined.finish(UpgradeStatus::Cancelled, "declined", Timestamp::now());
    w.db.write_installations(vec![declined.clone()])
        .expect("write");
    let view = w.db.software_view(w.org).expect("view");
    assert!(view.in_progress.is_empty());
    assert_eq!(view.refused.len(), 1);
    assert_eq!(view.refused[0].device, device.id);
    assert_eq!(view.refused[0].software, next.id);
    assert_eq!(view.refused[0].at, declined.modified);

    let later = Timestamp::from_micros(declined.created.as_micros() + 1);
    let mut retried = start(later);
    retried.finish(UpgradeStatus::Success, "installed", Timestamp::now());
    w.db.write_installations(vec![retried]).expect("write");
    let view = w.db.software_view(w.org).expect("view");
    assert!(view.refused.is_empty());
    let counts = w.counts_of(&next);
    assert_eq!((counts.cancelled, counts.success), (1, 1));
}

fn the_view_holds_the_organizations_catalogue_settings_filters_and_active_endpoints(
    engine: Engine,
) {
    let w = world(engine);
    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    w.publish("1.1.0", &["1.0.0"]);
    w.publish("1.0.0", &[]);
    w.db.create_software(other, "brew", v("9.0.0"), fields(&[]))
        .expect("other's");
    let filter =
        w.db.create_filter(filter_fields(
            w.org,
            FilterQuery {
                model: Some("kettle".into()),
                ..FilterQuery::default()
            },
        ))
        .expect("filter");
    let mut application = w.db.application(w.org, "brew").expect("read").expect("app");
    application.consent_required = true;
    w.db.put_application(application).expect("settings");
    let (on, off) = (w.device(1), w.device(2));
    w.db.set_device_deactivated(off.id, true)
        .expect("deactivate");
    w.inventory(&on, "1.0.0");

    let view = w.db.software_view(w.org).expect("view");
    let versions: Vec<String> = view
        .catalogue
        .iter()
        .map(|s| s.version.to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    assert!(view.applications["brew"].consent_required);
    assert_eq!(view.filters.len(), 1);
    assert_eq!(view.filters[&filter.id].model.as_deref(), Some("kettle"));
    assert_eq!(view.endpoints.len(), 1);
    assert_eq!(view.endpoints[0].device.id, on.id);
    assert_eq!(
        view.endpoints[0].software,
        BTreeMap::from([("brew".to_owned(), "1.0.0".to_owned())])
    );
    let mut orgs = w.db.software_organizations().expect("orgs");
    orgs.sort();
    let mut expected = vec![w.org, other];
    expected.sort();
    assert_eq!(orgs, expected);
}

fn deleting_a_device_or_an_organization_leaves_nothing_behind(engine: Engine) {
    let w = world(engine);
    let next = w.publish("1.1.0", &["1.0.0"]);
    let filter =
        w.db.create_filter(filter_fields(w.org, FilterQuery::default()))
            .expect("filter");
    let (kept, deleted) = (w.device(1), w.device(2));
    for device in [&kept, &deleted] {
        w.inventory(device, "1.0.0");
    }
    let now = Timestamp::now();
    let started =
        w.db.start_installations(vec![
            Installation::new(&kept, &next, "1.0.0", false, now),
            Installation::new(&deleted, &next, "1.0.0", false, now),
        ])
        .expect("start");
    let mut failed = started[1].clone();
    failed.finish(UpgradeStatus::Failed, "no space", Timestamp::now());
    w.db.write_installations(vec![failed]).expect("write");
    assert_eq!(w.db.software_view(w.org).expect("view").refused.len(), 1);

    w.db.delete_device(deleted.id).expect("delete device");
    assert!(w.db.device_software(deleted.id).expect("read").is_empty());
    assert!(
        w.db.device_installations(deleted.id)
            .expect("read")
            .is_empty()
    );
    assert!(w.db.installation(started[1].id).expect("read").is_none());
    let view = w.db.software_view(w.org).expect("view");
    assert!(view.refused.is_empty());
    assert_eq!(view.in_progress.len(), 1);
    let counts = w.counts_of(&next);
    assert_eq!((counts.in_progress, counts.failed), (1, 0));

    w.db.delete_organization(w.org)
        .expect("delete organization");
    assert_eq!(w.db.software_view(w.org).expect("view"), Default::default());
    assert!(w.db.list_software(w.org, "brew").expect("list").is_empty());
    assert!(w.db.application(w.org, "brew").expect("read").is_none());
    assert!(
        w.db.application_organizations(&Scope::All, "brew")
            .expect("orgs")
            .is_empty()
    );
    assert!(w.db.filter(filter.id).expect("read").is_none());
    assert_eq!(w.db.list_filters(&Scope::All, ALL).expect("list").count, 0);
    assert!(w.db.software_organizations().expect("orgs").is_empty());
    assert!(w.db.device_software(kept.id).expect("read").is_empty());
    assert!(w.db.active_installations().expect("active").is_empty());
    assert!(w.db.installation(started[0].id).expect("read").is_none());
}

fn everything_survives_a_reopen(engine: Engine) {
    let w = world(engine);
    let next = w.publish("1.1.0", &["1.0.0"]);
    let filter =
        w.db.create_filter(filter_fields(w.org, FilterQuery::default()))
            .expect("filter");
    let device = w.device(1);
    w.inventory(&device, "1.0.0");
    let started =
        w.db.start_installations(vec![Installation::new(
            &device,
            &next,
            "1.0.0",
            false,
            Timestamp::now(),
        )])
        .expect("start");
    let before = w.db.software_view(w.org).expect("view");
    let World { store, db, org } = w;
    drop(db);

    let db = store.open();
    assert_eq!(db.software_view(org).expect("view"), before);
    assert_eq!(db.active_installations().expect("active"), started);
    assert_eq!(db.filter(filter.id).expect("read"), Some(filter));
    assert_eq!(
        db.software(org, "brew", &next.version)
            .expect("read")
            .map(|s| s.counts.in_progress),
        Some(1)
    );
    assert_eq!(db.device_software(device.id).expect("read").len(), 1);
}

fn inventories_of_many_devices_commit_together_and_a_partial_view_reads_only_its_devices(
    engine: Engine,
) {
    let w = world(engine);
    let (one, two, three) = (w.device(1), w.device(2), w.device(3));
    let kettle = |version: &str| BTreeMap::from([("kettle".to_owned(), version.to_owned())]);
    w.db.set_device_software(
        one.id,
        BTreeMap::from([("old".to_owned(), "0.1".to_owned())]),
        true,
    )
    .expect("earlier inventory");
    let ghost = fleetmq_store::DeviceId::new();
    let missing =
        w.db.set_inventories(vec![
            (one.id, kettle("1.0.0")),
            (ghost, kettle("1.0.0")),
            (two.id, kettle("2.0.0")),
        ])
        .expect("inventories");
    assert_eq!(missing, vec![ghost]);
    // A whole inventory: the application it no longer lists is gone.
    let listed: Vec<String> =
        w.db.device_software(one.id)
            .expect("read")
            .into_iter()
            .map(|s| format!("{} {}", s.app_name, s.version))
            .collect();
    assert_eq!(listed, vec!["kettle 1.0.0"]);

    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    let view =
        w.db.software_view_of(w.org, &[two.id, ghost, three.id])
            .expect("view");
    let mut seen: Vec<_> = view.endpoints.iter().map(|e| e.device.id).collect();
    seen.sort();
    let mut wanted = vec![two.id, three.id];
    wanted.sort();
    assert_eq!(seen, wanted);
    assert_eq!(
        view.endpoints
            .iter()
            .find(|e| e.device.id == two.id)
            .map(|e| e.software.clone()),
        Some(kettle("2.0.0"))
    );
    // Another organization's view of these devices is empty.
    assert!(
        w.db.software_view_of(other, &[one.id, two.id])
            .expect("view")
            .endpoints
            .is_empty()
    );
}

fn deleting_an_organization_deletes_its_oauth_clients_and_their_tokens(engine: Engine) {
    use fleetmq_store::{OAuthScope, OAuthStore};
    let w = world(engine);
    let other =
        w.db.create_organization(org_fields("other"))
            .expect("org")
            .id;
    let (gone, _) =
        w.db.create_oauth_client("ci".into(), w.org, vec![OAuthScope::EndpointRead])
            .expect("client");
    let (kept, _) =
        w.db.create_oauth_client("ops".into(), other, vec![OAuthScope::EndpointRead])
            .expect("client");
    let (token, _) =
        w.db.issue_access_token(gone.client_id, vec![OAuthScope::EndpointRead], 60)
            .expect("token");
    let (kept_token, _) =
        w.db.issue_access_token(kept.client_id, vec![OAuthScope::EndpointRead], 60)
            .expect("token");
    w.db.delete_organization(w.org).expect("delete");
    assert_eq!(w.db.oauth_client(gone.client_id).expect("read"), None);
    assert_eq!(w.db.access_grant(&token).expect("read"), None);
    assert!(w.db.oauth_client(kept.client_id).expect("read").is_some());
    assert!(w.db.access_grant(&kept_token).expect("read").is_some());
}

on_both_engines!(
    versions_are_unique_per_application_and_listed_lowest_first,
    a_version_may_only_name_filters_of_its_organization,
    an_update_keeps_the_specification_and_clears_the_engine_note,
    a_filter_in_use_cannot_be_deleted_nor_moved_to_another_organization,
    filter_endpoints_match_the_query_among_the_organizations_active_devices_newest_first,
    an_inventory_replaces_the_whole_list_and_a_rest_write_only_its_applications,
    installations_start_one_at_a_time_per_application_and_never_on_deactivated_devices,
    a_success_sets_the_device_version_and_moves_the_counts,
    a_refused_hop_shows_in_the_view_until_a_later_installation_succeeds,
    the_view_holds_the_organizations_catalogue_settings_filters_and_active_endpoints,
    deleting_a_device_or_an_organization_leaves_nothing_behind,
    everything_survives_a_reopen,
    inventories_of_many_devices_commit_together_and_a_partial_view_reads_only_its_devices,
    deleting_an_organization_deletes_its_oauth_clients_and_their_tokens,
);
