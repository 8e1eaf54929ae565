//! The device plane's persistence: sessions and presence history, coordinates, commands and
//! telemetry.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use fleetmq_store::{
    AccountStore, CommandStatus, CommandType, Connector, DeviceFields, DeviceFilter, DevicePlane,
    DeviceStore, HistoryPage, HistoryPageRequest, KvBackend, MacAddress, MqttSession, NewCommand,
    OrgId, OrganizationFields, PageRequest, Point, Presence, Scope, Slug, TelemetryRange,
    TelemetrySample, Timestamp,
};

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: 1000,
};

fn setup(engine: Engine) -> (Fixture, KvBackend, OrgId) {
    let store = Fixture::new(engine);
    let db = store.open();
    let org = db
        .create_organization(OrganizationFields {
            name: "A".into(),
            slug: Slug::parse("a").expect("slug"),
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        })
        .expect("org")
        .id;
    (store, db, org)
}

fn device(db: &KvBackend, org: OrgId, name: &str, mac: &str) -> fleetmq_store::Device {
    db.create_device(
        DeviceFields {
            mac_address: MacAddress::parse(mac).expect("mac"),
            ..support::device_fields(org, name, 0, "")
        },
        None,
    )
    .expect("device")
}

fn session(online: bool) -> MqttSession {
    MqttSession {
        online,
        failure_reason: if online {
            String::new()
        } else {
            "connection lost".into()
        },
        peer_ip: Some("127.0.0.7".parse().expect("ip")),
        model: Some("TL-WR841N".into()),
        os: None,
        system: Some("MT7628".into()),
        at: Timestamp::now(),
    }
}

fn a_device_gets_its_mqtt_connection_when_created_and_sessions_keep_its_health(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let connections = db.list_connections(d.id, ALL).expect("list");
    assert_eq!(connections.count, 1, "the device key's connection");
    let created = connections.items[0].clone();
    assert_eq!(created.health.is_working, None, "not tried yet");
    let credentials = db
        .credentials(created.fields.credentials)
        .expect("read")
        .expect("exists");
    assert_eq!(credentials.fields.organization, Some(org));
    assert_eq!(credentials.fields.connector, Connector::Mqtt);

    let online = session(true);
    db.record_mqtt_session(d.id, online.clone())
        .expect("online");
    let connection = db.connection(created.id).expect("read").expect("exists");
    assert_eq!(connection.health.is_working, Some(true));
    assert_eq!(connection.health.last_attempt, Some(online.at));
    assert_eq!(connection.modified, online.at, "modified by the session");

    let updated = db.device(d.id).expect("read").expect("exists");
    assert_eq!(
        updated.fields.last_ip,
        Some("127.0.0.7".parse().expect("ip"))
    );
    assert_eq!(updated.fields.model, "TL-WR841N");
    assert_eq!(updated.fields.system, "MT7628");
    let listed = db
        .list_devices(&Scope::Orgs(vec![org]), &DeviceFilter::default(), ALL)
        .expect("list");
    assert_eq!(listed.items[0].fields.last_ip, updated.fields.last_ip);

    db.record_mqtt_session(d.id, session(false))
        .expect("offline");
    let connections = db.list_connections(d.id, ALL).expect("list");
    assert_eq!(connections.count, 1, "the same connection is reused");
    assert_eq!(connections.items[0].id, created.id);
    assert_eq!(connections.items[0].health.is_working, Some(false));
    assert_eq!(
        connections.items[0].health.failure_reason,
        "connection lost"
    );

    // An update through the API keeps the health the sessions left.
    let mut fields = connections.items[0].fields.clone();
    fields.enabled = false;
    let disabled = db.update_connection(created.id, fields).expect("update");
    assert_eq!(disabled.health.is_working, Some(false));
    assert!(
        !db.connection(created.id)
            .expect("read")
            .expect("exists")
            .fields
            .enabled
    );

    // Deleted, it comes back at the device's next connect, without the old health.
    db.delete_connection(created.id).expect("delete");
    assert_eq!(db.list_connections(d.id, ALL).expect("list").count, 0);
    db.record_mqtt_session(d.id, session(true)).expect("online");
    let again = db.list_connections(d.id, ALL).expect("list");
    assert_eq!(again.count, 1);
    assert_ne!(again.items[0].id, created.id);
    assert_eq!(again.items[0].health.is_working, Some(true));

    let _second = device(&db, org, "r2", "00:00:00:00:00:02");
    let shared = db
        .list_credentials(&Scope::Orgs(vec![org]), ALL)
        .expect("list");
    assert_eq!(
        shared.count, 1,
        "one MQTT credentials object per organization"
    );
}

