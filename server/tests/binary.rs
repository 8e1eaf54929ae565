//! The `fleetmq` binary as a newcomer uses it: first start prints a working token, SIGTERM
//! exits 0, and `admin create-token` refuses to share the data file with a running server.

mod support;

use std::process::Command;

use support::{free_port, start, start_on, terminate};

#[tokio::test]
async fn the_printed_token_works_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    assert_eq!(running.token.len(), 40, "the first start prints a token");

    let reply = reqwest::Client::new()
        .get(format!("{}/api/v1/controller/device/", running.http))
        .bearer_auth(&running.token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(reply.status(), 200);
    let body: serde_json::Value = reply.json().await.expect("json");
    assert_eq!(body["count"], 0);

    let status = terminate(running);
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn create_token_refuses_a_held_data_file_and_works_once_the_server_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let create = || {
        Command::new(env!("CARGO_BIN_EXE_fleetmq"))
            .args(["admin", "create-token", "--username", "admin", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("fleetmq runs")
    };
    let held = create();
    assert!(!held.status.success());
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        stderr.contains("in use by another fleetmq process"),
        "{stderr}"
    );

    assert!(terminate(running).success());
    let free = create();
    assert!(
        free.status.success(),
        "{}",
        String::from_utf8_lossy(&free.stderr)
    );
    let token = String::from_utf8_lossy(&free.stdout).trim().to_owned();
    assert_eq!(token.len(), 40);

    // The new token works on the next start (which creates no second admin).
    let running = start(dir.path());
    assert!(
        running.token.is_empty(),
        "no first-start banner on a used store"
    );
    let reply = reqwest::Client::new()
        .get(format!("{}/api/v1/users/user/", running.http))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(reply.status(), 200);
    assert!(terminate(running).success());
}

#[tokio::test]
async fn telemetry_acknowledged_before_a_kill_9_is_still_there_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, mqtt) = (free_port(), free_port());
    let mut running = start_on(dir.path(), http, mqtt);
    let client = reqwest::Client::new();
    let token = running.token.clone();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("http://127.0.0.1:{http}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let org: serde_json::Value = post(
        "/api/v1/users/organization/",
        serde_json::json!({"name": "k9", "slug": "k9"}),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    let device: serde_json::Value = post(
        "/api/v1/controller/device/",
        serde_json::json!({"name": "k9-1", "organization": org["id"], "mac_address": "02:00:00:00:09:01"}),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    let id = device["id"].as_str().expect("id").to_owned();
    let key = device["key"].as_str().expect("key").to_owned();

    // Publish QoS 1 telemetry and count the PUBACKs the broker sent.
    let mut options = rumqttc::MqttOptions::new(&id, "127.0.0.1", mqtt);
    options.set_credentials(&id, &key);
    let (mqtt_client, mut events) = rumqttc::AsyncClient::new(options, 512);
    let topic = format!("fleetmq/v1/k9/{id}/up/telemetry");
    const SENT: usize = 300;
    // Sampled now: a fixed date would fall out of the telemetry retention as the calendar moves.
    let now = fleetmq_store::Timestamp::now();
    for n in 0..SENT {
        let payload = format!(r#"{{"timestamp":"{now}","metrics":{{"n":{n}}}}}"#);
        mqtt_client
            .publish(
                &topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.into_bytes(),
            )
            .await
            .expect("queued");
    }
    let mut acked = 0;
    while acked < SENT {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.poll())
            .await
            .expect("PUBACKs in time")
            .expect("connected");
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            acked += 1;
        }
    }

    // kill -9: no shutdown, no flush.
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("reaped");
    let running = start_on(dir.path(), http, mqtt);
    // A new client: the old one's pooled connections died with the old process.
    let reply: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/controller/device/{id}/telemetry/",
            running.http
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        reply["count"], SENT,
        "every acknowledged sample survived the crash"
    );
    assert!(terminate(running).success());
}
