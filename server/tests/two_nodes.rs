//! Two fleetmq nodes on one PostgreSQL database and one external broker (Mosquitto): node A
//! runs the device plane, node B serves the REST API as a standby. A batch upgrade of 200
//! simulated devices started on A finishes after A is killed (kill -9) mid-batch: B takes the
//! device-plane lease and resumes it, every device upgraded exactly once. Each node sees the
//! other's writes at once, and the nodes share the devices' telemetry (`--mqtt-shared-uplink`).

mod support;

#[allow(dead_code)]
#[path = "../../tests/src/postgres.rs"]
mod postgres;

#[allow(dead_code)]
#[path = "../../tests/src/mosquitto.rs"]
mod mosquitto;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent};
use serde_json::{Value, json};
use support::{Running, free_port, start_with, terminate};

const DEVICES: usize = 200;
const VERSION: &str = "4.2.0";
const BRIDGE_USER: &str = "fleetmq-bridge";
const BRIDGE_PASSWORD: &str = "bridge-password-for-two-nodes";
/// Seconds the device-plane lease lasts: B takes over within about this long.
const LEASE: &str = "3";

struct Api {
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {body:#}");
        body
    }

    async fn post(&self, node: &Running, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", node.http);
        self.send(reqwest::Method::POST, &url, Some(body)).await
    }

    async fn get(&self, node: &Running, path: &str) -> Value {
        let url = format!("{}{path}", node.http);
        self.send(reqwest::Method::GET, &url, None).await
    }

