//! A device's presence history (`GET /api/v1/controller/device/{id}/presence/`): what its MQTT
//! sessions did, newest first, for whoever may view the device and nobody else.

use fleetmq_tests::TestApp;
use fleetmq_tests::events::EventStream;
use fleetmq_tests::mqtt::MqttClient;
use serde_json::Value;

use crate::ONLINE;

#[tokio::test]
async fn a_devices_presence_history_lists_its_sessions_newest_first_to_its_organization_only() {
    let app = TestApp::spawn().await;
    let orgs = app.two_organizations().await;
    let device = &orgs.device_a;
    let history = format!("/api/v1/controller/device/{}/presence/", device.id);
    let mut events = EventStream::open(&app, &orgs.manager_a).await;

    // Connect, say goodbye, come back; each change is awaited as the console sees it live.
    let first = MqttClient::device(app.mqtt_addr, device, ONLINE).await;
    assert_eq!(events.presence().await, (device.id.clone(), true));
    first.disconnect().await;
    assert_eq!(events.presence().await, (device.id.clone(), false));
    let _second = MqttClient::device(app.mqtt_addr, device, ONLINE).await;
    assert_eq!(events.presence().await, (device.id.clone(), true));

    let listed = app.get(&history, &orgs.manager_a).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["count"], 3, "{}", listed.body);
    let results = listed.body["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let changes: Vec<(bool, &str)> = results
        .iter()
        .map(|c| {
            (
                c["online"].as_bool().unwrap_or_default(),
                c["reason"].as_str().unwrap_or("(missing)"),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [(true, ""), (false, "clean"), (true, "")],
        "newest first; the goodbye says why the session ended"
    );
    let times: Vec<&str> = results.iter().filter_map(|c| c["at"].as_str()).collect();
    assert_eq!(times.len(), 3, "every change says when: {results:?}");
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );

    // Paged like every list.
    let page = app
        .get(&format!("{history}?page=2&page_size=1"), &orgs.manager_a)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["results"][0]["online"], false);
    assert_ne!(page.body["next"], Value::Null);

    // Another organization's manager cannot tell the device exists.
    let bob = app.create_user("bob", &["Operator"], &[&orgs.org_b]).await;
    let refused = app.get(&history, &bob).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    app.shutdown().await;
}
