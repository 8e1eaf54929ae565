//! The redb backend keeps its promises: uniqueness, tenancy scope, newest-first paging, filters,
//! durability across reopen, and refusal of newer schemas.

#[macro_use]
mod support;
use support::{Engine, Fixture, org_fields};

use fleetmq_store::{
    AccountStore, ConfigBackend, ConfigFields, Device, DeviceFields, DeviceFilter, DeviceName,
    DeviceOrder, DeviceSearch, DeviceStore, KvBackend, OrgId, Page, PageRequest, Scope, StoreError,
    Unique,
};

fn device_fields(org: OrgId, n: u32) -> DeviceFields {
    support::device_fields(org, &format!("dev-{n}"), n, "")
}

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: 1000,
};

fn device_names_are_unique_per_organization_ignoring_case(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org a").id;
    let b = db.create_organization(org_fields("b")).expect("org b").id;
    db.create_device(device_fields(a, 1), None).expect("first");

    let mut same_name_upper = device_fields(a, 2);
    same_name_upper.name = DeviceName::parse("DEV-1").expect("valid");
    let err = db
        .create_device(same_name_upper.clone(), None)
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Unique(Unique::DeviceName)));

    same_name_upper.organization = b;
    db.create_device(same_name_upper, None)
        .expect("same name in another org is fine");

    let mut same_mac = device_fields(a, 1);
    same_mac.name = DeviceName::parse("other").expect("valid");
    let err = db.create_device(same_mac, None).expect_err("duplicate mac");
    assert!(matches!(err, StoreError::Unique(Unique::DeviceMac)));
}

fn lists_are_newest_first_and_scoped_to_organizations(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org a").id;
    let b = db.create_organization(org_fields("b")).expect("org b").id;
    let mut created = Vec::new();
    for n in 0..6 {
        let org = if n % 2 == 0 { a } else { b };
        created.push(
            db.create_device(device_fields(org, n), None)
                .expect("device")
                .id,
        );
    }
    let newest_first: Vec<_> = created.iter().rev().copied().collect();

    let all = db
        .list_devices(&Scope::All, &DeviceFilter::default(), ALL)
        .expect("list");
    assert_eq!(all.count, 6);
    assert_eq!(
        all.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        newest_first
    );

    let both = db
        .list_devices(
            &Scope::Orgs(vec![a, b]),
            &DeviceFilter::default(),
            PageRequest {
                offset: 1,
                limit: 3,
            },
        )
        .expect("list");
    assert_eq!(both.count, 6);
    assert_eq!(
        both.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        newest_first[1..4]
    );

    let only_a = db
        .list_devices(&Scope::Orgs(vec![a]), &DeviceFilter::default(), ALL)
        .expect("list");
    assert_eq!(only_a.count, 3);
    assert!(only_a.items.iter().all(|d| d.fields.organization == a));
}

fn filters_count_only_matching_devices(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org").id;
    let wisp = ConfigFields {
        backend: ConfigBackend::OpenWisp,
        templates: vec![],
        context: Default::default(),
        config: Default::default(),
    };
    db.create_device(device_fields(a, 1), Some(wisp))
        .expect("device");
    let plain = db.create_device(device_fields(a, 2), None).expect("device");
    assert!(
        plain.config.is_none(),
        "a default-only config is not created"
    );

    let filter = DeviceFilter {
        config_backend: Some(ConfigBackend::OpenWisp),
        ..Default::default()
    };
    let page = db.list_devices(&Scope::All, &filter, ALL).expect("list");
    assert_eq!(page.count, 1);

    let after = DeviceFilter {
        created_gte: Some(plain.created),
        ..Default::default()
    };
    let page = db.list_devices(&Scope::All, &after, ALL).expect("list");
    assert_eq!(
        page.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![plain.id]
    );
}

fn names(page: &Page<Device>) -> Vec<&str> {
    page.items.iter().map(|d| d.fields.name.as_str()).collect()
}

fn search(text: &str) -> DeviceFilter {
    DeviceFilter {
        search: DeviceSearch::new(text),
        ..Default::default()
    }
}

fn a_search_finds_part_of_a_name_mac_or_id_only_within_the_scope(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org a").id;
    let b = db.create_organization(org_fields("b")).expect("org b").id;
    let lobby = db
        .create_device(support::device_fields(a, "Lobby-Router", 0x1a2b, ""), None)
        .expect("device");
    db.create_device(support::device_fields(a, "kitchen-ap", 2, ""), None)
        .expect("device");
    let foreign = db
        .create_device(support::device_fields(b, "lobby-b", 3, ""), None)
        .expect("device");
    let only_a = Scope::Orgs(vec![a]);

    let found = db
        .list_devices(&only_a, &search("LOBBY"), ALL)
        .expect("list");
    assert_eq!(names(&found), ["Lobby-Router"]);
    assert_eq!(found.count, 1, "B's lobby-b is not A's to find");
    let everywhere = db
        .list_devices(&Scope::All, &search("lobby"), ALL)
        .expect("list");
    assert_eq!(names(&everywhere), ["lobby-b", "Lobby-Router"]);

    // The MAC address 02:00:00:00:1A:2B, written three ways, and part of the id.
    for text in ["00:1a:2b", "00-1A-2B", "001a2b"] {
        let found = db.list_devices(&only_a, &search(text), ALL).expect("list");
        assert_eq!(names(&found), ["Lobby-Router"], "{text}");
    }
    let id = lobby.id.0.to_string();
    let found = db
        .list_devices(&only_a, &search(&id[..13]), ALL)
        .expect("list");
    assert_eq!(names(&found), ["Lobby-Router"]);
    let theirs = foreign.id.0.to_string();
    let found = db
        .list_devices(&only_a, &search(&theirs), ALL)
        .expect("list");
    assert_eq!(
        found.count, 0,
        "another organization's device is not found by its id"
    );
}

