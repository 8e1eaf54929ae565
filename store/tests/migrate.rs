//! `fleetmq store migrate`: a store copied to the other engine holds the same data, reads the
//! same through the backend, and an occupied target is refused untouched.

#[macro_use]
mod support;
use support::{Engine, Fixture, org_fields};

use fleetmq_store::migrate::migrate;
use fleetmq_store::{
    AccountStore, DeviceFilter, DevicePlane, DeviceStore, MqttSession, PageRequest, Password,
    Scope, StoreError, TelemetryRange, TelemetrySample, Timestamp, UserFields, Username,
};

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: 1000,
};

/// Organizations, devices, telemetry, presence history, a user and a token in a new store of
/// `engine`.
fn populated(engine: Engine) -> (Fixture, String) {
    let store = Fixture::new(engine);
    let db = store.open();
    let mut sessions = Vec::new();
    for slug in ["north", "south"] {
        let org = db.create_organization(org_fields(slug)).expect("org").id;
        for n in 0..30u32 {
            let device = db
                .create_device(
                    support::device_fields(org, &format!("{slug}-{n}"), n, "ap"),
                    None,
                )
                .expect("device");
            let samples = (1..=3)
                .map(|i| TelemetrySample {
                    device: device.id,
                    timestamp: Timestamp::from_micros(Timestamp::now().as_micros() - i * 1_000_000),
                    received: Timestamp::now(),
                    metrics: serde_json::json!({"cpu": i})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect();
            db.append_telemetry(samples, Timestamp::from_micros(0), u64::MAX)
                .expect("telemetry");
            sessions.extend([true, false].map(|online| {
                let session = MqttSession {
                    online,
                    failure_reason: "keepalive timeout".into(),
                    peer_ip: Some("192.0.2.1".parse().expect("ip")),
                    model: None,
                    os: None,
                    system: None,
                    at: Timestamp::now(),
                };
                (device.id, session)
            }));
        }
    }
    db.record_mqtt_sessions(sessions).expect("presence");
    let user = db
        .create_user(
            UserFields {
                username: Username::parse("olga").expect("username"),
                email: "olga@example.com".into(),
                first_name: String::new(),
                last_name: String::new(),
                is_superuser: true,
                is_active: true,
                groups: vec![],
                memberships: vec![],
            },
            Password::parse("long-password").expect("password"),
        )
        .expect("user");
    let token = db.create_token(user.id).expect("token");
    (store, token.as_str().to_owned())
}

fn other(engine: Engine) -> Engine {
    match engine {
        Engine::Redb => Engine::Postgres,
        Engine::Postgres => Engine::Redb,
    }
}

fn a_store_copied_to_the_other_engine_reads_the_same(engine: Engine) {
    let (source, token) = populated(engine);
    let target = Fixture::new(other(engine));
    let tables = migrate(&source.location(), &target.location()).expect("migrated");
    let devices = tables
        .iter()
        .find(|t| t.name == "devices")
        .expect("the devices table");
    assert_eq!(devices.entries, 60);
    assert!(
        tables
            .iter()
            .any(|t| t.name == "telemetry" && t.entries == 180)
    );

    let (before, after) = (source.open(), target.open());
    let list = |db: &fleetmq_store::KvBackend| {
        db.list_devices(&Scope::All, &DeviceFilter::default(), ALL)
            .expect("list")
    };
    let (listed, copied) = (list(&before), list(&after));
    assert_eq!(copied.count, 60);
    assert_eq!(copied.items, listed.items, "same devices, same order");
    let device = copied.items[7].id;
    assert_eq!(
        after
            .telemetry_history(device, TelemetryRange::default(), ALL)
            .expect("history"),
        before
            .telemetry_history(device, TelemetryRange::default(), ALL)
            .expect("history")
    );
    let presence = after.presence_history(device, ALL).expect("history");
    assert_eq!(presence.count, 2, "online, then offline");
    assert_eq!(
        presence,
        before.presence_history(device, ALL).expect("history")
    );
    let user = after
        .user_for_token(&token)
        .expect("read")
        .expect("the token still logs the user in");
    assert_eq!(user.fields.username.as_str(), "olga");
    // The copy is a working store: it takes writes and keeps its rules.
    let duplicate = after.create_device(copied.items[0].fields.clone(), None);
    assert!(
        matches!(duplicate, Err(StoreError::Unique(_))),
        "{duplicate:?}"
    );
}

fn a_target_holding_data_is_refused_and_left_as_it_was(engine: Engine) {
    let (source, _) = populated(engine);
    let (target, token) = populated(other(engine));
    let before = target
        .open()
        .list_devices(&Scope::All, &DeviceFilter::default(), ALL)
        .expect("list");
    let refused = migrate(&source.location(), &target.location());
    assert!(
        matches!(refused, Err(StoreError::TargetNotEmpty { .. })),
        "{refused:?}"
    );
    let db = target.open();
    assert_eq!(
        db.list_devices(&Scope::All, &DeviceFilter::default(), ALL)
            .expect("list"),
        before
    );
    assert!(db.user_for_token(&token).expect("read").is_some());
}

on_both_engines!(
    a_store_copied_to_the_other_engine_reads_the_same,
    a_target_holding_data_is_refused_and_left_as_it_was,
);
