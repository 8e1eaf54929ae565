//! Several nodes on one PostgreSQL database: what one node commits reaches the others' caches
//! and broadcasts through the database's notices, atomically with the commit, without any
//! request on them; a node whose listener lost its connection starts over and hears again.
//!
//! Each test opens two nodes (two stores) on a fresh database of a throwaway server; a wait
//! for something another node caused polls with a deadline, never sleeps a fixed time.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmq_store::blob::BlobStore;
use fleetmq_store::kv::{Database, ReadableTable, RemoteCommit, TableDefinition};
use fleetmq_store::migrate::Location;
use fleetmq_store::{
    ConfigBackend, ConfigChange, ConfigFields, DeviceFields, LiveEvent, LoginChange, OrgId,
    Password, PostgresOptions, RemoteChange, Store, Token, User, UserFields, Username,
};
use support::{Engine, Fixture, org_fields as org};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// How long another node's commit may take to show here: far more than it needs (a few
/// milliseconds), so a slow machine does not fail the test.
const DEADLINE: Duration = Duration::from_secs(10);

/// One node: a store, and its id in the notices.
struct Node {
    store: Store,
    id: String,
}

impl Node {
    fn open(fixture: &Fixture, name: &str) -> Self {
        let backend = fixture.open();
        let id = backend
            .node()
            .expect("a PostgreSQL node has an id")
            .to_owned();
        let dir = fixture.dir.path().join(name);
        let blobs = BlobStore::open(&dir.join("firmware")).expect("blobs");
        let floorplans = BlobStore::open(&dir.join("floorplans")).expect("floor plans");
        Self {
            store: Store::with_backend(Arc::new(backend), blobs, floorplans),
            id,
        }
    }

    fn db(&self) -> &dyn fleetmq_store::Backend {
        self.store.blocking()
    }
}

/// Two nodes sharing a fresh database.
fn cluster() -> (Fixture, Node, Node) {
    let fixture = Fixture::new(Engine::Postgres);
    let a = Node::open(&fixture, "a");
    let b = Node::open(&fixture, "b");
    assert_ne!(a.id, b.id, "each node has an id of its own");
    (fixture, a, b)
}

fn postgres_options(fixture: &Fixture) -> PostgresOptions {
    match fixture.location() {
        Location::Postgres(options) => options,
        Location::Redb(_) => panic!("a PostgreSQL fixture"),
    }
}

