//! `Server::shutdown` releases the data directory: a program embedding the server (or a test
//! restarting it) opens the same directory again the moment shutdown returns, even when the
//! API has just handed work to the background (sending a command to its device).
//!
//! Those sends are short (one store read, one publish) and, untracked, usually still finish
//! while the shutdown drains the HTTP server, so this test guards the contract; it cannot
//! force the race without a seam in the server.

use std::net::SocketAddr;
use std::time::Duration;

use fleetmq::{Config, Server};
use fleetmq_sim::{DeviceConfig, SimDevice};
use fleetmq_store::{CommandId, Store};
use serde_json::{Value, json};

/// Commands created just before the shutdown, each sent to the device by a task of its own.
const COMMANDS: usize = 20;

#[tokio::test]
async fn the_data_directory_opens_again_as_soon_as_shutdown_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    })
    .await
    .expect("server starts");
    let api = Api {
        base: format!("http://{}", server.http_addr()),
        token: server.first_start().expect("a new store").token.clone(),
        http: reqwest::Client::new(),
    };
    let org = api
        .post(
            "/api/v1/users/organization/",
            json!({"name": "sd", "slug": "sd"}),
        )
        .await;
    let device = api
        .post(
            "/api/v1/controller/device/",
            json!({"name": "sd-1", "organization": org["id"], "mac_address": "02:00:00:00:00:01"}),
        )
        .await;
    let id = device["id"].as_str().expect("device id").to_owned();
    // Commands need a device that has connected once.
    let mut config = DeviceConfig::new(
        server.mqtt_addr(),
        "sd",
        id.clone(),
        device["key"].as_str().expect("key"),
    );
    config.telemetry_interval = None;
    config.coordinates_interval = None;
    let mut sim = SimDevice::spawn(config);
    sim.connected().await.expect("device connects");
    api.until(
        &format!("/api/v1/controller/device/{id}/connection/"),
        |r| r["results"][0]["is_working"] == true,
    )
    .await;

    let mut created = Vec::new();
    for i in 0..COMMANDS {
        let command = api
            .post(
                &format!("/api/v1/controller/device/{id}/command/"),
                json!({"type": "custom", "input": {"command": format!("echo {i}")}}),
            )
            .await;
        created.push(command["id"].as_str().expect("command id").to_owned());
    }
    server.shutdown().await;

    // No await in between: nothing of the old server may run before the store is reopened.
    let store = Store::open(dir.path()).expect("the data directory is free after shutdown");
    for id in &created {
        let id: CommandId = id.parse().expect("command id");
        assert!(
            store.blocking().command(id).expect("read").is_some(),
            "command {id:?} was acknowledged by the API, so it is stored"
        );
    }
    drop(store);
    sim.stop().await;
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let reply = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(reply.status(), 200, "{path}");
        reply.json().await.expect("json")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let reply = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{path}: {body:#}");
        body
    }

    /// Reads `path` until `done` holds (the server records connections in the background).
    async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let body = self.get(path).await;
            if done(&body) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never got there: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
