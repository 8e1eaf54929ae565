//! What a PUBACK promises: the broker acknowledges a device's message only once the bridge
//! has stored it, so the REST API shows it without waiting.

use fleetmq_protocol::UpChannel;
use fleetmq_tests::mqtt::MqttClient;
use fleetmq_tests::seconds_ago;
use serde_json::json;

use crate::{ONLINE, fleet};

#[tokio::test]
async fn telemetry_is_in_the_api_as_soon_as_its_puback_arrives() {
    let f = fleet().await;
    // `device` waits for the PUBACK of the retained online presence.
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let device = f
        .app
        .get(
            &format!("/api/v1/controller/device/{}/", f.device_a.id),
            &f.manager_a,
        )
        .await;
    assert_eq!(
        device.body["model"], "TL-WR841N",
        "presence stored before PUBACK"
    );

    let payload = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"cpu": 42}});
    a.publish(
        &f.device_a.up(UpChannel::Telemetry),
        &payload.to_string(),
        false,
    )
    .await;
    let telemetry = f
        .app
        .get(
            &format!("/api/v1/controller/device/{}/telemetry/", f.device_a.id),
            &f.manager_a,
        )
        .await;
    assert_eq!(telemetry.status, 200);
    assert_eq!(
        telemetry.body["count"], 1,
        "no polling: {:?}",
        telemetry.body
    );
    assert_eq!(telemetry.body["latest"]["metrics"]["cpu"], 42);
    f.app.shutdown().await;
}

#[tokio::test]
async fn connecting_records_the_address_and_disconnecting_the_reason() {
    let f = fleet().await;
    let device = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let connections = format!("{device}connection/");
    let a = MqttClient::connect(f.device_a.options(f.app.mqtt_addr))
        .await
        .expect("device connects");

    // The session is recorded from the broker's connect event, without any payload.
    let detail = f
        .app
        .eventually(&device, &f.manager_a, |r| r.body["last_ip"] == "127.0.0.1")
        .await;
    assert_eq!(detail.body["last_ip"], "127.0.0.1");
    f.app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;

    a.disconnect().await;
    let offline = f
        .app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == false
        })
        .await;
    assert_eq!(offline.body["results"][0]["failure_reason"], "clean");
    f.app.shutdown().await;
}
