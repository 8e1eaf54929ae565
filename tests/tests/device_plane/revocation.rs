//! Revocation reaches live sessions: a change that would refuse a new login (user deactivated
//! or deleted, membership removed, organization deactivated, device key changed) ends the
//! connections that login already opened, and nothing else.

use fleetmq_protocol::UpChannel;
use fleetmq_tests::mqtt::MqttClient;
use fleetmq_tests::seconds_ago;
use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions};
use serde_json::json;

use crate::{Fleet, ONLINE, fleet};

/// An operator's MQTT session watching `org-a`.
async fn watcher(f: &Fleet, username: &str, token: &str) -> MqttClient {
    let mut options = MqttOptions::new(
        format!("{username}-console"),
        f.app.mqtt_addr.ip().to_string(),
        f.app.mqtt_addr.port(),
    );
    options.set_credentials(username, token);
    let mut client = MqttClient::connect(options)
        .await
        .expect("an operator connects");
    let codes = client.subscribe(&["fleetmq/v1/org-a/#"]).await;
    assert!(
        matches!(codes[0], rumqttc::SubscribeReasonCode::Success(_)),
        "{codes:?}"
    );
    client
}

/// The id of the user named `username`.
async fn user_id(f: &Fleet, username: &str) -> String {
    f.app.user_id(username).await
}

fn refused(result: Result<MqttClient, ConnectionError>) -> Option<ConnectReturnCode> {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn operators_lose_their_live_sessions_with_their_rights() {
    let f = fleet().await;
    let org_a = f.org_a.clone();
    let mut sessions = Vec::new();
    for username in ["deactivated", "removed", "deleted", "kept"] {
        let token = f.app.create_user(username, &["Operator"], &[&org_a]).await;
        sessions.push((
            username,
            user_id(&f, username).await,
            watcher(&f, username, &token).await,
        ));
    }
    let [
        (_, deactivated, mut deactivated_session),
        (_, removed, mut removed_session),
        (_, deleted, mut deleted_session),
        (_, _, mut kept_session),
    ] = <[_; 4]>::try_from(sessions).unwrap_or_else(|_| unreachable!("four users"));
    let user = |id: &str| format!("/api/v1/users/user/{id}/");
    let admin = Some(f.app.admin_token.as_str());

    let patch = json!({"is_active": false});
    let reply = f
        .app
        .call("PATCH", &user(&deactivated), admin, Some(patch))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    deactivated_session.closed_by_broker().await;

    let patch = json!({"organization_users": []});
    let reply = f
        .app
        .call("PATCH", &user(&removed), admin, Some(patch))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    removed_session.closed_by_broker().await;

    let reply = f.app.call("DELETE", &user(&deleted), admin, None).await;
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    deleted_session.closed_by_broker().await;

    // The operator whose rights did not change still receives the organization's traffic.
    let mut device = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let sample = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"load": 0.5}});
    device
        .publish(
            &f.device_a.up(UpChannel::Telemetry),
            &sample.to_string(),
            false,
        )
        .await;
    let telemetry = f.device_a.up(UpChannel::Telemetry);
    loop {
        let message = kept_session.next_publish().await;
        if message.topic == telemetry {
            break;
        }
    }
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_organization_loses_its_devices_sessions_and_no_one_elses() {
    let f = fleet().await;
    let mut device_a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let mut device_b = MqttClient::device(f.app.mqtt_addr, &f.device_b, ONLINE).await;
    let path = format!("/api/v1/users/organization/{}/", f.org_a);
    let reply = f
        .app
        .call(
            "PATCH",
            &path,
            Some(&f.app.admin_token),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    device_a.closed_by_broker().await;
    let again = MqttClient::connect(f.device_a.options(f.app.mqtt_addr)).await;
    assert_eq!(refused(again), Some(ConnectReturnCode::NotAuthorized));

    // The other organization's device keeps its session: its next sample is acknowledged.
    let sample = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"load": 0.5}});
    device_b
        .publish(
            &f.device_b.up(UpChannel::Telemetry),
            &sample.to_string(),
            false,
        )
        .await;
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_new_device_key_ends_the_session_opened_with_the_old_one() {
    let f = fleet().await;
    let mut live = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let path = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let new_key = "fresh-key-0123456789abcdef";
    let reply = f
        .app
        .call(
            "PATCH",
            &path,
            Some(&f.manager_a),
            Some(json!({"key": new_key})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    live.closed_by_broker().await;

    let mut renewed = f.device_a.clone();
    renewed.key = new_key.into();
    MqttClient::connect(renewed.options(f.app.mqtt_addr))
        .await
        .expect("the new key works");
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_device_renamed_in_place_keeps_its_session() {
    let f = fleet().await;
    let mut live = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let path = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let reply = f
        .app
        .call(
            "PATCH",
            &path,
            Some(&f.manager_a),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // Judged again and still allowed as it was: the next sample is acknowledged.
    let sample = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"load": 0.5}});
    live.publish(
        &f.device_a.up(UpChannel::Telemetry),
        &sample.to_string(),
        false,
    )
    .await;
    f.app.shutdown().await;
}
