//! The live event stream (`GET /api/v1/events/`): a device going online or offline reaches
//! the operators of its organization at once, and only them; a stream ends when its caller
//! loses the right.

use fleetmq_tests::TestApp;
use fleetmq_tests::events::EventStream;
use fleetmq_tests::mqtt::MqttClient;
use serde_json::json;

use crate::{ONLINE, fleet};

#[tokio::test]
async fn presence_reaches_the_operators_of_the_devices_organization_only() {
    let f = fleet().await;
    let manager_b = f
        .app
        .create_user("bob", &["Operator"], &[&orgs_b(&f).await])
        .await;
    let mut alice = EventStream::open(&f.app, &f.manager_a).await;
    let mut bob = EventStream::open(&f.app, &manager_b).await;
    let mut admin = EventStream::open(&f.app, &f.app.admin_token).await;

    let device_a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    assert_eq!(alice.presence().await, (f.device_a.id.clone(), true));
    assert_eq!(admin.presence().await, (f.device_a.id.clone(), true));
    let device_b = MqttClient::device(f.app.mqtt_addr, &f.device_b, ONLINE).await;
    // Bob's first event is his own device's: org A's came before it and was not his to see.
    assert_eq!(bob.presence().await, (f.device_b.id.clone(), true));
    assert_eq!(admin.presence().await, (f.device_b.id.clone(), true));

    device_a.disconnect().await;
    assert_eq!(alice.presence().await, (f.device_a.id.clone(), false));
    device_b.disconnect().await;
    assert_eq!(bob.presence().await, (f.device_b.id.clone(), false));
    f.app.shutdown().await;
}

/// The id of organization B (the one `fleet` registers `device_b` in).
async fn orgs_b(f: &crate::Fleet) -> String {
    let orgs = f
        .app
        .get(
            "/api/v1/users/organization/?page_size=100",
            &f.app.admin_token,
        )
        .await;
    orgs.body["results"]
        .as_array()
        .and_then(|all| all.iter().find(|o| o["slug"] == "org-b"))
        .and_then(|o| o["id"].as_str())
        .expect("org-b exists")
        .to_owned()
}

#[tokio::test]
async fn a_stream_ends_when_its_caller_loses_the_right() {
    let f = fleet().await;
    let mut alice = EventStream::open(&f.app, &f.manager_a).await;
    let id = f.app.user_id("alice").await;
    let reply = f
        .app
        .call(
            "PATCH",
            &format!("/api/v1/users/user/{id}/"),
            Some(&f.app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        alice.next().await,
        None,
        "the stream ended with alice's right"
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn event_streams_are_bounded() {
    let app = TestApp::spawn_with(|config| config.api.max_event_streams = 1).await;
    let _first = EventStream::open(&app, &app.admin_token).await;
    let second = app
        .http
        .get(format!("{}/api/v1/events/", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key(reqwest::header::RETRY_AFTER));
    app.shutdown().await;
}

#[tokio::test]
async fn a_command_that_ends_reaches_the_stream_of_its_organization() {
    let f = fleet().await;
    let mut device = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    device
        .subscribe(&[&f
            .device_a
            .down(fleetmq_protocol::DownChannel::CommandRequest)])
        .await;
    let mut alice = EventStream::open(&f.app, &f.manager_a).await;
    let created = f.custom_command("uptime").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    crate::commands::answer(&mut device, &f.device_a).await;
    let (name, data) = loop {
        let (name, data) = alice.next().await.expect("the stream goes on");
        if name == "command" {
            break (name, data);
        }
    };
    assert_eq!(name, "command");
    assert_eq!(data["command"], created.str("id").as_str());
    assert_eq!(data["device"], f.device_a.id.as_str());
    assert_eq!(data["status"], "success");
    f.app.shutdown().await;
}