fn presence_follows_sessions_and_filters_the_list(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let seen = device(&db, org, "seen", "00:00:00:00:00:01");
    let never = device(&db, org, "never", "00:00:00:00:00:02");
    let online_filter = |online| DeviceFilter {
        is_online: Some(online),
        ..Default::default()
    };
    let listed = |online| {
        db.list_devices(&Scope::Orgs(vec![org]), &online_filter(online), ALL)
            .expect("list")
            .items
            .iter()
            .map(|d| d.fields.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        db.presence_of(&[seen.id, never.id]).expect("presence"),
        [Presence::default(); 2],
        "never connected: offline, since nobody knows when"
    );
    assert_eq!(listed(false), ["never", "seen"]);
    assert!(listed(true).is_empty());

    let connected = session(true);
    db.record_mqtt_session(seen.id, connected.clone())
        .expect("online");
    let unknown = fleetmq_store::DeviceId::new();
    assert_eq!(
        db.presence_of(&[never.id, seen.id, unknown])
            .expect("presence"),
        [
            Presence::default(),
            Presence {
                online: true,
                since: Some(connected.at),
            },
            Presence::default(),
        ],
        "in the order asked; an unknown device was never connected"
    );
    assert_eq!(listed(true), ["seen"]);
    assert_eq!(listed(false), ["never"]);

    let gone = session(false);
    db.record_mqtt_session(seen.id, gone.clone())
        .expect("offline");
    assert_eq!(
        db.presence_of(&[seen.id]).expect("presence"),
        [Presence {
            online: false,
            since: Some(gone.at),
        }]
    );
    assert_eq!(listed(false), ["never", "seen"]);
}

fn coordinates_create_one_mobile_location_and_then_move_it(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    assert!(db.device_location(d.id).expect("read").is_none());
    let first = db
        .set_device_coordinates(d.id, Point::new(12.5, 41.9).expect("point"))
        .expect("set");
    let moved = db
        .set_device_coordinates(d.id, Point::new(13.0, 42.0).expect("point"))
        .expect("set");
    assert_eq!(first.id, moved.id);
    assert!(moved.is_mobile);
    assert_eq!(
        db.device_location(d.id)
            .expect("read")
            .and_then(|l| l.geometry.and_then(|g| g.point())),
        Some(Point::new(13.0, 42.0).expect("point"))
    );
    let with_geo = DeviceFilter {
        with_geo: Some(true),
        ..Default::default()
    };
    assert_eq!(
        db.list_devices(&Scope::All, &with_geo, ALL)
            .expect("list")
            .count,
        1
    );
}

fn a_command_ends_once_and_leaves_the_pending_list(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let command = db
        .create_command(NewCommand {
            device: d.id,
            connection: None,
            kind: CommandType::Reboot,
            input: serde_json::Value::Null,
        })
        .expect("command");
    assert_eq!(db.pending_commands(Some(d.id)).expect("pending").len(), 1);
    let done = db
        .finish_command(command.id, CommandStatus::Success, "ok".into())
        .expect("finish");
    assert_eq!(done.map(|c| c.status), Some(CommandStatus::Success));
    let again = db
        .finish_command(command.id, CommandStatus::Failed, "late".into())
        .expect("finish");
    assert!(again.is_none(), "a late answer changes nothing");
    assert_eq!(
        db.command(command.id).expect("read").map(|c| c.output),
        Some("ok".to_owned())
    );
    assert!(db.pending_commands(None).expect("pending").is_empty());
}

fn telemetry_keeps_the_latest_and_a_bounded_history(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let sample = |micros: i64, cpu: i64| TelemetrySample {
        device: d.id,
        timestamp: Timestamp::from_micros(micros),
        received: Timestamp::now(),
        metrics: serde_json::json!({"cpu": cpu})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    db.append_telemetry(
        (1..=5).map(|i| sample(i * 1_000_000, i)).collect(),
        Timestamp::from_micros(0),
        u64::MAX,
    )
    .expect("append");
    assert_eq!(
        db.latest_telemetry(d.id)
            .expect("read")
            .map(|s| s.metrics["cpu"].clone()),
        Some(serde_json::json!(5))
    );
    let history = db
        .telemetry_history(d.id, TelemetryRange::default(), ALL)
        .expect("read");
    assert_eq!(history.count, 5);
    assert_eq!(history.items[0].metrics["cpu"], 5, "newest first");

    let ranged = TelemetryRange {
        since: Some(Timestamp::from_micros(2_000_000)),
        until: Some(Timestamp::from_micros(4_000_000)),
    };
    assert_eq!(
        db.telemetry_history(d.id, ranged, ALL).expect("read").count,
        2
    );

    // An older sample arriving late does not replace the latest; retention drops old history.
    db.append_telemetry(
        vec![sample(500_000, 0)],
        Timestamp::from_micros(3_000_000),
        u64::MAX,
    )
    .expect("append");
    assert_eq!(
        db.latest_telemetry(d.id)
            .expect("read")
            .map(|s| s.metrics["cpu"].clone()),
        Some(serde_json::json!(5))
    );
    assert_eq!(
        db.telemetry_history(d.id, TelemetryRange::default(), ALL)
            .expect("read")
            .count,
        3
    );

    db.set_device_deactivated(d.id, true).expect("deactivate");
    db.delete_device(d.id).expect("delete");
    assert!(
        db.latest_telemetry(d.id).expect("read").is_none(),
        "telemetry goes with the device"
    );
}

fn a_batch_of_sessions_applies_in_order_and_skips_deleted_devices(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let gone = device(&db, org, "r2", "00:00:00:00:00:02");
    db.set_device_deactivated(gone.id, true)
        .expect("deactivate");
    db.delete_device(gone.id).expect("delete");
    db.record_mqtt_sessions(vec![
        (d.id, session(true)),
        (gone.id, session(true)),
        (d.id, session(false)),
    ])
    .expect("one transaction for all");
    let connection = &db.list_connections(d.id, ALL).expect("list").items[0];
    assert_eq!(
        connection.health.is_working,
        Some(false),
        "the later event wins"
    );
    assert_eq!(
        db.device(d.id)
            .expect("read")
            .and_then(|d| d.fields.last_ip),
        Some("127.0.0.7".parse().expect("ip")),
        "the connect recorded the address"
    );
}

/// A session change at `micros`, online from 192.0.2.1 or gone for "keepalive timeout".
fn session_at(online: bool, micros: i64) -> MqttSession {
    MqttSession {
        online,
        failure_reason: "keepalive timeout".into(),
        peer_ip: Some("192.0.2.1".parse().expect("ip")),
        model: None,
        os: None,
        system: None,
        at: Timestamp::from_micros(micros),
    }
}

/// A presence change as the tests compare it: online, time in µs, reason, address.
type Change = (bool, i64, String, Option<std::net::IpAddr>);

/// A page of a device's presence history (newest first) with the history's size.
fn presence_rows(
    db: &KvBackend,
    device: fleetmq_store::DeviceId,
    page: PageRequest,
) -> (u64, Vec<Change>) {
    let page = db.presence_history(device, page).expect("history");
    let rows = page
        .items
        .into_iter()
        .map(|c| (c.online, c.at.as_micros(), c.reason, c.peer_ip))
        .collect();
    (page.count, rows)
}

fn presence_history_lists_only_changes_newest_first(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let other = device(&db, org, "r2", "00:00:00:00:00:02");
    assert_eq!(
        presence_rows(&db, d.id, ALL),
        (0, vec![]),
        "never connected"
    );

    db.record_mqtt_session(d.id, session_at(true, 1_000))
        .expect("online");
    db.record_mqtt_session(d.id, session_at(true, 2_000))
        .expect("online again: no change");
    db.record_mqtt_session(d.id, session_at(false, 3_000))
        .expect("offline");
    db.record_mqtt_sessions(vec![
        (d.id, session_at(false, 4_000)),
        (other.id, session_at(true, 4_500)),
        (d.id, session_at(true, 5_000)),
    ])
    .expect("a batch");

    let ip = Some("192.0.2.1".parse().expect("ip"));
    let none = String::new();
    let lost = "keepalive timeout".to_owned();
    assert_eq!(
        presence_rows(&db, d.id, ALL),
        (
            3,
            vec![
                (true, 5_000, none.clone(), ip),
                (false, 3_000, lost.clone(), None),
                (true, 1_000, none.clone(), ip),
            ]
        ),
        "one row per change, newest first; a reason only when offline, an address only online"
    );
    let second = PageRequest {
        offset: 1,
        limit: 1,
    };
    assert_eq!(
        presence_rows(&db, d.id, second),
        (3, vec![(false, 3_000, lost, None)])
    );
    let beyond = PageRequest {
        offset: 3,
        limit: 10,
    };
    assert_eq!(presence_rows(&db, d.id, beyond), (3, vec![]));
    assert_eq!(
        presence_rows(&db, other.id, ALL),
        (1, vec![(true, 4_500, none, ip)]),
        "each device its own history"
    );
}

fn presence_history_keeps_the_newest_changes_within_its_bound(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let bound = fleetmq_store::PRESENCE_HISTORY_LEN;
    let changes = bound + 5;
    // Alternating, so every session is a change: online at 0, offline at 1, ...
    let micros = |i: u64| i64::try_from(i).expect("small") * 1_000;
    db.record_mqtt_sessions(
        (0..changes)
            .map(|i| (d.id, session_at(i.is_multiple_of(2), micros(i))))
            .collect(),
    )
    .expect("one transaction");
    db.record_mqtt_session(d.id, session_at(changes.is_multiple_of(2), micros(changes)))
        .expect("one more, alone");

    let page = |offset| PageRequest { offset, limit: 100 };
    let (count, newest) = presence_rows(&db, d.id, page(0));
    assert_eq!(count, bound, "the bound holds");
    assert_eq!(newest[0].1, micros(changes), "the newest is kept");
    let (_, oldest) = presence_rows(&db, d.id, page(bound - 1));
    assert_eq!(
        oldest.iter().map(|r| r.1).collect::<Vec<_>>(),
        [micros(changes + 1 - bound)],
        "the oldest went first"
    );
}

fn deleting_a_device_or_its_organization_drops_its_presence_history(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let deleted = device(&db, org, "r1", "00:00:00:00:00:01");
    let kept = device(&db, org, "r2", "00:00:00:00:00:02");
    for d in [deleted.id, kept.id] {
        db.record_mqtt_sessions(vec![(d, session_at(true, 1)), (d, session_at(false, 2))])
            .expect("sessions");
    }
    db.set_device_deactivated(deleted.id, true)
        .expect("deactivate");
    db.delete_device(deleted.id).expect("delete");
    assert_eq!(presence_rows(&db, deleted.id, ALL).0, 0, "gone with it");
    assert_eq!(
        presence_rows(&db, kept.id, ALL).0,
        2,
        "another device's stays"
    );

    db.delete_organization(org)
        .expect("delete the organization");
    assert_eq!(
        presence_rows(&db, kept.id, ALL).0,
        0,
        "gone with its organization"
    );
}

/// A sample whose metrics carry `pad` bytes of text.
fn padded(device: fleetmq_store::DeviceId, micros: i64, pad: usize) -> TelemetrySample {
    TelemetrySample {
        device,
        timestamp: Timestamp::from_micros(micros),
        received: Timestamp::now(),
        metrics: serde_json::json!({"seq": micros, "pad": "x".repeat(pad)})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

fn stored_size(sample: &TelemetrySample) -> u64 {
    serde_json::to_vec(sample).map_or(0, |v| v.len() as u64)
}

fn a_devices_history_keeps_its_newest_samples_within_its_byte_bound(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let other = device(&db, org, "r2", "00:00:00:00:00:02");
    let one = stored_size(&padded(d.id, 1_000_000, 1000));
    let bound = 5 * one + one / 2;
    let keep_all = Timestamp::from_micros(0);
    // Twenty samples in one batch, then one more: only the newest five fit.
    let batch = (1..=20).map(|i| padded(d.id, i * 1_000_000, 1000));
    db.append_telemetry(
        batch.chain([padded(other.id, 1_000_000, 1000)]).collect(),
        keep_all,
        bound,
    )
    .expect("append");
    db.append_telemetry(vec![padded(d.id, 21_000_000, 1000)], keep_all, bound)
        .expect("append");
    let history = db
        .telemetry_history(d.id, TelemetryRange::default(), ALL)
        .expect("read");
    let kept: Vec<i64> = history
        .items
        .iter()
        .map(|s| s.timestamp.as_micros() / 1_000_000)
        .collect();
    assert_eq!(
        kept,
        [21, 20, 19, 18, 17],
        "the newest samples, oldest dropped"
    );
    assert_eq!(
        db.latest_telemetry(d.id)
            .expect("read")
            .map(|s| s.timestamp.as_micros()),
        Some(21_000_000)
    );
    assert_eq!(
        db.telemetry_history(other.id, TelemetryRange::default(), ALL)
            .expect("read")
            .count,
        1,
        "other devices keep theirs"
    );

    // The bound follows the flag: lowered, the next write trims to it.
    db.append_telemetry(
        vec![padded(d.id, 22_000_000, 1000)],
        keep_all,
        2 * one + one / 2,
    )
    .expect("append");
    assert_eq!(
        db.telemetry_history(d.id, TelemetryRange::default(), ALL)
            .expect("read")
            .count,
        2
    );
}

fn history_pages_end_at_their_byte_budget_and_continue_on_the_next(engine: Engine) {
    let (_store, db, org) = setup(engine);
    let d = device(&db, org, "r1", "00:00:00:00:00:01");
    let one = stored_size(&padded(d.id, 1_000_000, 1000));
    db.append_telemetry(
        (1..=10)
            .map(|i| padded(d.id, i * 1_000_000, 1000))
            .collect(),
        Timestamp::from_micros(0),
        u64::MAX,
    )
    .expect("append");
    let page = |number: u64, size: u64, max_bytes: u64| {
        db.telemetry_page(
            d.id,
            TelemetryRange::default(),
            HistoryPageRequest {
                number,
                size,
                max_bytes,
            },
        )
        .expect("read")
    };
    let seconds = |p: &HistoryPage| -> Vec<i64> {
        p.items
            .iter()
            .map(|s| s.timestamp.as_micros() / 1_000_000)
            .collect()
    };

    // A budget of three samples: pages of three, newest first, until the last.
    let mut seen = Vec::new();
    for number in 1..=4 {
        let p = page(number, 100, 3 * one + one / 2);
        assert_eq!(p.count, 10);
        assert_eq!(p.more, number < 4, "page {number}");
        seen.extend(seconds(&p));
    }
    assert_eq!(seen, (1..=10).rev().collect::<Vec<_>>());
    assert!(page(5, 100, 3 * one + one / 2).items.is_empty());

    // The item limit still applies, and a budget smaller than one sample still serves one.
    assert_eq!(seconds(&page(1, 4, u64::MAX)), [10, 9, 8, 7]);
    assert_eq!(seconds(&page(2, 4, u64::MAX)), [6, 5, 4, 3]);
    assert_eq!(seconds(&page(2, 100, 1)), [9]);
}

on_both_engines!(
    a_device_gets_its_mqtt_connection_when_created_and_sessions_keep_its_health,
    presence_follows_sessions_and_filters_the_list,
    coordinates_create_one_mobile_location_and_then_move_it,
    a_command_ends_once_and_leaves_the_pending_list,
    telemetry_keeps_the_latest_and_a_bounded_history,
    a_batch_of_sessions_applies_in_order_and_skips_deleted_devices,
    a_devices_history_keeps_its_newest_samples_within_its_byte_bound,
    history_pages_end_at_their_byte_budget_and_continue_on_the_next,
    presence_history_lists_only_changes_newest_first,
    presence_history_keeps_the_newest_changes_within_its_bound,
    deleting_a_device_or_its_organization_drops_its_presence_history,
);
