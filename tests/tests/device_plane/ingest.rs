use fleetmq_protocol::{DownChannel, ErrorNotice, UpChannel};
use fleetmq_tests::mqtt::MqttClient;
use fleetmq_tests::seconds_ago;
use serde_json::json;

use crate::{ONLINE, fleet};

#[tokio::test]
async fn presence_records_the_mqtt_connection_and_the_will_flips_it() {
    let f = fleet().await;
    let device = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let connections = format!("{device}connection/");
    let a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;

    let online = f
        .app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    assert_eq!(
        online.body["count"], 1,
        "the device got its MQTT connection automatically"
    );
    let detail = f.app.get(&device, &f.manager_a).await;
    assert_eq!(detail.body["model"], "TL-WR841N");
    assert_eq!(detail.body["os"], "OpenWrt 23.05");
    assert_eq!(detail.body["system"], "MT7628");

    a.drop_connection();
    let offline = f
        .app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == false
        })
        .await;
    assert!(
        !offline.body["results"][0]["failure_reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert!(offline.body["results"][0]["last_attempt"].is_string());
    f.app.shutdown().await;
}

#[tokio::test]
async fn telemetry_reaches_the_rest_api_with_latest_and_history() {
    let f = fleet().await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let stamps = [seconds_ago(3), seconds_ago(2), seconds_ago(1)];
    for (stamp, cpu) in stamps.iter().zip([10, 20, 30]) {
        let payload = json!({"timestamp": stamp.to_string(), "metrics": {"cpu": cpu}}).to_string();
        a.publish(&f.device_a.up(UpChannel::Telemetry), &payload, false)
            .await;
    }
    let path = format!("/api/v1/controller/device/{}/telemetry/", f.device_a.id);
    let reply = f
        .app
        .eventually(&path, &f.manager_a, |r| r.body["count"] == 3)
        .await;
    assert_eq!(reply.body["latest"]["metrics"]["cpu"], 30);
    assert_eq!(
        reply.body["results"][0]["timestamp"],
        stamps[2].to_string(),
        "newest first"
    );

    let ranged = f
        .app
        .get(&format!("{path}?since={}", stamps[1]), &f.manager_a)
        .await;
    assert_eq!(ranged.body["count"], 2);
    let other_tenant = f
        .app
        .get(
            &format!("/api/v1/controller/device/{}/telemetry/", f.device_b.id),
            &f.manager_a,
        )
        .await;
    assert_eq!(other_tenant.status, 404);
    f.app.shutdown().await;
}

#[tokio::test]
async fn coordinates_from_mqtt_and_rest_move_the_device() {
    let f = fleet().await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let path = format!("/api/v1/controller/device/{}/coordinates/", f.device_a.id);
    assert_eq!(
        f.app.get(&path, &f.manager_a).await.status,
        404,
        "no location yet"
    );

    let feature = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [12.5, 41.9]}, "properties": {}});
    a.publish(
        &f.device_a.up(UpChannel::Coordinates),
        &feature.to_string(),
        false,
    )
    .await;
    let reply = f
        .app
        .eventually(&path, &f.manager_a, |r| r.status == 200)
        .await;
    assert_eq!(reply.body["geometry"]["coordinates"], json!([12.5, 41.9]));
    let with_geo = f
        .app
        .get("/api/v1/controller/device/?with_geo=true", &f.manager_a)
        .await;
    assert_eq!(with_geo.body["count"], 1);

    // The device itself may move with its key, without a user token.
    let by_key = format!("{path}?key={}", f.device_a.key);
    let moved = f
        .app
        .call("PUT", &by_key, None, Some(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.0, 42.0]}})))
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(
        f.app.call("GET", &by_key, None, None).await.body["geometry"]["coordinates"],
        json!([13.0, 42.0])
    );
    let wrong_key = f
        .app
        .call("GET", &format!("{path}?key=nope"), None, None)
        .await;
    assert_eq!(wrong_key.status, 401);
    assert_eq!(f.app.call("POST", &by_key, None, None).await.status, 405);
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_garbage_payload_is_answered_on_the_devices_error_channel() {
    let f = fleet().await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    a.subscribe(&[&f.device_a.down(DownChannel::Error)]).await;
    a.publish(
        &f.device_a.up(UpChannel::Telemetry),
        "this is not json",
        false,
    )
    .await;
    let notice = a.next_publish().await;
    let notice = ErrorNotice::parse(&notice.payload).expect("an error notice");
    assert_eq!(notice.topic, f.device_a.up(UpChannel::Telemetry));
    assert!(!notice.reason.is_empty());

    // The device still works afterwards.
    a.publish(
        &f.device_a.up(UpChannel::Telemetry),
        &json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"ok": 1}}).to_string(),
        false,
    )
    .await;
    let path = format!("/api/v1/controller/device/{}/telemetry/", f.device_a.id);
    f.app
        .eventually(&path, &f.manager_a, |r| r.body["count"] == 1)
        .await;
    let metrics = f.app.metrics().await;
    assert!(
        metrics.contains("fleetmq_uplink_refused_total 1"),
        "{metrics}"
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_mobile_devices_mqtt_coordinates_move_the_location_rest_and_geojson_show() {
    let f = fleet().await;
    let path = format!("/api/v1/controller/device/{}/location/", f.device_a.id);
    let placed = f
        .app
        .call(
            "PUT",
            &path,
            Some(&f.manager_a),
            Some(
                json!({"location": {"name": "Van 7", "type": "outdoor", "is_mobile": true,
                                     "geometry": "POINT (12.5 41.9)"}}),
            ),
        )
        .await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    let location = placed.body["location"]["id"].clone();

    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let feature = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.25, 42.5]}, "properties": {}});
    a.publish(
        &f.device_a.up(UpChannel::Coordinates),
        &feature.to_string(),
        false,
    )
    .await;
    let moved = f
        .app
        .eventually(&path, &f.manager_a, |r| {
            r.body["location"]["geometry"]["coordinates"] == json!([13.25, 42.5])
        })
        .await;
    assert_eq!(
        moved.body["location"]["id"], location,
        "the device's own location moved, no new one"
    );
    let geojson = f
        .app
        .get("/api/v1/controller/location/geojson/", &f.manager_a)
        .await;
    assert_eq!(geojson.body["count"], 1);
    assert_eq!(geojson.body["features"][0]["id"], location);
    assert_eq!(
        geojson.body["features"][0]["geometry"]["coordinates"],
        json!([13.25, 42.5])
    );
    assert_eq!(geojson.body["features"][0]["properties"]["device_count"], 1);
    f.app.shutdown().await;
}
