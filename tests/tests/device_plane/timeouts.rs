use std::time::Duration;

use fleetmq_protocol::DownChannel;
use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::MqttClient;
use serde_json::json;

use crate::ONLINE;

#[tokio::test]
async fn a_command_nobody_answers_fails_as_timed_out() {
    let app = TestApp::spawn_with(|c| c.bridge.command_timeout = Duration::from_millis(500)).await;
    let org = app.create_org("acme").await;
    let device = app
        .register_device(&app.admin_token, &org, "acme", "silent")
        .await;
    let mut mqtt = MqttClient::device(app.mqtt_addr, &device, ONLINE).await;
    mqtt.subscribe(&[&device.down(DownChannel::CommandRequest)])
        .await;
    let connections = format!("/api/v1/controller/device/{}/connection/", device.id);
    app.eventually(&connections, &app.admin_token, |r| {
        r.body["results"][0]["is_working"] == true
    })
    .await;

    let commands = format!("/api/v1/controller/device/{}/command/", device.id);
    let created = app
        .post(&commands, &app.admin_token, json!({"type": "reboot"}))
        .await;
    assert_eq!(created.status, 201);
    mqtt.next_publish().await; // the device receives it, and never answers
    let detail = format!("{commands}{}/", created.str("id"));
    let failed = app
        .eventually(&detail, &app.admin_token, |r| {
            r.body["status"] != "in-progress"
        })
        .await;
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["output"], "timed out");
    app.shutdown().await;
}
