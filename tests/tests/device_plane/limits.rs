//! What a device may report, and how much: the limits of docs/mqtt.md ("Limits"), each tried
//! over MQTT against the whole server and checked through the REST API.

use fleetmq_protocol::{DEVICE_TEXT_MAX_CHARS, DownChannel, ErrorNotice, UpChannel};
use fleetmq_store::Timestamp;
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient};
use fleetmq_tests::{TestApp, seconds_ago};
use serde_json::json;

use crate::{ONLINE, fleet};

/// A device client that may send and receive packets of up to 1 MiB (rumqttc's default is
/// 10 KiB), subscribed to its `down/error`.
async fn device_hearing_errors(addr: std::net::SocketAddr, device: &DeviceIdentity) -> MqttClient {
    let mut options = device.options(addr);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let mut client = MqttClient::connect(options).await.expect("device connects");
    client
        .publish(&device.up(UpChannel::Presence), ONLINE, true)
        .await;
    client.subscribe(&[&device.down(DownChannel::Error)]).await;
    client
}

/// The next `down/error` notice.
async fn next_notice(client: &mut MqttClient) -> ErrorNotice {
    let publish = client.next_publish().await;
    ErrorNotice::parse(&publish.payload).expect("an error notice")
}

#[tokio::test]
async fn a_presence_with_fields_longer_than_the_rest_api_allows_is_refused_on_down_error() {
    let f = fleet().await;
    let mut a = device_hearing_errors(f.app.mqtt_addr, &f.device_a).await;
    let device = format!("/api/v1/controller/device/{}/", f.device_a.id);
    f.app
        .eventually(&device, &f.manager_a, |r| r.body["model"] == "TL-WR841N")
        .await;

    let huge = "x".repeat(200_000);
    for field in ["model", "os", "system", "firmware_version"] {
        let presence = json!({"status": "online", field: huge}).to_string();
        a.publish(&f.device_a.up(UpChannel::Presence), &presence, true)
            .await;
        let notice = next_notice(&mut a).await;
        assert_eq!(notice.topic, f.device_a.up(UpChannel::Presence));
        assert!(
            notice
                .reason
                .contains(&format!("`{field}` has 200000 characters")),
            "{}",
            notice.reason
        );
    }
    // Exactly at the limit is fine, as in the REST API.
    let longest = "m".repeat(DEVICE_TEXT_MAX_CHARS);
    a.publish(
        &f.device_a.up(UpChannel::Presence),
        &json!({"status": "online", "model": longest}).to_string(),
        true,
    )
    .await;
    let stored = f
        .app
        .eventually(&device, &f.manager_a, |r| {
            r.body["model"] == longest.as_str()
        })
        .await;
    assert_eq!(
        stored.body["os"], "OpenWrt 23.05",
        "refused values were not stored"
    );
    assert_eq!(stored.body["system"], "MT7628");

    // What a device reported, a REST client can write back unchanged (GET-modify-PUT).
    let mut body = stored.body.clone();
    body["notes"] = json!("checked");
    let put = f
        .app
        .call("PUT", &device, Some(&f.manager_a), Some(body))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_sample_stamped_ahead_of_the_server_clock_is_refused_and_never_becomes_latest() {
    let f = fleet().await;
    let mut a = device_hearing_errors(f.app.mqtt_addr, &f.device_a).await;
    let sample =
        |stamp: &str, cpu: i64| json!({"timestamp": stamp, "metrics": {"cpu": cpu}}).to_string();
    let telemetry = f.device_a.up(UpChannel::Telemetry);
    a.publish(&telemetry, &sample(&seconds_ago(2).to_string(), 1), false)
        .await;

    // An hour and a century ahead (the default skew is 5 minutes).
    let century = 100 * 366 * 24 * 3600;
    for ahead in [3600, century] {
        let stamp = seconds_ago(-ahead).to_string();
        a.publish(&telemetry, &sample(&stamp, 99), false).await;
        let notice = next_notice(&mut a).await;
        assert_eq!(notice.topic, telemetry);
        assert!(
            notice.reason.contains(&stamp) && notice.reason.contains("ahead of the server's clock"),
            "{}",
            notice.reason
        );
    }
    // A device clock a little ahead is tolerated.
    a.publish(&telemetry, &sample(&seconds_ago(-60).to_string(), 2), false)
        .await;
    a.publish(&telemetry, &sample(&seconds_ago(1).to_string(), 3), false)
        .await;

    let path = format!("/api/v1/controller/device/{}/telemetry/", f.device_a.id);
    let reply = f
        .app
        .eventually(&path, &f.manager_a, |r| r.body["count"] == 3)
        .await;
    assert_eq!(
        reply.body["latest"]["metrics"]["cpu"], 2,
        "the sample a minute ahead is the latest"
    );
    let cpus: Vec<_> = reply.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|s| s["metrics"]["cpu"].clone())
        .collect();
    assert_eq!(
        cpus,
        [json!(2), json!(3), json!(1)],
        "no refused sample was stored"
    );
    f.app.shutdown().await;
}

