//! kill -9 in the middle of a batch upgrade: after a restart the batch finishes with every
//! device upgraded exactly once and no operation lost or duplicated.

mod support;

use std::time::Duration;

use fleetmq_sim::{DeviceConfig, SimDevice};
use serde_json::json;
use support::{Api, free_port, installed_once, start_with, terminate, watch_install};

const DEVICES: usize = 60;
const VERSION: &str = "9.9.9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_interrupted_by_kill_9_finishes_after_restart_with_every_device_upgraded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, mqtt_port) = (free_port(), free_port());
    let args = ["--upgrade-backoff", "1"];
    let mut running = start_with(dir.path(), http_port, mqtt_port, &args);
    let api = Api::of(&running);

    let org = api
        .post(
            "/api/v1/users/organization/",
            json!({"name": "k9", "slug": "k9"}),
        )
        .await;
    let build = api.firmware_build(&org, VERSION).await;

    // Devices that take a moment to flash, so the crash lands mid-batch.
    let mqtt_addr = format!("127.0.0.1:{mqtt_port}").parse().expect("address");
    let mut installs = Vec::new();
    for i in 0..DEVICES {
        let name = format!("k9-{i}");
        let device = api
            .post(
                "/api/v1/controller/device/",
                json!({"name": name, "organization": org["id"], "model": "sim-board",
                       "mac_address": format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256)}),
            )
            .await;
        let id = device["id"].as_str().expect("id").to_owned();
        let mut config = DeviceConfig::new(
            mqtt_addr,
            "k9",
            id.clone(),
            device["key"].as_str().expect("key"),
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config.install_time = Duration::from_millis(300);
        let mut sim = SimDevice::spawn(config);
        sim.connected().await.expect("device connects");
        installs.push(watch_install(id, sim));
    }

    let batch = api.upgrade_all(&build, 10).await;
    let mid = api
        .until(&batch, |b| {
            b["status_counts"]["success"]
                .as_u64()
                .is_some_and(|n| n >= 15)
        })
        .await;
    assert_eq!(mid["status"], "in-progress", "{mid:#}");

    // kill -9: no shutdown, no flush; then the same ports and data directory.
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("reaped");
    let running = start_with(dir.path(), http_port, mqtt_port, &args);

    api.batch_succeeds(&batch, DEVICES).await;
    // Every device installed the build; none twice.
    installed_once(installs, VERSION, DEVICES).await;
    let operations = api
        .get("/api/v1/firmware-upgrader/upgrade-operation/?page_size=100")
        .await;
    assert_eq!(
        operations["count"], DEVICES,
        "no operation lost or duplicated"
    );
    let results = operations["results"].as_array().expect("results");
    assert!(
        results.iter().all(|op| op["status"] == "success"),
        "{operations:#}"
    );
    assert!(terminate(running).success());
}