fn a_model_filter_and_name_orders_page_like_the_default_list(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org").id;
    let b = db.create_organization(org_fields("b")).expect("org").id;
    for (n, (name, model)) in [
        ("delta", "tl-wr841"),
        ("Alpha", "tl-wr841"),
        ("charlie", "archer-c7"),
        ("bravo", "tl-wr841"),
    ]
    .into_iter()
    .enumerate()
    {
        db.create_device(support::device_fields(a, name, n as u32, model), None)
            .expect("device");
    }
    db.create_device(support::device_fields(b, "aardvark", 9, "tl-wr841"), None)
        .expect("device");
    let only_a = Scope::Orgs(vec![a]);
    let list = |filter: DeviceFilter, page: PageRequest| {
        db.list_devices(&only_a, &filter, page).expect("list")
    };
    let ordered = |order: DeviceOrder| DeviceFilter {
        order,
        ..Default::default()
    };

    let model = DeviceFilter {
        model: Some("tl-wr841".into()),
        ..Default::default()
    };
    let wr841 = list(model.clone(), ALL);
    assert_eq!(wr841.count, 3);
    assert_eq!(names(&wr841), ["bravo", "Alpha", "delta"], "newest first");

    assert_eq!(
        names(&list(ordered(DeviceOrder::NameAscending), ALL)),
        ["Alpha", "bravo", "charlie", "delta"],
        "by name, ignoring case"
    );
    assert_eq!(
        names(&list(ordered(DeviceOrder::NameDescending), ALL)),
        ["delta", "charlie", "bravo", "Alpha"]
    );
    assert_eq!(
        names(&list(ordered(DeviceOrder::OldestFirst), ALL)),
        ["delta", "Alpha", "charlie", "bravo"]
    );
    let second = list(
        DeviceFilter {
            order: DeviceOrder::NameAscending,
            ..model
        },
        PageRequest {
            offset: 1,
            limit: 1,
        },
    );
    assert_eq!((second.count, names(&second)), (3, vec!["bravo"]));
    // Asking for the default order is the default list.
    assert_eq!(
        list(ordered(DeviceOrder::NewestFirst), ALL),
        list(DeviceFilter::default(), ALL)
    );
}

fn data_survives_reopening_and_deleting_an_org_removes_its_devices(engine: Engine) {
    let store = Fixture::new(engine);
    let (org, device) = {
        let db = store.open();
        let org = db.create_organization(org_fields("a")).expect("org").id;
        (
            org,
            db.create_device(device_fields(org, 1), None)
                .expect("device"),
        )
    };
    let db = store.open();
    assert_eq!(db.device(device.id).expect("read"), Some(device.clone()));
    assert_eq!(
        db.device_by_key(device.fields.key.as_str())
            .expect("read")
            .map(|d| d.id),
        Some(device.id)
    );
    db.delete_organization(org).expect("delete");
    assert_eq!(db.device(device.id).expect("read"), None);
    assert_eq!(
        db.list_devices(&Scope::All, &DeviceFilter::default(), ALL)
            .expect("list")
            .count,
        0
    );
}

