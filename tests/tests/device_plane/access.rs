use fleetmq_protocol::{DownChannel, UpChannel};
use fleetmq_tests::mqtt::MqttClient;
use fleetmq_tests::seconds_ago;
use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, SubscribeReasonCode};
use serde_json::json;

use crate::{ONLINE, fleet};

fn refused(result: Result<MqttClient, ConnectionError>) -> Option<ConnectReturnCode> {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn a_wrong_device_key_is_refused() {
    let f = fleet().await;
    let mut wrong = f.device_a.clone();
    wrong.key = "not-the-key".into();
    let result = MqttClient::connect(wrong.options(f.app.mqtt_addr)).await;
    assert_eq!(
        refused(result),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_device_is_disconnected_and_refused() {
    let f = fleet().await;
    let mut live = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let path = format!("/api/v1/controller/device/{}/deactivate/", f.device_a.id);
    assert_eq!(
        f.app
            .call("POST", &path, Some(&f.manager_a), None)
            .await
            .status,
        200
    );
    live.closed_by_broker().await;

    let again = MqttClient::connect(f.device_a.options(f.app.mqtt_addr)).await;
    assert_eq!(refused(again), Some(ConnectReturnCode::NotAuthorized));
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_new_device_key_takes_effect_for_the_next_connection() {
    let f = fleet().await;
    // A first login puts the device in the broker's login cache.
    MqttClient::connect(f.device_a.options(f.app.mqtt_addr))
        .await
        .expect("the registered key works")
        .disconnect()
        .await;
    let path = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let patched = f
        .app
        .call(
            "PATCH",
            &path,
            Some(&f.manager_a),
            Some(json!({"key": "fresh-key-1234567890"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let old = MqttClient::connect(f.device_a.options(f.app.mqtt_addr)).await;
    assert_eq!(refused(old), Some(ConnectReturnCode::BadUserNamePassword));
    let mut renewed = f.device_a.clone();
    renewed.key = "fresh-key-1234567890".into();
    assert!(
        MqttClient::connect(renewed.options(f.app.mqtt_addr))
            .await
            .is_ok()
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn devices_cannot_subscribe_outside_their_own_down_tree() {
    let f = fleet().await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let own = f.device_a.down(DownChannel::CommandRequest);
    let others = f.device_b.down(DownChannel::CommandRequest);
    let codes = a
        .subscribe(&[
            &own,
            "#",
            "fleetmq/v1/+/+/down/#",
            "fleetmq/v1/org-a/+/down/#",
            &others,
            &f.device_a.up(UpChannel::Telemetry),
        ])
        .await;
    assert!(
        matches!(codes[0], SubscribeReasonCode::Success(_)),
        "{codes:?}"
    );
    assert!(
        codes[1..]
            .iter()
            .all(|c| *c == SubscribeReasonCode::Failure),
        "{codes:?}"
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn publishing_on_another_devices_topic_closes_the_connection_and_delivers_nothing() {
    let f = fleet().await;
    let mut operator_b = {
        let mut options = MqttOptions::new(
            "ops-admin",
            f.app.mqtt_addr.ip().to_string(),
            f.app.mqtt_addr.port(),
        );
        options.set_credentials("admin", f.app.admin_token.clone());
        MqttClient::connect(options)
            .await
            .expect("superuser operator connects")
    };
    let watch = format!("fleetmq/v1/{}/#", f.device_b.org);
    assert!(matches!(
        operator_b.subscribe(&[&watch]).await[0],
        SubscribeReasonCode::Success(_)
    ));

    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    a.publish_nowait(
        &f.device_b.up(UpChannel::Telemetry),
        &json!({"timestamp": seconds_ago(2).to_string(), "metrics": {"forged": 1}}).to_string(),
    )
    .await;
    a.closed_by_broker().await;

    // Nothing reached org B: the next message the operator sees is B's own.
    let mut b = MqttClient::device(f.app.mqtt_addr, &f.device_b, ONLINE).await;
    b.publish(
        &f.device_b.up(UpChannel::Telemetry),
        &json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"real": 1}}).to_string(),
        false,
    )
    .await;
    loop {
        let message = operator_b.next_publish().await;
        assert!(!String::from_utf8_lossy(&message.payload).contains("forged"));
        if message.topic == f.device_b.up(UpChannel::Telemetry) {
            break;
        }
    }
    f.app.shutdown().await;
}

#[tokio::test]
async fn operators_watch_only_their_organizations_and_never_publish_to_devices() {
    let f = fleet().await;
    let mut options = MqttOptions::new(
        "alice-console",
        f.app.mqtt_addr.ip().to_string(),
        f.app.mqtt_addr.port(),
    );
    options.set_credentials("alice", f.manager_a.clone());
    let mut alice = MqttClient::connect(options)
        .await
        .expect("operator connects with an API token");
    let codes = alice
        .subscribe(&[
            "fleetmq/v1/org-a/#",
            "fleetmq/v1/org-b/#",
            "#",
            "fleetmq/v1/+/+/up/#",
        ])
        .await;
    // Another organization's tree is refused; wildcards that can match org-a's topics are
    // granted and filtered per message.
    assert_eq!(
        codes
            .iter()
            .map(|c| *c == SubscribeReasonCode::Failure)
            .collect::<Vec<_>>(),
        [false, true, false, false],
        "{codes:?}"
    );

    // org-b's device announces itself first: `#` matches it, but alice may not read it.
    let _b = MqttClient::device(f.app.mqtt_addr, &f.device_b, ONLINE).await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let seen = alice.next_publish().await;
    assert_eq!(seen.topic, f.device_a.up(UpChannel::Presence));
    a.subscribe(&[&f.device_a.down(DownChannel::CommandRequest)])
        .await;

    alice
        .publish_nowait(
            &f.device_a.down(DownChannel::CommandRequest),
            r#"{"forged":true}"#,
        )
        .await;
    alice.closed_by_broker().await;

    // The next request the device gets is the one sent through the REST API.
    let connections = format!("/api/v1/controller/device/{}/connection/", f.device_a.id);
    f.app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    let command = f
        .app
        .post(
            &format!("/api/v1/controller/device/{}/command/", f.device_a.id),
            &f.manager_a,
            json!({"type": "reboot"}),
        )
        .await;
    assert_eq!(command.status, 201, "{:?}", command.body);
    let request = a.next_publish().await;
    assert!(String::from_utf8_lossy(&request.payload).contains(&command.str("id")));

    let mut bad = MqttOptions::new(
        "mallory",
        f.app.mqtt_addr.ip().to_string(),
        f.app.mqtt_addr.port(),
    );
    bad.set_credentials("alice", "0000000000000000000000000000000000000000");
    assert_eq!(
        refused(MqttClient::connect(bad).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn devices_of_an_inactive_organization_are_refused_until_it_is_active_again() {
    let f = fleet().await;
    MqttClient::connect(f.device_a.options(f.app.mqtt_addr))
        .await
        .expect("active organization")
        .disconnect()
        .await;
    let org = format!("/api/v1/users/organization/{}/", f.org_a);
    let off = f
        .app
        .call(
            "PATCH",
            &org,
            Some(&f.app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(off.status, 200);
    let refused_now = MqttClient::connect(f.device_a.options(f.app.mqtt_addr)).await;
    assert_eq!(refused(refused_now), Some(ConnectReturnCode::NotAuthorized));
    let on = f
        .app
        .call(
            "PATCH",
            &org,
            Some(&f.app.admin_token),
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(on.status, 200);
    assert!(
        MqttClient::connect(f.device_a.options(f.app.mqtt_addr))
            .await
            .is_ok()
    );
    f.app.shutdown().await;
}
