//! fleetmq's bridge on an external broker: a real Mosquitto (Debian's package) on a loopback
//! port enforces the devices' rights, fleetmq (`--mqtt-broker`) subscribes to their uplink
//! and publishes their commands through it, and the REST API shows what they did.
//!
//! Mosquitto's password and ACL files are written here with the rules fleetmq's ACL has
//! (docs/mqtt.md, "External brokers"): each device may publish under its own `up/` and read
//! its own `down/`, the bridge everything under `fleetmq/`.

use fleetmq_bridge::external::ExternalBroker;
use fleetmq_protocol::{CommandRequest, CommandResult, CommandStatus, DownChannel, UpChannel};
use fleetmq_tests::mosquitto::{Mosquitto, write_password_file};
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient, WAIT};
use fleetmq_tests::{TestApp, TwoOrganizations, seconds_ago};
use rumqttc::{ConnectReturnCode, ConnectionError};
use serde_json::json;
use tempfile::TempDir;

const BRIDGE_USER: &str = "fleetmq-bridge";
const BRIDGE_PASSWORD: &str = "bridge-password-for-tests";
const ONLINE: &str = r#"{"status":"online","model":"TL-WR841N","os":"OpenWrt 23.05"}"#;

/// Mosquitto with the bridge's user, fleetmq on it, two organizations with a device each,
/// and the devices' entries in Mosquitto's files.
struct Setup {
    app: TestApp,
    mosquitto: Mosquitto,
    orgs: TwoOrganizations,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    write_password_file(&passwd, &[(BRIDGE_USER, BRIDGE_PASSWORD)])
        .await
        .expect("password file");
    std::fs::write(&acl, acl_file(&[])).expect("acl file");
    let mosquitto = Mosquitto::start(
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    )
    .await
    .expect("mosquitto starts");
    let url = format!("mqtt://{}", mosquitto.addr);
    let app = TestApp::spawn_with(|config| {
        config.external_broker = Some(ExternalBroker {
            credentials: Some((BRIDGE_USER.to_owned(), BRIDGE_PASSWORD.to_owned())),
            ..ExternalBroker::new(url.clone())
        });
    })
    .await;
    assert_eq!(
        app.mqtt_addr, mosquitto.addr,
        "devices connect to the external broker"
    );
    let orgs = app.two_organizations().await;
    let devices = [&orgs.device_a, &orgs.device_b];
    let mut users = vec![(BRIDGE_USER, BRIDGE_PASSWORD)];
    users.extend(devices.iter().map(|d| (d.id.as_str(), d.key.as_str())));
    write_password_file(&passwd, &users)
        .await
        .expect("password file");
    std::fs::write(&acl, acl_file(&devices)).expect("acl file");
    mosquitto.reload().await.expect("mosquitto reloads");
    // Up once the bridge is connected and subscribed to the uplink.
    app.eventually("/healthz", "", |r| r.body["broker"] == "ok")
        .await;
    Setup {
        app,
        mosquitto,
        orgs,
        _dir: dir,
    }
}

fn acl_file(devices: &[&DeviceIdentity]) -> String {
    let mut acl = format!("user {BRIDGE_USER}\ntopic readwrite fleetmq/#\n");
    for d in devices {
        acl.push_str(&format!(
            "user {id}\ntopic write fleetmq/v1/{org}/{id}/up/#\ntopic read fleetmq/v1/{org}/{id}/down/#\n",
            id = d.id,
            org = d.org
        ));
    }
    acl
}

