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

use std::path::Path;
use std::time::Duration;

use fleetmq_sim::{DeviceConfig, SimDevice};
use serde_json::{Value, json};
use support::{Api, Running, free_port, installed_once, start_with, terminate, watch_install};

const DEVICES: usize = 200;
const VERSION: &str = "4.2.0";
const BRIDGE_USER: &str = "fleetmq-bridge";
const BRIDGE_PASSWORD: &str = "bridge-password-for-two-nodes";
/// Seconds the device-plane lease lasts: B takes over within about this long.
const LEASE: &str = "3";

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

/// The id of device `two-0`.
async fn watchers_first_device(api: &Api, org: &Value) -> String {
    let found = api
        .get(&format!(
            "/api/v1/controller/device/?organization={}&name=two-0",
            org["id"].as_str().expect("org id")
        ))
        .await;
    found["results"][0]["id"]
        .as_str()
        .expect("device two-0")
        .to_owned()
}

/// `fleetmq_device_plane_running` on a node's /metrics.
async fn runs_device_plane(api: &Api) -> bool {
    api.metric("fleetmq_device_plane_running").await == Some(1)
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
    let on_a = Api::of(&a);
    assert!(!on_a.token.is_empty(), "node A created the first admin");
    // A runs the device plane before B starts, so B is the standby.
    on_a.until("/healthz", |h| h["broker"] == "ok").await;
    assert!(runs_device_plane(&on_a).await);
    let b = node(data.path(), &store, broker.addr, files.path());
    let on_b = on_a.on(&b);
    assert!(
        b.token.is_empty(),
        "the admin exists already: no first start on B"
    );
    assert!(!runs_device_plane(&on_b).await, "B is a standby");
    // A standby answers REST calls and is healthy while another node runs the device plane.
    on_b.until("/healthz", |h| h["status"] == "ok").await;

    let org = on_a
        .post(
            "/api/v1/users/organization/",
            json!({"name": "two", "slug": "two"}),
        )
        .await;
    let build = on_a.firmware_build(&org, VERSION).await;

    let mut installs = Vec::new();
    for i in 0..DEVICES {
        let name = format!("two-{i}");
        let device = on_a
            .post(
                "/api/v1/controller/device/",
                json!({"name": name, "organization": org["id"], "model": "sim-board",
                       "mac_address": format!("02:00:00:01:{:02x}:{:02x}", i / 256, i % 256)}),
            )
            .await;
        let id = device["id"].as_str().expect("id").to_owned();
        if i == 0 {
            // Written on A, read on B at once.
            let seen = on_b.get(&format!("/api/v1/controller/device/{id}/")).await;
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
    let (stored_a, stored_b) = loop {
        let (stored_a, stored_b) = (
            on_a.metric(stored).await.unwrap_or(0),
            on_b.metric(stored).await.unwrap_or(0),
        );
        if stored_a + stored_b >= DEVICES as u64 {
            break (stored_a, stored_b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored_a} + {stored_b} of {DEVICES} samples stored after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        stored_a + stored_b,
        DEVICES as u64,
        "each sample stored once"
    );
    assert!(
        stored_a > 0 && stored_b > 0,
        "both nodes store telemetry: {stored_a} and {stored_b}"
    );
    for (id, _) in installs.iter().step_by(40) {
        for node in [&on_a, &on_b] {
            let telemetry = node
                .get(&format!("/api/v1/controller/device/{id}/telemetry/"))
                .await;
            assert!(
                telemetry["latest"].is_object(),
                "device {id}: {telemetry:#}"
            );
        }
    }

    let watchers: Vec<_> = installs
        .into_iter()
        .map(|(id, sim)| watch_install(id, sim))
        .collect();

    // Through the standby: a device call is forwarded to A, which runs the device plane …
    let first = watchers_first_device(&on_b, &org).await;
    let images = on_b
        .get(&format!(
            "/api/v1/devices/{first}/npm.system_update/2.0/images"
        ))
        .await;
    assert!(images["items"].is_array(), "{images:#}");
    // … a command stored on B is picked up and sent by A …
    let command = on_b
        .post(
            &format!("/api/v1/controller/device/{first}/command/"),
            json!({"type": "custom", "input": {"command": "uptime"}}),
        )
        .await;
    let command = format!(
        "/api/v1/controller/device/{first}/command/{}/",
        command["id"].as_str().expect("command id")
    );
    let answered = on_a.until(&command, |c| c["status"] != "in-progress").await;
    assert_eq!(answered["status"], "success", "{answered:#}");
    // … and a user deactivated on B is refused on A at once, though A knew their token.
    let ops = on_a
        .post(
            "/api/v1/users/user/",
            json!({"username": "ops", "password": "ops-password-1234", "is_superuser": true}),
        )
        .await;
    let ops_token = on_a
        .http
        .post(format!("{}/api/v1/users/token/", on_a.base))
        .json(&json!({"username": "ops", "password": "ops-password-1234"}))
        .send()
        .await
        .expect("token request")
        .json::<Value>()
        .await
        .expect("token");
    let ops_token = ops_token["token"].as_str().expect("a token").to_owned();
    let as_ops = |node: &Running| {
        on_a.http
            .get(format!(
                "{}/api/v1/controller/device/?page_size=1",
                node.http
            ))
            .bearer_auth(&ops_token)
            .send()
    };
    assert_eq!(as_ops(&a).await.expect("sent").status(), 200);
    on_b.send(
        reqwest::Method::PATCH,
        &format!("/api/v1/users/user/{}/", ops["id"].as_str().expect("id")),
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

    let batch = on_a.upgrade_all(&build, 20).await;
    // B sees the batch A is running.
    let mid = on_b
        .until(&batch, |b| {
            b["status_counts"]["success"]
                .as_u64()
                .is_some_and(|n| n >= 40)
        })
        .await;
    assert_eq!(mid["status"], "in-progress", "{mid:#}");

    // kill -9: A renews nothing more; once its lease expires B takes the device plane over.
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    on_b.batch_succeeds(&batch, DEVICES).await;
    assert!(
        runs_device_plane(&on_b).await,
        "B runs the device plane now"
    );

    // Every device installed the build, none twice, and no operation was lost or doubled.
    installed_once(watchers, VERSION, DEVICES).await;
    let operations = on_b
        .get("/api/v1/firmware-upgrader/upgrade-operation/?page_size=1")
        .await;
    assert_eq!(
        operations["count"], DEVICES,
        "no operation lost or duplicated"
    );
    let succeeded = on_b
        .get("/api/v1/firmware-upgrader/upgrade-operation/?status=success&page_size=1")
        .await;
    assert_eq!(succeeded["count"], DEVICES, "{operations:#}");
    assert!(terminate(b).success());
    broker.stop().await;
}
