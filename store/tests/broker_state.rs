//! The broker's rows in the store: what is applied loads back, deleting a session takes
//! exactly its queue with it, a batch applies in order, and everything survives a restart
//! (including of a data file written before the broker's tables existed).

#[macro_use]
mod support;
use support::{Engine, Fixture};

use fleetmq_store::{BrokerRowChange, BrokerRows, BrokerStateStore, Store};

fn retained(topic: &str, record: Option<&[u8]>) -> BrokerRowChange {
    BrokerRowChange::Retained {
        topic: topic.to_owned(),
        record: record.map(<[u8]>::to_vec),
    }
}

fn session(key: &str, record: Option<&[u8]>) -> BrokerRowChange {
    BrokerRowChange::Session {
        key: key.to_owned(),
        record: record.map(<[u8]>::to_vec),
    }
}

fn queued(key: &str, seq: u64, record: Option<&[u8]>) -> BrokerRowChange {
    BrokerRowChange::Queued {
        key: key.to_owned(),
        seq,
        record: record.map(<[u8]>::to_vec),
    }
}

/// The queued rows as (key, seq) pairs, sorted.
fn queued_keys(rows: &BrokerRows) -> Vec<(String, u64)> {
    let mut keys: Vec<_> = rows
        .queued
        .iter()
        .map(|(key, seq, _)| (key.clone(), *seq))
        .collect();
    keys.sort();
    keys
}

fn applied_rows_load_back_as_last_written(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    assert_eq!(
        db.load_broker_state().expect("load"),
        BrokerRows::default(),
        "a new store holds no broker state"
    );

    db.apply_broker_state(vec![
        retained("org/a/status", Some(b"online")),
        retained("org/b/status", Some(b"offline")),
        session("client-1", Some(b"subs v1")),
        queued("client-1", 1, Some(b"m1")),
        queued("client-1", 2, Some(b"m2")),
    ])
    .expect("first batch");
    db.apply_broker_state(vec![
        retained("org/a/status", Some(b"offline")),
        retained("org/b/status", None),
        session("client-1", Some(b"subs v2")),
        queued("client-1", 1, None),
        queued("client-1", 3, Some(b"m3")),
    ])
    .expect("second batch");

    let mut rows = db.load_broker_state().expect("load");
    rows.queued.sort();
    assert_eq!(
        rows,
        BrokerRows {
            retained: vec![("org/a/status".to_owned(), b"offline".to_vec())],
            sessions: vec![("client-1".to_owned(), b"subs v2".to_vec())],
            queued: vec![
                ("client-1".to_owned(), 2, b"m2".to_vec()),
                ("client-1".to_owned(), 3, b"m3".to_vec()),
            ],
        }
    );
}

fn deleting_a_session_deletes_exactly_its_queued_rows(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    let mut batch = Vec::new();
    // "a" is a prefix of "ab"; "" is a prefix of everything; "a\0" sorts right after "a".
    for key in ["", "a", "a\0", "ab", "b"] {
        batch.push(session(key, Some(b"subs")));
        for seq in [0, 7, u64::MAX] {
            batch.push(queued(key, seq, Some(b"msg")));
        }
    }
    db.apply_broker_state(batch).expect("setup");

    db.apply_broker_state(vec![session("a", None)])
        .expect("delete session a");

    let rows = db.load_broker_state().expect("load");
    let sessions: Vec<&str> = rows.sessions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(sessions, ["", "a\0", "ab", "b"]);
    let mut expected = Vec::new();
    for key in ["", "a\0", "ab", "b"] {
        for seq in [0, 7, u64::MAX] {
            expected.push((key.to_owned(), seq));
        }
    }
    assert_eq!(queued_keys(&rows), expected);
}

fn a_batch_applies_its_changes_in_order(engine: Engine) {
    let store = Fixture::new(engine);
    let db = store.open();
    db.apply_broker_state(vec![
        session("client-1", Some(b"old")),
        queued("client-1", 1, Some(b"stale")),
        // The session ends and a new one under the same key starts in the same batch: the
        // old queue goes, what was queued after the deletion stays.
        session("client-1", None),
        session("client-1", Some(b"new")),
        queued("client-1", 2, Some(b"fresh")),
        retained("t", Some(b"first")),
        retained("t", None),
        retained("t", Some(b"last")),
    ])
    .expect("batch");

    let rows = db.load_broker_state().expect("load");
    assert_eq!(rows.sessions, [("client-1".to_owned(), b"new".to_vec())]);
    assert_eq!(rows.queued, [("client-1".to_owned(), 2, b"fresh".to_vec())]);
    assert_eq!(rows.retained, [("t".to_owned(), b"last".to_vec())]);
}

fn broker_state_survives_reopening_the_store(engine: Engine) {
    let store = Fixture::new(engine);
    {
        let store = Store::open(store.dir.path()).expect("open");
        store
            .blocking()
            .apply_broker_state(vec![
                retained("org/a/status", Some(b"online")),
                session("client-1", Some(b"subs")),
                queued("client-1", 42, Some(b"m42")),
            ])
            .expect("apply");
    }

    let store = Store::open(store.dir.path()).expect("reopen");
    assert_eq!(
        store.blocking().load_broker_state().expect("load"),
        BrokerRows {
            retained: vec![("org/a/status".to_owned(), b"online".to_vec())],
            sessions: vec![("client-1".to_owned(), b"subs".to_vec())],
            queued: vec![("client-1".to_owned(), 42, b"m42".to_vec())],
        }
    );
}

#[test]
fn a_schema_6_data_file_opens_as_schema_7_and_keeps_broker_state() {
    let store = Fixture::new(Engine::Redb);
    let file = store.dir.path().join(fleetmq_store::kv_backend::DATA_FILE);
    {
        // A data file as a build before the broker's tables wrote it.
        let db = redb::Database::create(&file).expect("raw create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(fleetmq_store::tables::META)
            .expect("meta")
            .insert("schema_version", 6)
            .expect("write");
        txn.commit().expect("commit");
    }

    {
        let db = store.open();
        assert_eq!(db.load_broker_state().expect("load"), BrokerRows::default());
        db.apply_broker_state(vec![session("client-1", Some(b"subs"))])
            .expect("apply");
    }

    let version = {
        let db = redb::Database::create(&file).expect("raw open");
        let txn = redb::ReadableDatabase::begin_read(&db).expect("txn");
        txn.open_table(fleetmq_store::tables::META)
            .expect("meta")
            .get("schema_version")
            .expect("read")
            .map(|v| v.value())
    };
    assert_eq!(version, Some(fleetmq_store::tables::SCHEMA_VERSION));
    let db = store.open();
    assert_eq!(
        db.load_broker_state().expect("load").sessions,
        [("client-1".to_owned(), b"subs".to_vec())]
    );
}

on_both_engines!(
    applied_rows_load_back_as_last_written,
    deleting_a_session_deletes_exactly_its_queued_rows,
    a_batch_applies_its_changes_in_order,
    broker_state_survives_reopening_the_store,
);
