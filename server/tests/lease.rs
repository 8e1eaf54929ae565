//! A node that finds another holding the device-plane lease it held (after a pause longer
//! than the lease's lifetime, say) stops at once and says why: it must not act on devices
//! while another node may.

#[allow(dead_code)]
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::net::SocketAddr;
use std::time::Duration;

use fleetmq::leadership::DEVICE_PLANE;
use fleetmq::{Config, Server};
use fleetmq_store::{LeaseClaim, PostgresOptions, Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_device_plane_lease_was_taken_stops_and_says_why() {
    let pg = postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts");
    let options = StoreOptions {
        postgres: Some(PostgresOptions::new(pg.database().expect("a database"))),
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        store: options.clone(),
        lease_lifetime: Duration::from_secs(2),
        ..Config::default()
    })
    .await
    .expect("the server starts");
    let failure = server.failure();
    let stopped = server.shutdown_token();

    // Another node takes the lease over, as it may once the lease has expired.
    let other = Store::open_with(dir.path(), &options).expect("a second node's store");
    let held = other
        .run(|db| db.lease(DEVICE_PLANE))
        .await
        .expect("read")
        .expect("the server holds the lease");
    let taken = other
        .run(move |db| {
            db.release_lease(DEVICE_PLANE, &held.holder)?;
            db.claim_lease(&LeaseClaim {
                name: DEVICE_PLANE.to_owned(),
                holder: "another-node".to_owned(),
                lifetime: Duration::from_secs(60),
                address: None,
            })
        })
        .await
        .expect("claimed")
        .expect("the lease was free");
    assert_eq!(taken.holder, "another-node");

    // The server notices at its next renewal (a sixth of the lifetime) and stops.
    tokio::time::timeout(Duration::from_secs(5), stopped.cancelled())
        .await
        .expect("the node stops by itself");
    server.wait().await;
    let reason = failure.reason().expect("it says why");
    assert!(reason.contains("another node took the lease"), "{reason}");
    // And it did not give the other node's lease up on its way out.
    let after = other
        .run(|db| db.lease(DEVICE_PLANE))
        .await
        .expect("read")
        .expect("still held");
    assert_eq!(after.holder, "another-node");
}
