//! `fleetmq store migrate` as an operator runs it: a server's redb store copied into
//! PostgreSQL serves the same fleet and the same token from there, and a second copy into the
//! now occupied database is refused.

mod support;

#[allow(dead_code)]
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::process::Command;

use serde_json::{Value, json};
use support::{free_port, start, start_with, terminate};

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let reply = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(reply.status(), 200, "{url}");
    reply.json().await.expect("json")
}

#[tokio::test]
async fn a_redb_store_migrated_to_postgres_serves_the_same_fleet() {
    let pg = postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts");
    let url = pg.database().expect("a database");
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();

    let running = start(dir.path());
    let token = running.token.clone();
    let org = http
        .post(format!("{}/api/v1/users/organization/", running.http))
        .bearer_auth(&token)
        .json(&json!({"name": "Moved", "slug": "moved"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(org.status(), 201);
    let org: Value = org.json().await.expect("json");
    for n in 0..12 {
        let created = http
            .post(format!("{}/api/v1/controller/device/", running.http))
            .bearer_auth(&token)
            .json(&json!({
                "name": format!("moved-{n}"),
                "mac_address": format!("02:00:00:00:00:{n:02x}"),
                "organization": org["id"],
            }))
            .send()
            .await
            .expect("sent");
        assert_eq!(created.status(), 201);
    }
    let before = get(
        &http,
        &format!("{}/api/v1/controller/device/", running.http),
        &token,
    )
    .await;
    assert!(terminate(running).success());

    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["store", "migrate", "--from"])
            .arg(format!("redb:{}", dir.path().display()))
            .args(["--to", &url])
            .output()
            .expect("fleetmq runs")
    };
    let copied = migrate();
    let stdout = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(
        stdout.contains("every table's count and SHA-256 match its source"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("devices ") && l.contains(" 12 entries")),
        "{stdout}"
    );

    // The same data directory (firmware files, the sealing secret), the tables in PostgreSQL.
    let (http_port, mqtt_port) = (free_port(), free_port());
    let on_postgres = start_with(dir.path(), http_port, mqtt_port, &["--store", &url]);
    let after = get(
        &http,
        &format!("{}/api/v1/controller/device/", on_postgres.http),
        &token,
    )
    .await;
    assert_eq!(after["count"], 12);
    assert_eq!(after["results"], before["results"]);
    assert!(terminate(on_postgres).success());

    let again = migrate();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
}
