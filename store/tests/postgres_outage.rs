//! A PostgreSQL outage: calls fail with an error within the connection wait (no panic, no
//! hang), nothing half-written shows, and the same backend works again once the database is
//! back, without a restart.

mod support;

use std::time::{Duration, Instant};

use fleetmq_store::{AccountStore, KvBackend, PostgresOptions, StoreError, StoreOptions};
use support::org_fields as org;
use support::postgres;

#[test]
fn calls_fail_during_an_outage_and_work_again_after_it() {
    let server =
        postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        ..PostgresOptions::new(server.database().expect("database"))
    };
    let db = KvBackend::connect(&options, dir.path(), &StoreOptions::default()).expect("connects");
    let before = db.create_organization(org("before")).expect("written");

    server.stop().expect("PostgreSQL stops");
    let asked = Instant::now();
    let read = db.organization(before.id);
    assert!(
        matches!(
            read,
            Err(StoreError::Postgres(_) | StoreError::PostgresPool(_))
        ),
        "{read:?}"
    );
    let write = db.create_organization(org("during"));
    assert!(
        matches!(
            write,
            Err(StoreError::Postgres(_) | StoreError::PostgresPool(_))
        ),
        "{write:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "calls give up within the connection wait, not hang: {:?}",
        asked.elapsed()
    );

    server.start_again().expect("PostgreSQL starts again");
    // The pool drops the connections the outage broke and makes new ones.
    assert_eq!(
        db.organization(before.id).expect("read after the outage"),
        Some(before)
    );
    assert!(
        db.organization_by_slug("during").expect("read").is_none(),
        "the write that failed left nothing"
    );
    db.create_organization(org("after"))
        .expect("written after the outage");
}