#[test]
fn a_second_process_cannot_open_a_held_data_file() {
    let store = Fixture::new(Engine::Redb);
    let _held = store.open();
    let second = KvBackend::open(store.dir.path());
    assert!(matches!(second, Err(StoreError::InUse)));
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let store = Fixture::new(Engine::Redb);
    drop(store.open());
    {
        let db = redb::Database::create(store.dir.path().join("fleetmq.redb")).expect("raw open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(fleetmq_store::tables::META)
            .expect("meta")
            .insert("schema_version", 99)
            .expect("write");
        txn.commit().expect("commit");
    }
    let err = KvBackend::open(store.dir.path()).err().expect("refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_schema_8_data_file_gets_devices_briefs_and_its_devices_still_log_in() {
    let store = Fixture::new(Engine::Redb);
    let (id, key) = {
        let db = store.open();
        let org = db.create_organization(org_fields("acme")).expect("org");
        let mut fields = device_fields(org.id, 1);
        fields.last_ip = Some("192.0.2.7".parse().expect("ip"));
        let device = db.create_device(fields, None).expect("device");
        (device.id, device.fields.key)
    };
    {
        // As a build before briefs left it: the devices' records, no briefs.
        let db = redb::Database::create(store.dir.path().join("fleetmq.redb")).expect("raw open");
        let txn = db.begin_write().expect("txn");
        txn.delete_table(fleetmq_store::tables::DEVICE_BRIEFS)
            .expect("drop briefs");
        txn.open_table(fleetmq_store::tables::META)
            .expect("meta")
            .insert("schema_version", 8)
            .expect("write");
        txn.commit().expect("commit");
    }
    let db = store.open();
    let login = db.device_login(id).expect("read").expect("known device");
    assert!(login.key.matches(key.as_str().as_bytes()));
    assert!(!login.deactivated);
    assert_eq!(login.org_slug, "acme");
    let device = db.device(id).expect("read").expect("exists");
    assert_eq!(
        device.fields.last_ip,
        Some("192.0.2.7".parse().expect("ip"))
    );
    assert_eq!(
        db.device_brief(id).expect("read").expect("filled").last_ip,
        device.fields.last_ip
    );
}

fn a_user_change_is_seen_through_the_token_cache_at_once(engine: Engine) {
    use fleetmq_store::{Password, UserFields, Username};
    let store = Fixture::new(engine);
    let db = store.open();
    let fields = UserFields {
        username: Username::parse("olga").expect("valid"),
        email: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        is_superuser: false,
        is_active: true,
        groups: vec![],
        memberships: vec![],
    };
    let user = db
        .create_user(
            fields.clone(),
            Password::parse("long-password").expect("valid"),
        )
        .expect("user");
    let token = db.create_token(user.id).expect("token");
    assert!(
        db.cached_user_for_token(token.as_str()).is_none(),
        "nothing cached before a read"
    );
    db.user_for_token(token.as_str()).expect("read");
    assert_eq!(
        db.cached_user_for_token(token.as_str()).map(|u| u.id),
        Some(user.id)
    );

    let inactive = UserFields {
        is_active: false,
        ..fields
    };
    db.update_user(user.id, inactive, None).expect("update");
    assert!(
        db.cached_user_for_token(token.as_str()).is_none(),
        "the update emptied the cache"
    );
    let fresh = db
        .user_for_token(token.as_str())
        .expect("read")
        .expect("still the token's user");
    assert!(!fresh.fields.is_active);

    db.delete_user(user.id).expect("delete");
    assert!(db.cached_user_for_token(token.as_str()).is_none());
    assert!(
        db.user_for_token(token.as_str()).expect("read").is_none(),
        "tokens go with their user"
    );
}

fn deep_pages_match_a_full_walk_before_and_after_writes(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let a = db.create_organization(org_fields("a")).expect("org").id;
    let b = db.create_organization(org_fields("b")).expect("org").id;
    let batch: Vec<_> = (0..1234u32)
        .map(|n| (device_fields(if n % 3 == 0 { b } else { a }, n), None))
        .collect();
    db.create_devices(batch).expect("devices");

    let check = |scope: &Scope| {
        let everything = db
            .list_devices(
                scope,
                &DeviceFilter::default(),
                PageRequest {
                    offset: 0,
                    limit: 10_000,
                },
            )
            .expect("list")
            .items;
        for offset in [0, 1, 499, 500, 501, 777, 999, 1000, 1001, 1233, 1234, 5000] {
            let page = db
                .list_devices(
                    scope,
                    &DeviceFilter::default(),
                    PageRequest { offset, limit: 7 },
                )
                .expect("page");
            let expected: Vec<_> = everything
                .iter()
                .skip(offset as usize)
                .take(7)
                .map(|d| d.id)
                .collect();
            assert_eq!(
                page.items.iter().map(|d| d.id).collect::<Vec<_>>(),
                expected,
                "offset {offset}"
            );
        }
    };
    check(&Scope::All);
    check(&Scope::Orgs(vec![a]));

    // Writes invalidate the anchors: newer devices shift every page.
    let newest = db
        .create_device(device_fields(a, 5000), None)
        .expect("device");
    let second = db
        .list_devices(
            &Scope::All,
            &DeviceFilter::default(),
            PageRequest {
                offset: 0,
                limit: 1,
            },
        )
        .expect("page");
    assert_eq!(second.items[0].id, newest.id);
    check(&Scope::All);
    db.delete_device(newest.id).expect("delete");
    check(&Scope::Orgs(vec![a]));
}

on_both_engines!(
    device_names_are_unique_per_organization_ignoring_case,
    lists_are_newest_first_and_scoped_to_organizations,
    filters_count_only_matching_devices,
    a_search_finds_part_of_a_name_mac_or_id_only_within_the_scope,
    a_model_filter_and_name_orders_page_like_the_default_list,
    data_survives_reopening_and_deleting_an_org_removes_its_devices,
    a_user_change_is_seen_through_the_token_cache_at_once,
    deep_pages_match_a_full_walk_before_and_after_writes,
);