/// A telemetry payload stamped `stamp` whose metrics carry `pad` bytes of text.
fn padded_sample(stamp: &Timestamp, pad: usize) -> String {
    json!({"timestamp": stamp.to_string(), "metrics": {"pad": "x".repeat(pad)}}).to_string()
}

#[tokio::test]
async fn a_sample_larger_than_the_limit_is_refused_and_one_within_it_is_stored() {
    let f = fleet().await;
    let mut a = device_hearing_errors(f.app.mqtt_addr, &f.device_a).await;
    let telemetry = f.device_a.up(UpChannel::Telemetry);
    let huge = padded_sample(&seconds_ago(2), 200_000);
    a.publish(&telemetry, &huge, false).await;
    let notice = next_notice(&mut a).await;
    assert_eq!(notice.topic, telemetry);
    assert_eq!(
        notice.reason,
        format!(
            "telemetry payload of {} bytes is larger than the 65536 bytes allowed",
            huge.len()
        )
    );
    a.publish(&telemetry, &padded_sample(&seconds_ago(1), 60_000), false)
        .await;
    let path = format!("/api/v1/controller/device/{}/telemetry/", f.device_a.id);
    let reply = f.app.get(&path, &f.manager_a).await;
    assert_eq!(reply.body["count"], 1, "only the sample within the limit");
    assert_eq!(
        reply.body["latest"]["metrics"]["pad"]
            .as_str()
            .map(str::len),
        Some(60_000)
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_devices_history_keeps_its_newest_samples_and_pages_stay_within_their_budget() {
    let app = TestApp::spawn_with(|config| {
        config.bridge.telemetry_history_max_bytes = 8 * 1024;
        config.api.telemetry_page_max_bytes = 3 * 1024;
    })
    .await;
    let org = app.create_org("org-a").await;
    let manager = app.create_user("alice", &["Operator"], &[&org]).await;
    let device = app.register_device(&manager, &org, "org-a", "dev-a").await;
    let mut a = device_hearing_errors(app.mqtt_addr, &device).await;
    // Thirty samples of about 1 KiB each, oldest first; each is stored once acknowledged.
    let newest_first: Vec<Timestamp> = (1..=30).map(seconds_ago).collect();
    for stamp in newest_first.iter().rev() {
        a.publish(
            &device.up(UpChannel::Telemetry),
            &padded_sample(stamp, 1000),
            false,
        )
        .await;
    }

    let path = format!(
        "/api/v1/controller/device/{}/telemetry/?page_size=100",
        device.id
    );
    let mut page = app.get(&path, &manager).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let count = page.body["count"].as_u64().expect("count");
    assert!(
        (4..=7).contains(&count),
        "8 KiB holds a few 1 KiB samples, not 30: {count}"
    );
    assert_eq!(
        page.body["latest"]["timestamp"],
        newest_first[0].to_string()
    );

    // Pages of at most 3 KiB: two samples each here, `next` until the end.
    let mut stamps = Vec::new();
    loop {
        let results = page.body["results"].as_array().expect("results").clone();
        assert!(
            (1..=2).contains(&results.len()),
            "a page holds what fits in 3 KiB: {}",
            results.len()
        );
        stamps.extend(
            results
                .iter()
                .map(|s| s["timestamp"].as_str().unwrap_or_default().to_owned()),
        );
        let Some(next) = page.body["next"].as_str() else {
            break;
        };
        let next = next
            .strip_prefix(&app.base)
            .expect("a link to this server")
            .to_owned();
        page = app.get(&next, &manager).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
    }
    let newest: Vec<String> = newest_first[..count as usize]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        stamps, newest,
        "every kept sample once, the newest ones, newest first"
    );
    app.shutdown().await;
}
