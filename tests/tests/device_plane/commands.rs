use fleetmq_protocol::{
    CommandRequest, CommandResult, CommandStatus, CommandType, DownChannel, UpChannel,
};
use fleetmq_tests::mqtt::MqttClient;
use serde_json::json;

use crate::{ONLINE, fleet};

pub(crate) async fn answer(
    device: &mut MqttClient,
    identity: &fleetmq_tests::mqtt::DeviceIdentity,
) -> CommandRequest {
    let message = device.next_publish().await;
    assert_eq!(message.topic, identity.down(DownChannel::CommandRequest));
    let request = CommandRequest::parse(&message.payload).expect("a command request");
    let output = match request.kind {
        CommandType::Custom => request.input["command"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let result = CommandResult {
        id: request.id,
        status: CommandStatus::Success,
        output,
        exit_code: 0,
    };
    let payload = String::from_utf8(result.to_bytes()).expect("utf-8");
    device
        .publish(&identity.up(UpChannel::CommandResult), &payload, false)
        .await;
    request
}

#[tokio::test]
async fn a_command_round_trips_through_the_device() {
    let f = fleet().await;
    let commands = format!("/api/v1/controller/device/{}/command/", f.device_a.id);
    let connections = format!("/api/v1/controller/device/{}/connection/", f.device_a.id);
    let never = f.app.get(&connections, &f.manager_a).await;
    assert_eq!(
        never.body["count"], 1,
        "its MQTT connection came with the device: {:?}",
        never.body
    );
    assert_eq!(
        never.body["results"][0]["is_working"],
        serde_json::Value::Null,
        "never connected: not tried yet"
    );

    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    a.subscribe(&[&f.device_a.down(DownChannel::CommandRequest)])
        .await;
    f.app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;

    let created = f.custom_command("echo hello").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["status"], "in-progress");
    let request = answer(&mut a, &f.device_a).await;
    assert_eq!(request.id.to_string(), created.str("id"));

    let detail = format!("{commands}{}/", created.str("id"));
    let done = f
        .app
        .eventually(&detail, &f.manager_a, |r| r.body["status"] == "success")
        .await;
    assert_eq!(done.body["output"], "echo hello");
    assert_eq!(f.app.get(&commands, &f.manager_a).await.body["count"], 1);

    let invalid = f.app.post(&commands, &f.manager_a, json!({"type": "change_password", "input": {"password": "abcdef", "confirm_password": "abcdeg"}})).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.body["input"]["confirm_password"],
        json!(["Passwords do not match."])
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_device_cannot_answer_another_devices_command() {
    let f = fleet().await;
    let mut a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    a.subscribe(&[&f.device_a.down(DownChannel::CommandRequest)])
        .await;
    let mut b = MqttClient::device(f.app.mqtt_addr, &f.device_b, ONLINE).await;
    let connections = format!("/api/v1/controller/device/{}/connection/", f.device_a.id);
    f.app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    let commands = format!("/api/v1/controller/device/{}/command/", f.device_a.id);
    let created = f
        .app
        .post(&commands, &f.manager_a, json!({"type": "reboot"}))
        .await;
    let id = created.str("id");

    let forged = CommandResult {
        id: id.parse().expect("uuid"),
        status: CommandStatus::Failed,
        output: "pwned".into(),
        exit_code: 1,
    };
    b.publish(
        &f.device_b.up(UpChannel::CommandResult),
        &String::from_utf8(forged.to_bytes()).expect("utf-8"),
        false,
    )
    .await;
    answer(&mut a, &f.device_a).await;
    let done = f
        .app
        .eventually(&format!("{commands}{id}/"), &f.manager_a, |r| {
            r.body["status"] != "in-progress"
        })
        .await;
    assert_eq!(
        done.body["status"], "success",
        "only the device's own answer counts"
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn an_offline_device_gets_its_command_when_it_reconnects() {
    let f = fleet().await;
    let a = MqttClient::device(f.app.mqtt_addr, &f.device_a, ONLINE).await;
    let connections = format!("/api/v1/controller/device/{}/connection/", f.device_a.id);
    f.app
        .eventually(&connections, &f.manager_a, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    a.disconnect().await;

    let commands = format!("/api/v1/controller/device/{}/command/", f.device_a.id);
    let created = f.custom_command("later").await;
    assert_eq!(created.status, 201);

    let mut again = MqttClient::connect(f.device_a.options(f.app.mqtt_addr))
        .await
        .expect("reconnects");
    again
        .subscribe(&[&f.device_a.down(DownChannel::CommandRequest)])
        .await;
    again
        .publish(&f.device_a.up(UpChannel::Presence), ONLINE, true)
        .await;
    let request = answer(&mut again, &f.device_a).await;
    assert_eq!(request.id.to_string(), created.str("id"));
    f.app
        .eventually(
            &format!("{commands}{}/", created.str("id")),
            &f.manager_a,
            |r| r.body["status"] == "success",
        )
        .await;
    f.app.shutdown().await;
}

#[tokio::test]
async fn commands_on_deactivated_devices_are_forbidden_but_listed() {
    let f = fleet().await;
    let commands = format!("/api/v1/controller/device/{}/command/", f.device_a.id);
    f.app
        .call(
            "POST",
            &format!("/api/v1/controller/device/{}/deactivate/", f.device_a.id),
            Some(&f.manager_a),
            None,
        )
        .await;
    assert_eq!(
        f.app
            .post(&commands, &f.manager_a, json!({"type": "reboot"}))
            .await
            .status,
        403
    );
    assert_eq!(f.app.get(&commands, &f.manager_a).await.status, 200);
    let other = f
        .app
        .get(
            &format!("/api/v1/controller/device/{}/command/", f.device_b.id),
            &f.manager_a,
        )
        .await;
    assert_eq!(other.status, 404, "another tenant's device is not found");
    f.app.shutdown().await;
}