/// Connects a device once Mosquitto has reread its files (a reload sends no event: retry
/// for a while on "not authorized").
async fn device(setup: &Setup, identity: &DeviceIdentity) -> MqttClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match MqttClient::connect(identity.options(setup.mosquitto.addr)).await {
            Ok(mut client) => {
                client
                    .publish(&identity.up(UpChannel::Presence), ONLINE, true)
                    .await;
                return client;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "device never admitted: {e}; mosquitto log: {}",
                setup.mosquitto.log()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn telemetry_and_a_command_go_through_the_external_broker() {
    let s = setup().await;
    let a = &s.orgs.device_a;
    let token = &s.orgs.manager_a;
    let mut client = device(&s, a).await;
    client
        .subscribe(&[&a.down(DownChannel::CommandRequest)])
        .await;

    // Presence from the device's own retained message: the MQTT connection appears online.
    let connections = format!("/api/v1/controller/device/{}/connection/", a.id);
    s.app
        .eventually(&connections, token, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    let detail = s
        .app
        .get(&format!("/api/v1/controller/device/{}/", a.id), token)
        .await;
    assert_eq!(detail.body["model"], "TL-WR841N");

    let payload = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"cpu": 42}});
    client
        .publish(&a.up(UpChannel::Telemetry), &payload.to_string(), false)
        .await;
    let telemetry = format!("/api/v1/controller/device/{}/telemetry/", a.id);
    let stored = s
        .app
        .eventually(&telemetry, token, |r| r.body["count"] == 1)
        .await;
    assert_eq!(stored.body["latest"]["metrics"]["cpu"], 42);

    let commands = format!("/api/v1/controller/device/{}/command/", a.id);
    let created = s
        .app
        .post(
            &commands,
            token,
            json!({"type": "custom", "input": {"command": "uptime"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let message = client.next_publish().await;
    assert_eq!(message.topic, a.down(DownChannel::CommandRequest));
    let request = CommandRequest::parse(&message.payload).expect("a command request");
    assert_eq!(request.id.to_string(), created.str("id"));
    let result = CommandResult {
        id: request.id,
        status: CommandStatus::Success,
        output: "up 3 days".to_owned(),
        exit_code: 0,
    };
    let result = String::from_utf8(result.to_bytes()).expect("utf-8");
    client
        .publish(&a.up(UpChannel::CommandResult), &result, false)
        .await;
    let done = s
        .app
        .eventually(&format!("{commands}{}/", created.str("id")), token, |r| {
            r.body["status"] == "success"
        })
        .await;
    assert_eq!(done.body["output"], "up 3 days");

    // The will, fired by the broker when the device vanishes, turns it offline.
    client.drop_connection();
    s.app
        .eventually(&connections, token, |r| {
            r.body["results"][0]["is_working"] == false
        })
        .await;
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

#[tokio::test]
async fn the_external_broker_refuses_a_wrong_key_and_another_devices_topics() {
    let s = setup().await;
    let (a, b) = (&s.orgs.device_a, &s.orgs.device_b);
    // Admitted first, so the files are loaded before the wrong key is tried.
    let mut client = device(&s, a).await;

    let mut wrong = a.options(s.mosquitto.addr);
    wrong.set_credentials(a.id.clone(), b.key.clone());
    match MqttClient::connect(wrong).await {
        Err(ConnectionError::ConnectionRefused(code)) => assert!(
            matches!(
                code,
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            ),
            "{code:?}"
        ),
        Err(e) => panic!("refused differently: {e}"),
        Ok(_) => panic!("a wrong key was admitted"),
    }

    // Mosquitto grants the subscription and checks read access per message, as fleetmq's
    // own broker does: a's subscription to b's commands delivers nothing of b's.
    client
        .subscribe(&[
            &b.down(DownChannel::CommandRequest),
            &a.down(DownChannel::CommandRequest),
        ])
        .await;
    let mut other = device(&s, b).await;
    other
        .subscribe(&[&b.down(DownChannel::CommandRequest)])
        .await;
    for d in [a, b] {
        let connections = format!("/api/v1/controller/device/{}/connection/", d.id);
        s.app
            .eventually(&connections, &s.app.admin_token, |r| {
                r.body["results"][0]["is_working"] == true
            })
            .await;
    }
    let command = |d: &DeviceIdentity| {
        let app = &s.app;
        let path = format!("/api/v1/controller/device/{}/command/", d.id);
        async move {
            let created = app
                .post(&path, &app.admin_token, json!({"type": "reboot"}))
                .await;
            assert_eq!(created.status, 201, "{:?}", created.body);
            created.str("id")
        }
    };
    let for_b = command(b).await;
    let delivered = other.next_publish().await;
    assert_eq!(
        CommandRequest::parse(&delivered.payload)
            .map(|r| r.id.to_string())
            .ok(),
        Some(for_b.clone())
    );
    // b's command went out first; a's first message is its own.
    let for_a = command(a).await;
    let first = client.next_publish().await;
    assert_eq!(first.topic, a.down(DownChannel::CommandRequest));
    assert_eq!(
        CommandRequest::parse(&first.payload)
            .map(|r| r.id.to_string())
            .ok(),
        Some(for_a)
    );
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}