/// Waits until `done` holds, polling.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next message of `rx`, waiting for it.
fn next<T: Clone>(rx: &mut broadcast::Receiver<T>, what: &str) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match rx.try_recv() {
            Ok(message) => return message,
            Err(TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: nothing within {DEADLINE:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Messages of `rx` until one `wanted` accepts, which is returned.
fn until<T: Clone + std::fmt::Debug>(
    rx: &mut broadcast::Receiver<T>,
    what: &str,
    mut wanted: impl FnMut(&T) -> bool,
) -> T {
    loop {
        let message = next(rx, what);
        if wanted(&message) {
            return message;
        }
    }
}

fn user_fields(name: &str) -> UserFields {
    UserFields {
        username: Username::parse(name).expect("valid"),
        email: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        is_superuser: false,
        is_active: true,
        groups: vec![],
        memberships: vec![],
    }
}

fn user_with_token(node: &Node, name: &str) -> (User, Token) {
    let user = node
        .db()
        .create_user(
            user_fields(name),
            Password::parse("long-password").expect("valid"),
        )
        .expect("user");
    let token = node.db().create_token(user.id).expect("token");
    (user, token)
}

/// A device with a configuration of its own, so that creating it renders it.
fn device(org: OrgId, n: u32) -> (DeviceFields, Option<ConfigFields>) {
    let fields = support::device_fields(org, &format!("dev-{n}"), n, "");
    let mut context = serde_json::Map::new();
    context.insert("site".into(), serde_json::Value::String(format!("s{n}")));
    let config = ConfigFields {
        backend: ConfigBackend::OpenWrt,
        templates: vec![],
        context,
        config: serde_json::Map::new(),
    };
    (fields, Some(config))
}

#[test]
fn a_token_revoked_on_one_node_stops_working_on_the_other_without_a_request() {
    let (_fixture, a, b) = cluster();
    let mut remote = a.db().remote_changes();
    let (user, token) = user_with_token(&b, "olga");
    // The token's own notice would empty node A's cache too: heard before caching.
    until(&mut remote, "the token's creation", |c| {
        c.concerns("tokens")
    });
    let seen = a.db().user_for_token(token.as_str()).expect("read");
    assert_eq!(seen.map(|u| u.id), Some(user.id));
    assert!(
        a.db().cached_user_for_token(token.as_str()).is_some(),
        "node A serves the token from its cache now"
    );

    b.db().delete_user(user.id).expect("deleted on node B");

    // Only the cache is asked (no I/O): what empties it is node B's notice.
    eventually("node A forgets the revoked token", || {
        a.db().cached_user_for_token(token.as_str()).is_none()
    });
    assert_eq!(
        a.db().user_for_token(token.as_str()).expect("read"),
        None,
        "the token no longer authenticates on node A"
    );
}

#[test]
fn a_device_deactivated_on_one_node_is_refused_by_the_other() {
    let (_fixture, a, b) = cluster();
    let mut changes = a.db().login_changes();
    let org = a.db().create_organization(org("acme")).expect("org");
    let (fields, config) = device(org.id, 1);
    let dev = a.db().create_device(fields, config).expect("device");
    let login = a.db().device_login(dev.id).expect("read").expect("a login");
    assert!(!login.deactivated);
    assert!(a.db().cached_device_login(dev.id).is_some(), "cached");

    b.db()
        .set_device_deactivated(dev.id, true)
        .expect("deactivated on node B");

    until(&mut changes, "node B's change announced on node A", |c| {
        *c == LoginChange::Device(dev.id)
    });
    // Announced only once the cache was emptied: a subscriber reading again sees the change.
    assert!(
        a.db()
            .cached_device_login(dev.id)
            .is_none_or(|login| login.deactivated),
        "no stale login cached"
    );
    let login = a.db().device_login(dev.id).expect("read").expect("a login");
    assert!(login.deactivated, "node A refuses the device now");
}

#[test]
fn changes_committed_on_one_node_are_announced_on_the_other() {
    let (_fixture, a, b) = cluster();
    let mut logins = a.db().login_changes();
    let mut configs = a.db().config_changes();
    let mut remote = a.db().remote_changes();
    let mut own_remote = b.db().remote_changes();

    let org = b.db().create_organization(org("acme")).expect("org");
    let created = b
        .db()
        .create_devices((0..3).map(|n| device(org.id, n)).collect())
        .expect("devices");
    let ids: Vec<_> = created.iter().map(|d| d.id).collect();

    let change = next(&mut configs, "the configuration change");
    assert_eq!(
        change.devices.iter().collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        next(&mut logins, "the login change"),
        LoginChange::DevicesAdded
    );
    let tables = until(&mut remote, "the devices' tables", |c| {
        c.concerns("devices")
    });
    assert!(
        matches!(&tables, RemoteChange::Tables(t) if t.iter().any(|t| t == "devices_by_org")),
        "{tables:?}"
    );

    let mut renamed = org.fields.clone();
    renamed.slug = fleetmq_store::Slug::parse("acme-2").expect("slug");
    b.db()
        .update_organization(org.id, renamed)
        .expect("renamed on node B");
    assert_eq!(
        next(&mut logins, "the organization change"),
        LoginChange::Organization {
            slug: "acme".into()
        }
    );
    assert!(
        matches!(own_remote.try_recv(), Err(TryRecvError::Empty)),
        "a node does not hear its own commits as remote"
    );
}

#[test]
fn a_notice_larger_than_a_payload_arrives_whole() {
    let (_fixture, a, b) = cluster();
    let mut configs = a.db().config_changes();
    let org = b.db().create_organization(org("acme")).expect("org");
    // 1,000 device ids: about 38 kB, several payloads.
    let created = b
        .db()
        .create_devices((0..1000).map(|n| device(org.id, n)).collect())
        .expect("devices");
    let change: ConfigChange = next(&mut configs, "the configuration change");
    let mut expected: Vec<_> = created.iter().map(|d| d.id).collect();
    expected.sort();
    assert_eq!(change.devices, expected, "one change, every device");
}

/// A kv table of the tests' own.
const NOTES: TableDefinition<&str, u64> = TableDefinition::new("notes");

#[test]
fn a_rolled_back_write_sends_nothing() {
    let fixture = Fixture::new(Engine::Postgres);
    let options = postgres_options(&fixture);
    let a = Database::postgres(&options).expect("node A");
    let b = Database::postgres(&options).expect("node B");
    let mut heard = a
        .remote_commits()
        .expect("PostgreSQL nodes hear each other");

    let txn = b.begin_write().expect("write");
    txn.open_table(NOTES)
        .expect("table")
        .insert("undone", 1)
        .expect("written");
    txn.announce("never".into());
    // Read back, so that the write reached the server before the rollback.
    assert!(
        txn.open_table(NOTES)
            .expect("table")
            .get("undone")
            .expect("read")
            .is_some()
    );
    drop(txn);

    let txn = b.begin_write().expect("write");
    txn.open_table(NOTES)
        .expect("table")
        .insert("kept", 2)
        .expect("written");
    txn.announce("marker".into());
    txn.commit().expect("committed");

    // Notices arrive in commit order: the first one heard is the commit's, nothing before.
    assert_eq!(
        next(&mut heard, "the committed write's notice"),
        RemoteCommit::Commit {
            tables: vec!["notes".into()],
            announcements: vec!["marker".into()],
        }
    );

    // A write transaction that changes nothing sends nothing either.
    b.begin_write().expect("write").commit().expect("committed");
    let txn = b.begin_write().expect("write");
    txn.announce("second marker".into());
    txn.commit().expect("committed");
    assert_eq!(
        next(&mut heard, "the next notice"),
        RemoteCommit::Commit {
            tables: vec![],
            announcements: vec!["second marker".into()],
        }
    );
}

/// Ends the listener connection of node `id` from outside, as a network fault or an
/// administrator would.
fn cut_listener(options: &PostgresOptions, id: &str) {
    let mut client = ::postgres::Client::connect(&options.url, ::postgres::NoTls).expect("connect");
    let name = format!("fleetmq-listener-{id}");
    eventually("the listener connection is cut", || {
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .expect("terminate");
        rows.iter().any(|row| row.get::<_, bool>(0))
    });
}

#[test]
fn a_node_whose_listener_was_cut_starts_over_and_hears_again() {
    let (fixture, a, b) = cluster();
    let mut remote = a.db().remote_changes();
    let org = b.db().create_organization(org("acme")).expect("org");
    let (fields, config) = device(org.id, 1);
    let dev = b.db().create_device(fields, config).expect("device");
    let (_, token) = user_with_token(&b, "olga");
    // Node B's notices heard before caching (they would empty the caches themselves).
    until(&mut remote, "the token's creation", |c| {
        c.concerns("tokens")
    });
    a.db().user_for_token(token.as_str()).expect("read");
    a.db().device_login(dev.id).expect("read");
    assert!(a.db().cached_user_for_token(token.as_str()).is_some());
    assert!(a.db().cached_device_login(dev.id).is_some());
    let mut logins = a.db().login_changes();

    cut_listener(&postgres_options(&fixture), &a.id);

    until(&mut remote, "node A says anything may have changed", |c| {
        *c == RemoteChange::Everything
    });
    assert!(
        a.db().cached_user_for_token(token.as_str()).is_none(),
        "tokens are read again"
    );
    assert!(
        a.db().cached_device_login(dev.id).is_none(),
        "device logins are read again"
    );
    let mut judged = BTreeSet::new();
    while judged.len() < 3 {
        judged.insert(format!(
            "{:?}",
            next(&mut logins, "every login judged again")
        ));
    }
    assert_eq!(
        judged,
        BTreeSet::from([
            format!("{:?}", LoginChange::Users),
            format!("{:?}", LoginChange::DevicesAdded),
            format!(
                "{:?}",
                LoginChange::Organization {
                    slug: "acme".into()
                }
            ),
        ])
    );

    // Listening again: a later commit of node B is heard.
    b.db()
        .set_device_deactivated(dev.id, true)
        .expect("deactivated on node B");
    until(&mut logins, "node B's change after the reconnection", |c| {
        *c == LoginChange::Device(dev.id)
    });
    assert!(
        a.db()
            .device_login(dev.id)
            .expect("read")
            .expect("a login")
            .deactivated
    );
}

#[test]
fn a_node_dropped_stops_listening() {
    let (fixture, a, _b) = cluster();
    let mut remote = a.db().remote_changes();
    let name = format!("fleetmq-listener-{}", a.id);
    drop(a);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match remote.try_recv() {
            Err(TryRecvError::Closed) => break,
            Err(TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "the follower ends with its node");
                std::thread::sleep(Duration::from_millis(5));
            }
            other => panic!("{other:?}"),
        }
    }
    let mut client =
        ::postgres::Client::connect(&postgres_options(&fixture).url, ::postgres::NoTls)
            .expect("connect");
    eventually("the listener connection closes", || {
        let rows = client
            .query(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .expect("count");
        rows[0].get::<_, i64>(0) == 0
    });
}

#[test]
fn redb_has_no_other_nodes() {
    let fixture = Fixture::new(Engine::Redb);
    let db = fixture.open();
    assert_eq!(db.node(), None);
    let mut remote = fleetmq_store::Backend::remote_changes(&db);
    let org = fleetmq_store::AccountStore::create_organization(&db, org("acme")).expect("org");
    assert!(
        fleetmq_store::AccountStore::organization(&db, org.id)
            .expect("read")
            .is_some()
    );
    assert!(matches!(remote.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn a_device_going_online_on_one_node_is_a_live_event_on_the_other() {
    let (_fixture, a, b) = cluster();
    let org = a.db().create_organization(org("acme")).expect("org");
    let (fields, config) = device(org.id, 1);
    let dev = a.db().create_device(fields, config).expect("device");
    let mut live = a.db().live_events();
    let session = |online| fleetmq_store::MqttSession {
        online,
        failure_reason: String::new(),
        peer_ip: None,
        model: None,
        os: None,
        system: None,
        at: fleetmq_store::Timestamp::now(),
    };
    b.db()
        .record_mqtt_session(dev.id, session(true))
        .expect("recorded on node B");
    let event = until(&mut live, "node B's presence heard on node A", |_| true);
    assert!(
        matches!(event, LiveEvent::Presence { device, organization, online: true, .. }
            if device == dev.id && organization == org.id),
        "{event:?}"
    );
    // The same state again is no event; the change back is.
    b.db()
        .record_mqtt_session(dev.id, session(true))
        .expect("recorded again");
    b.db()
        .record_mqtt_session(dev.id, session(false))
        .expect("offline");
    let event = until(&mut live, "the change back", |_| true);
    assert!(
        matches!(event, LiveEvent::Presence { online: false, .. }),
        "only changes are events: {event:?}"
    );
}

#[test]
fn a_batch_started_on_one_node_is_a_live_event_on_the_other() {
    let (_fixture, a, b) = cluster();
    let org = a.db().create_organization(org("acme")).expect("org");
    let dev = a
        .db()
        .create_device(support::device_fields(org.id, "ap-1", 1, "sim"), None)
        .expect("device");
    let category = a
        .db()
        .create_category(fleetmq_store::CategoryFields {
            organization: Some(org.id),
            name: "sim".into(),
            description: String::new(),
        })
        .expect("category");
    let build = a
        .db()
        .create_build(fleetmq_store::BuildFields {
            category: category.id,
            version: "2.0".into(),
            os: "OpenWrt".into(),
            changelog: String::new(),
        })
        .expect("build");
    let image = a
        .db()
        .create_image(fleetmq_store::Image {
            id: fleetmq_store::ImageId::new(),
            build: build.id,
            kind: "sim.bin".into(),
            size: 1,
            sha256: "ab".into(),
            created: fleetmq_store::Timestamp::now(),
        })
        .expect("image");
    let batch = fleetmq_store::Batch {
        id: fleetmq_store::BatchId::new(),
        build: build.id,
        organization: Some(org.id),
        rollout: Default::default(),
        counts: Default::default(),
        note: String::new(),
        created: fleetmq_store::Timestamp::now(),
        modified: fleetmq_store::Timestamp::now(),
    };
    let op = fleetmq_store::UpgradeOperation::new(&dev, &image, &build, Some(batch.id), 0);

    let mut live = a.db().live_events();
    b.db()
        .start_upgrades(fleetmq_store::UpgradePlan {
            batch: Some(batch.clone()),
            operations: vec![op],
        })
        .expect("started on node B");
    let event = until(&mut live, "node B's batch heard on node A", |e| {
        matches!(e, LiveEvent::Batch { .. })
    });
    assert!(
        matches!(event, LiveEvent::Batch { batch: id, organization, counts, total: 1, .. }
            if id == batch.id && organization == Some(org.id) && counts.in_progress == 1),
        "{event:?}"
    );
}
