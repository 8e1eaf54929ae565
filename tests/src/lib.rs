//! Helpers for fleetmq's end-to-end tests: [`TestApp::spawn`] starts the whole server on free
//! ports with a temporary data directory, and typed helpers drive it over real sockets.
//!
//! # Layout
//! - [`TestApp`] — one running server and an HTTP client.
//! - [`Reply`] — a status and a JSON body.
//! - [`mqtt`] — a real MQTT client for devices and operators.
//! - [`events`] — the live event stream, read event by event.
//! - [`fixtures`] — fleets written straight into a store; a process's RSS.
//! - [`release`] — the release binaries as separate processes, for benchmarks.

pub mod events;
pub mod firmware;
pub mod fixtures;
pub mod mosquitto;
pub mod mqtt;
pub mod postgres;
pub mod rabbitmq;
pub mod release;

use std::net::SocketAddr;

use fleetmq::{Config, Server};
use serde_json::{Value, json};
use tempfile::TempDir;

/// An answer of the API.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body parsed as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl Reply {
    /// `body[key]` as a string (empty when missing).
    pub fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_default().to_owned()
    }
}

/// A running fleetmq on free ports with its own data directory.
pub struct TestApp {
    /// Base URL of the REST API, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Where MQTT listens.
    pub mqtt_addr: SocketAddr,
    /// Where MQTT over TLS listens, when the configuration turns it on.
    pub mqtts_addr: Option<SocketAddr>,
    /// Token of the first-start `admin` superuser.
    pub admin_token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    server: Option<Server>,
    data_dir: TempDir,
    /// The PostgreSQL database of its tables, when the suite runs on PostgreSQL.
    postgres: Option<String>,
}

/// The password `admin` gets in tests.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

