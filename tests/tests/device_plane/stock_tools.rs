//! Operators and devices using the stock mosquitto clients (installed by .ci/run).

use std::process::Stdio;

use fleetmq_protocol::UpChannel;
use fleetmq_tests::mqtt::{MqttClient, WAIT};
use fleetmq_tests::seconds_ago;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::{ONLINE, fleet};

#[tokio::test]
async fn mosquitto_sub_as_an_operator_sees_its_devices_and_mosquitto_pub_with_a_wrong_key_fails() {
    let f = fleet().await;
    let port = f.app.mqtt_addr.port().to_string();
    // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe otherwise.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "alice-sub",
            "-u",
            "alice",
            "-P",
            &f.manager_a,
        ])
        .args(["-t", "fleetmq/v1/org-a/#", "-v", "-q", "1", "-d"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("mosquitto_sub prints in time")
            .expect("readable")
            .expect("mosquitto_sub is running")
    };
    // With -d, mosquitto_sub reports its SUBACK: granted QoS 1, not the failure code 128.
    loop {
        let line = next_line().await;
        if let Some(granted) = line.strip_prefix("Subscribed (mid: 1): ") {
            assert_eq!(
                granted.trim(),
                "1",
                "the operator may watch its organization"
            );
            break;
        }
    }
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    a.publish(
        &f.device_a.up(UpChannel::Telemetry),
        &json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"n": 1}}).to_string(),
        false,
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = next_line().await;
        if line.starts_with("fleetmq/") {
            seen.push(line);
        }
    }
    assert!(
        seen[0].starts_with(&f.device_a.up(UpChannel::Presence)),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with(&f.device_a.up(UpChannel::Telemetry)),
        "{seen:?}"
    );
    let _ = sub.kill().await;

    let status = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-i",
                &f.device_a.id,
                "-u",
                &f.device_a.id,
                "-P",
                "wrong-key",
            ])
            .args([
                "-t",
                &f.device_a.up(UpChannel::Telemetry),
                "-m",
                "{}",
                "-q",
                "1",
            ])
            .stderr(Stdio::null())
            .status(),
    )
    .await
    .expect("mosquitto_pub ends")
    .expect("mosquitto_pub runs");
    assert!(!status.success(), "a wrong key is refused");

    let ok = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-i",
                &f.device_b.id,
                "-u",
                &f.device_b.id,
                "-P",
                &f.device_b.key,
            ])
            .args([
                "-t",
                &f.device_b.up(UpChannel::Telemetry),
                "-m",
                &json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"x": 1}}).to_string(),
                "-q",
                "1",
            ])
            .status(),
    )
    .await
    .expect("mosquitto_pub ends")
    .expect("mosquitto_pub runs");
    assert!(ok.success(), "a device publishes with its key");
    let path = format!("/api/v1/controller/device/{}/telemetry/", f.device_b.id);
    f.app
        .eventually(&path, &f.app.admin_token, |r| r.body["count"] == 1)
        .await;
    f.app.shutdown().await;
}
