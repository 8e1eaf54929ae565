//! The simulator against the whole fleetmq server: devices registered through the REST API
//! (as the `fleetmq-sim` binary does) log in with their generated keys, and a command sent
//! through the REST API comes back answered.

use std::net::SocketAddr;
use std::time::Duration;

use fleetmq::{Config, Server};
use fleetmq_sim::registration::{ApiClient, device_mac, device_name};
use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);

async fn start_server(dir: &tempfile::TempDir) -> Server {
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_password: Some("admin-password-for-sim-tests".to_owned()),
        ..Config::default()
    };
    Server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn devices_registered_through_the_api_connect_and_answer_rest_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir).await;
    let token = server.first_start().expect("a new store").token.clone();
    let base = format!("http://{}", server.http_addr());
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/api/v1/users/organization/"))
        .bearer_auth(&token)
        .json(&json!({"name": "Sim Org", "slug": "sim-org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let api = ApiClient::new(&base, &token);
    let org = api.organization_id("sim-org").await.unwrap();
    let mut registered = Vec::new();
    for i in 0..3 {
        let name = device_name("test", i);
        registered.push(
            api.create_device(org, &name, &device_mac(0x7e57, i), "sim-board")
                .await
                .unwrap(),
        );
    }
    assert!(api.organization_id("no-such-org").await.is_err());
    let listed = api.devices_named("sim-org", "sim-test-").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(registered.iter().all(|r| listed.contains(r)));

    let mut devices = Vec::new();
    for credentials in &registered {
        let mut config = DeviceConfig::new(
            server.mqtt_addr(),
            "sim-org",
            credentials.id.to_string(),
            &credentials.key,
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        let mut device = SimDevice::spawn(config);
        assert_eq!(
            timeout(WAIT, device.connected()).await.unwrap(),
            Some(SimEvent::Connected)
        );
        devices.push(device);
    }

    // The REST side only learns of the device through the bridge; poll it (bounded).
    let commands = format!(
        "{base}/api/v1/controller/device/{}/command/",
        registered[0].id
    );
    let deadline = Instant::now() + WAIT;
    let command: Value = loop {
        let response = http
            .post(&commands)
            .bearer_auth(&token)
            .json(&json!({"type": "custom", "input": {"command": "echo from rest"}}))
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            break response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "command never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handled = timeout(
        WAIT,
        devices[0].wait_for(|e| matches!(e, SimEvent::CommandHandled { .. })),
    )
    .await
    .unwrap();
    assert!(matches!(handled, Some(SimEvent::CommandHandled { .. })));
    let detail = format!("{commands}{}/", command["id"].as_str().unwrap());
    let deadline = Instant::now() + WAIT;
    let done = loop {
        let body: Value = http
            .get(&detail)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["status"] == "success" {
            break body;
        }
        assert!(Instant::now() < deadline, "command never succeeded: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["output"], "echo from rest");

    for device in devices {
        timeout(WAIT, device.stop()).await.unwrap();
    }
    server.shutdown().await;
}