impl TestApp {
    /// Starts a server on a fresh data directory.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server whose configuration `tweak` adjusts (timeouts, retention, ...).
    pub async fn spawn_with(tweak: impl Fn(&mut Config)) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let postgres = store_engine();
        let mut config = config(&data_dir, postgres.as_deref());
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let admin_token = server
            .first_start()
            .map(|f| f.token.clone())
            .expect("a new store creates the admin");
        TestApp {
            base: format!("http://{}", server.http_addr()),
            mqtt_addr: server.mqtt_addr(),
            mqtts_addr: server.mqtts_addr(),
            admin_token,
            http: reqwest::Client::new(),
            server: Some(server),
            data_dir,
            postgres,
        }
    }

    /// Stops the server and starts a new one on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// [`restart`](Self::restart) with a configuration `tweak` adjusts (the tweak given to
    /// [`spawn_with`](Self::spawn_with) is not kept).
    pub async fn restart_with(&mut self, tweak: impl Fn(&mut Config)) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let mut config = config(&self.data_dir, self.postgres.as_deref());
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        assert!(
            server.first_start().is_none(),
            "a restart must not recreate the admin"
        );
        self.base = format!("http://{}", server.http_addr());
        self.mqtt_addr = server.mqtt_addr();
        self.mqtts_addr = server.mqtts_addr();
        self.server = Some(server);
    }

    /// The server's data directory (firmware files live in `firmware/` under it).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Whether its tables are in PostgreSQL (the suite runs with `FLEETMQ_TEST_STORE=postgres`).
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Where the REST API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("the base URL names an address")
    }

    /// Stops the server.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// The text of `GET /metrics` (Prometheus exposition; no authentication).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics is text")
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Creates an organization as admin; returns its id.
    pub async fn create_org(&self, slug: &str) -> String {
        let reply = self
            .post(
                "/api/v1/users/organization/",
                &self.admin_token,
                json!({"name": slug, "slug": slug}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.str("id")
    }

    /// Creates a user as admin with the given groups and managed organizations; returns a
    /// token of that user.
    pub async fn create_user(&self, username: &str, groups: &[&str], manages: &[&str]) -> String {
        let memberships: Vec<Value> = manages
            .iter()
            .map(|org| json!({"organization": org, "is_admin": true}))
            .collect();
        let reply = self
            .post(
                "/api/v1/users/user/",
                &self.admin_token,
                json!({"username": username, "password": "secret-password", "groups": groups,
                       "organization_users": memberships}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let token = self
            .call(
                "POST",
                "/api/v1/users/token/",
                None,
                Some(json!({"username": username, "password": "secret-password"})),
            )
            .await;
        assert_eq!(token.status, 200, "{:?}", token.body);
        token.str("token")
    }

    /// The id of the user named `username` (asked as the admin).
    pub async fn user_id(&self, username: &str) -> String {
        let users = self
            .get("/api/v1/users/user/?page_size=100", &self.admin_token)
            .await;
        users.body["results"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["username"] == username))
            .and_then(|u| u["id"].as_str())
            .expect("the user exists")
            .to_owned()
    }

    /// Registers a device named `name` in `org` with a MAC derived from the name.
    pub async fn create_device(&self, token: &str, org: &str, name: &str) -> Reply {
        self.post(
            "/api/v1/controller/device/",
            token,
            json!({
            "name": name, "organization": org, "mac_address": mac_for(name)}),
        )
        .await
    }
}

impl TestApp {
    /// Registers a device and returns what it needs to connect over MQTT.
    pub async fn register_device(
        &self,
        token: &str,
        org_id: &str,
        org_slug: &str,
        name: &str,
    ) -> mqtt::DeviceIdentity {
        let reply = self.create_device(token, org_id, name).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        mqtt::DeviceIdentity {
            id: reply.str("id"),
            key: reply.str("key"),
            org: org_slug.to_owned(),
        }
    }

    /// Polls `path` until `done` holds for its answer. For state the server writes after an
    /// MQTT message was acknowledged, where no event tells the test it is stored.
    pub async fn eventually(
        &self,
        path: &str,
        token: &str,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        self.eventually_within(mqtt::WAIT, path, token, done).await
    }

    /// [`TestApp::eventually`] with its own patience (long scenarios such as batch upgrades).
    pub async fn eventually_within(
        &self,
        patience: std::time::Duration,
        path: &str,
        token: &str,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let reply = self.get(path, token).await;
            if done(&reply) {
                return reply;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never satisfied: {:?}",
                reply.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Two organizations (`org-a`, `org-b`), a device in each (`dev-a`, `dev-b`) and `alice`, an
/// Operator who manages org-a only: the usual tenancy setting of the end-to-end tests.
pub struct TwoOrganizations {
    /// Id of org-a.
    pub org_a: String,
    /// Id of org-b.
    pub org_b: String,
    /// `alice`'s token (also her MQTT password).
    pub manager_a: String,
    /// org-a's device.
    pub device_a: mqtt::DeviceIdentity,
    /// org-b's device.
    pub device_b: mqtt::DeviceIdentity,
}

impl TestApp {
    /// Creates [`TwoOrganizations`] through the API.
    pub async fn two_organizations(&self) -> TwoOrganizations {
        let org_a = self.create_org("org-a").await;
        let org_b = self.create_org("org-b").await;
        let manager_a = self.create_user("alice", &["Operator"], &[&org_a]).await;
        let device_a = self
            .register_device(&manager_a, &org_a, "org-a", "dev-a")
            .await;
        let device_b = self
            .register_device(&self.admin_token, &org_b, "org-b", "dev-b")
            .await;
        TwoOrganizations {
            org_a,
            org_b,
            manager_a,
            device_a,
            device_b,
        }
    }
}

/// A stable, valid MAC address derived from a name.
pub fn mac_for(name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn config(dir: &TempDir, postgres: Option<&str>) -> Config {
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        ..Config::default()
    };
    config.store.postgres = postgres.map(fleetmq_store::PostgresOptions::new);
    config
}

/// The store a benchmark's server runs on, chosen with `--store redb` (the default) or
/// `--store postgres` (a throwaway PostgreSQL server with its default durability: every commit
/// flushed, as redb's is).
pub struct BenchStore {
    /// What to open the store with (the server's `Config::store`).
    pub options: fleetmq_store::StoreOptions,
    /// How the figures name it.
    pub label: &'static str,
    _server: Option<postgres::TempPostgres>,
}

impl BenchStore {
    /// The store `kind` names (`redb` or `postgres`).
    pub fn start(kind: &str) -> anyhow::Result<BenchStore> {
        match kind {
            "redb" => Ok(BenchStore {
                options: fleetmq_store::StoreOptions::default(),
                label: "redb (embedded file)",
                _server: None,
            }),
            "postgres" => {
                let server = postgres::TempPostgres::start(postgres::Durability::Full)?;
                let options = fleetmq_store::StoreOptions {
                    postgres: Some(fleetmq_store::PostgresOptions::new(server.database()?)),
                    ..fleetmq_store::StoreOptions::default()
                };
                Ok(BenchStore {
                    options,
                    label: "PostgreSQL (same machine, loopback, fsync on)",
                    _server: Some(server),
                })
            }
            other => anyhow::bail!("--store {other}: expected redb or postgres"),
        }
    }
}

impl BenchStore {
    /// `count` more nodes on this (PostgreSQL) store beside one already running the device
    /// plane: standbys that serve the REST API and follow its commits, and with
    /// [`ExternalBroker::shared_uplink`](fleetmq_bridge::external::ExternalBroker::shared_uplink)
    /// store their share of the telemetry. Their device plane would start on `broker` (the
    /// first node's) if they took the lease over, which a benchmark's run never lets happen.
    pub async fn standbys(
        &self,
        count: usize,
        data_dir: &std::path::Path,
        broker: fleetmq_bridge::external::ExternalBroker,
    ) -> anyhow::Result<Vec<Server>> {
        anyhow::ensure!(
            count == 0 || self.options.postgres.is_some(),
            "--nodes above 1 needs --store postgres"
        );
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(
                Server::start(Config {
                    data_dir: data_dir.to_path_buf(),
                    http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    store: self.options.clone(),
                    external_broker: Some(broker.clone()),
                    ..Config::default()
                })
                .await?,
            );
        }
        Ok(nodes)
    }
}

/// The environment variable that runs the suite on PostgreSQL: `FLEETMQ_TEST_STORE=postgres`
/// (unset or `redb`: the embedded file).
pub const STORE_ENGINE_VAR: &str = "FLEETMQ_TEST_STORE";

/// A fresh PostgreSQL database for a new app when the suite runs on PostgreSQL (one
/// throwaway server per test binary), else `None`.
pub fn store_engine() -> Option<String> {
    match std::env::var(STORE_ENGINE_VAR).as_deref() {
        Ok("postgres") => {
            static SERVER: std::sync::OnceLock<postgres::TempPostgres> = std::sync::OnceLock::new();
            let server = SERVER.get_or_init(|| {
                postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts")
            });
            Some(server.database().expect("a fresh database"))
        }
        Ok("redb") | Err(_) => None,
        Ok(other) => panic!("{STORE_ENGINE_VAR}={other}: expected postgres or redb"),
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body }
}

/// A whole second `seconds` before now, as devices stamp their samples. Tests stamp telemetry
/// relative to now: a fixed date ages past retention (main went red that way on 2026-11-29).
pub fn seconds_ago(seconds: i64) -> fleetmq_store::Timestamp {
    let now_secs = fleetmq_store::Timestamp::now().as_micros() / 1_000_000;
    fleetmq_store::Timestamp::from_micros((now_secs - seconds) * 1_000_000)
}