    /// Polls `path` on `node` until `done` holds (a batch's end sends no event to await).
    async fn until(&self, node: &Running, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let reply = self
                .http
                .get(format!("{}{path}", node.http))
                .bearer_auth(&self.token)
                .send()
                .await;
            if let Ok(reply) = reply
                && let Ok(body) = reply.json::<Value>().await
            {
                if done(&body) {
                    return body;
                }
                if tokio::time::Instant::now() >= deadline {
                    let stuck = self
                        .get(
                            node,
                            "/api/v1/firmware-upgrader/upgrade-operation/?status=in-progress",
                        )
                        .await;
                    panic!("{path} never got there: {body:#}\nin progress: {stuck:#}");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not answer {path}",
                node.http
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node on `store` and the Mosquitto at `broker`, keeping Mosquitto's files in `files`.
fn node(data: &Path, store: &str, broker: std::net::SocketAddr, files: &Path) -> Running {
    let broker_url = format!("mqtt://{broker}");
    let files_dir = files.display().to_string();
    let pid_file = files.join("mosquitto.pid").display().to_string();
    start_with(
        data,
        free_port(),
        free_port(),
        &[
            "--store",
            store,
            "--lease-lifetime",
            LEASE,
            "--mqtt-broker",
            &broker_url,
            "--mqtt-broker-username",
            BRIDGE_USER,
            "--mqtt-broker-password",
            BRIDGE_PASSWORD,
            "--mqtt-shared-uplink",
            "--mosquitto-files",
            &files_dir,
            "--mosquitto-pid-file",
            &pid_file,
            "--upgrade-backoff",
            "1",
        ],
    )
}

/// The id of device `two-0` (read through `node`).
async fn watchers_first_device(api: &Api, node: &Running, org: &Value) -> String {
    let found = api
        .get(
            node,
            &format!(
                "/api/v1/controller/device/?organization={}&name=two-0",
                org["id"].as_str().expect("org id")
            ),
        )
        .await;
    found["results"][0]["id"]
        .as_str()
        .expect("device two-0")
        .to_owned()
}

/// A counter on a node's /metrics (`None` while the node does not answer).
async fn metric(api: &Api, node: &Running, name: &str) -> Option<u64> {
    let reply = api
        .http
        .get(format!("{}/metrics", node.http))
        .bearer_auth(&api.token)
        .send()
        .await
        .ok()?;
    let text = reply.text().await.ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

/// `fleetmq_device_plane_running` on a node's /metrics.
async fn runs_device_plane(api: &Api, node: &Running) -> bool {
    metric(api, node, "fleetmq_device_plane_running").await == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_started_on_node_a_finishes_on_node_b_after_a_is_killed() {
    let pg = postgres::TempPostgres::start(postgres::Durability::Off).expect("PostgreSQL starts");
    let store = pg.database().expect("a database");
    // Both nodes share the data directory (firmware files, the sealing secret), as they would
    // share a volume.
    let data = tempfile::tempdir().expect("tempdir");
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = files.path().join("passwd");
    // Mosquitto needs its files to start; the node running the device plane rewrites them.
    mosquitto::write_password_file(&passwd, &[(BRIDGE_USER, BRIDGE_PASSWORD)])
        .await
        .expect("password file");
    let acl = files.path().join("acl");
    std::fs::write(
        &acl,
        format!("user {BRIDGE_USER}\ntopic readwrite fleetmq/#\n"),
    )
    .expect("acl");
    let broker = mosquitto::Mosquitto::start(
        files.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\npid_file {}\n\
             max_queued_messages 10000\n",
            passwd.display(),
            acl.display(),
            files.path().join("mosquitto.pid").display()
        ),
    )
    .await
    .expect("mosquitto starts");

    let mut a = node(data.path(), &store, broker.addr, files.path());
    let api = Api {
        token: a.token.clone(),
        http: reqwest::Client::new(),
    };
    assert!(!api.token.is_empty(), "node A created the first admin");
    // A runs the device plane before B starts, so B is the standby.
    api.until(&a, "/healthz", |h| h["broker"] == "ok").await;
    assert!(runs_device_plane(&api, &a).await);
    let b = node(data.path(), &store, broker.addr, files.path());
    assert!(
        b.token.is_empty(),
        "the admin exists already: no first start on B"
    );
    assert!(!runs_device_plane(&api, &b).await, "B is a standby");
    // A standby answers REST calls and is healthy while another node runs the device plane.
    api.until(&b, "/healthz", |h| h["status"] == "ok").await;

    let org = api
        .post(
            &a,
            "/api/v1/users/organization/",
            json!({"name": "two", "slug": "two"}),
        )
        .await;
    let category = api
        .post(
            &a,
            "/api/v1/firmware-upgrader/category/",
            json!({"name": "sim", "organization": org["id"]}),
        )
        .await;
    let build = api
        .post(
            &a,
            "/api/v1/firmware-upgrader/build/",
            json!({"category": category["id"], "version": VERSION, "os": "OpenWrt"}),
        )
        .await;
    let build = build["id"].as_str().expect("build id").to_owned();
    let form = reqwest::multipart::Form::new()
        .text("type", "fleetmq-sim-squashfs-sysupgrade.bin")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![9u8; 64 * 1024]).file_name("fw.bin"),
        );
    let upload = api
        .http
        .post(format!(
            "{}/api/v1/firmware-upgrader/build/{build}/image/",
            a.http
        ))
        .bearer_auth(&api.token)
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(upload.status().as_u16(), 201);

    let mut installs = Vec::new();
    for i in 0..DEVICES {
        let name = format!("two-{i}");
        let device = api
            .post(
                &a,
                "/api/v1/controller/device/",
                json!({"name": name, "organization": org["id"], "model": "sim-board",
                       "mac_address": format!("02:00:00:01:{:02x}:{:02x}", i / 256, i % 256)}),
            )
            .await;
        let id = device["id"].as_str().expect("id").to_owned();
        if i == 0 {
            // Written on A, read on B at once.
            let seen = api
                .get(&b, &format!("/api/v1/controller/device/{id}/"))
                .await;
            assert_eq!(seen["name"], name);
        }
        let mut config = DeviceConfig::new(
            broker.addr,
            "two",
            id.clone(),
            device["key"].as_str().expect("key"),
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config.install_time = Duration::from_millis(300);
        installs.push((id, SimDevice::spawn(config)));
    }
    for (id, sim) in &mut installs {
        // Admitted once A has written the device into Mosquitto's files and Mosquitto reread
        // them.
        tokio::time::timeout(Duration::from_secs(60), sim.connected())
            .await
            .unwrap_or_else(|_| panic!("device {id} not admitted within 60 s"))
            .expect("device connects");
    }

    // Each device sends a sample; the broker hands each to one node, and both store some.
    for (_, sim) in &installs {
        sim.publish_telemetry_now().await.expect("telemetry sent");
    }
    let stored = "fleetmq_shared_uplink_stored_total";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (on_a, on_b) = loop {
        let (on_a, on_b) = (
            metric(&api, &a, stored).await.unwrap_or(0),
            metric(&api, &b, stored).await.unwrap_or(0),
        );
        if on_a + on_b >= DEVICES as u64 {
            break (on_a, on_b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{on_a} + {on_b} of {DEVICES} samples stored after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(on_a + on_b, DEVICES as u64, "each sample stored once");
    assert!(
        on_a > 0 && on_b > 0,
        "both nodes store telemetry: {on_a} and {on_b}"
    );
    for (id, _) in installs.iter().step_by(40) {
        for node in [&a, &b] {
            let telemetry = api
                .get(node, &format!("/api/v1/controller/device/{id}/telemetry/"))
                .await;
            assert!(
                telemetry["latest"].is_object(),
                "device {id}: {telemetry:#}"
            );
        }
    }

    let mut watchers = Vec::new();
    for (id, mut sim) in installs {
        watchers.push(tokio::spawn(async move {
            let mut installed = Vec::new();
            while let Some(event) = sim.next_event().await {
                if let SimEvent::Installed { version } = event {
                    installed.push(version);
                    break;
                }
            }
            (id, installed, sim)
        }));
    }

    // Through the standby: a device call is forwarded to A, which runs the device plane …
    let first = watchers_first_device(&api, &b, &org).await;
    let images = api
        .get(
            &b,
            &format!("/api/v1/devices/{first}/npm.system_update/2.0/images"),
        )
        .await;
    assert!(images["items"].is_array(), "{images:#}");
    // … a command stored on B is picked up and sent by A …
    let command = api
        .post(
            &b,
            &format!("/api/v1/controller/device/{first}/command/"),
            json!({"type": "custom", "input": {"command": "uptime"}}),
        )
        .await;
    let command = format!(
        "/api/v1/controller/device/{first}/command/{}/",
        command["id"].as_str().expect("command id")
    );
    let answered = api
        .until(&a, &command, |c| c["status"] != "in-progress")
        .await;
    assert_eq!(answered["status"], "success", "{answered:#}");
    // … and a user deactivated on B is refused on A at once, though A knew their token.
    let ops = api
        .post(
            &a,
            "/api/v1/users/user/",
            json!({"username": "ops", "password": "ops-password-1234", "is_superuser": true}),
        )
        .await;
    let ops_token = api
        .http
        .post(format!("{}/api/v1/users/token/", a.http))
        .json(&json!({"username": "ops", "password": "ops-password-1234"}))
        .send()
        .await
        .expect("token request")
        .json::<Value>()
        .await
        .expect("token");
    let ops_token = ops_token["token"].as_str().expect("a token").to_owned();
    let as_ops = |node: &Running| {
        api.http
            .get(format!(
                "{}/api/v1/controller/device/?page_size=1",
                node.http
            ))
            .bearer_auth(&ops_token)
            .send()
    };
    assert_eq!(as_ops(&a).await.expect("sent").status(), 200);
    api.send(
        reqwest::Method::PATCH,
        &format!(
            "{}/api/v1/users/user/{}/",
            b.http,
            ops["id"].as_str().expect("id")
        ),
        Some(json!({"is_active": false})),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while as_ops(&a).await.expect("sent").status() != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A still accepts a token whose user B deactivated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let batch = api
        .post(
            &a,
            &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
            json!({"upgrade_all": true, "max_parallel": 20}),
        )
        .await;
    let batch = format!(
        "/api/v1/firmware-upgrader/batch-upgrade-operation/{}/",
        batch["batch"].as_str().expect("batch id")
    );
    // B sees the batch A is running.
    let mid = api
        .until(&b, &batch, |b| {
            b["status_counts"]["success"]
                .as_u64()
                .is_some_and(|n| n >= 40)
        })
        .await;
    assert_eq!(mid["status"], "in-progress", "{mid:#}");

    // kill -9: A renews nothing more; once its lease expires B takes the device plane over.
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    let done = api
        .until(&b, &batch, |b| {
            b["status"].is_string() && b["status"] != "in-progress" && b["status"] != "idle"
        })
        .await;
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(
        done["progress_report"],
        format!("{DEVICES} out of {DEVICES}")
    );
    assert!(
        runs_device_plane(&api, &b).await,
        "B runs the device plane now"
    );

    // Every device installed the build, none twice, and no operation was lost or doubled.
    let mut counts = HashMap::new();
    for watcher in watchers {
        let (id, installed, mut sim) = watcher.await.expect("install watcher");
        assert_eq!(installed, vec![VERSION.to_owned()], "device {id}");
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1), sim.next_event()).await
        {
            assert!(
                !matches!(event, SimEvent::Installed { .. }),
                "device {id} installed twice"
            );
        }
        *counts.entry(id).or_insert(0) += 1;
        sim.stop().await;
    }
    assert_eq!(counts.len(), DEVICES);
    let operations = api
        .get(
            &b,
            "/api/v1/firmware-upgrader/upgrade-operation/?page_size=1",
        )
        .await;
    assert_eq!(
        operations["count"], DEVICES,
        "no operation lost or duplicated"
    );
    let succeeded = api
        .get(
            &b,
            "/api/v1/firmware-upgrader/upgrade-operation/?status=success&page_size=1",
        )
        .await;
    assert_eq!(succeeded["count"], DEVICES, "{operations:#}");
    assert!(terminate(b).success());
    broker.stop().await;
}
