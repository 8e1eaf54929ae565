//! kill -9 in the middle of a software rollout (OTAO): after a restart every device runs the
//! new version, installed exactly once, with one successful installation each.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent, SoftwareConfig};
use serde_json::{Value, json};
use support::{Api, free_port, start_with, terminate};

const DEVICES: usize = 40;

/// A device's installations (empty while the server is down).
async fn installations(api: &Api, device: &str) -> Vec<Value> {
    let Ok(reply) = api
        .http
        .get(format!(
            "{}/api/v1/endpoints/{device}/software/installations",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
    else {
        return Vec::new();
    };
    reply
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_software_rollout_interrupted_by_kill_9_finishes_after_restart_with_every_device_installed_once()
 {
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

    // Devices that take a moment to install, so the crash lands mid-rollout.
    let mqtt_addr = format!("127.0.0.1:{mqtt_port}").parse().expect("address");
    let mut watchers = Vec::new();
    for i in 0..DEVICES {
        let name = format!("k9-{i}");
        let device = api
            .post(
                "/api/v1/controller/device/",
                json!({"name": name, "organization": org["id"],
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
        config.software = SoftwareConfig {
            applications: BTreeMap::from([("kettle".to_owned(), "1.0.0".to_owned())]),
            install_time: Duration::from_millis(300),
            ..SoftwareConfig::default()
        };
        let mut sim = SimDevice::spawn(config);
        sim.connected().await.expect("device connects");
        watchers.push(tokio::spawn(async move {
            let mut installed = Vec::new();
            while let Some(event) = sim.next_event().await {
                if let SimEvent::SoftwareInstalled { version, .. } = event {
                    installed.push(version);
                    break;
                }
            }
            (id, installed, sim)
        }));
    }

    api.post(
        &format!(
            "/api/v1/applications/kettle/software/1.1.0?organization={}",
            org["id"].as_str().expect("org id")
        ),
        json!({"upgradableFrom": ["1.0.0"], "rolloutStrategy": "general",
               "specification": {"link": "http://repo.invalid/kettle-1.1.0"},
               "rollout": {"maxParallel": 8}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api
        .metric("fleetmq_software_installations_succeeded_total")
        .await
        .unwrap_or(0)
        < 10
    {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // kill -9: no shutdown, no flush; then the same ports and data directory.
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("reaped");
    let running = start_with(dir.path(), http_port, mqtt_port, &args);

    let mut watched = Vec::new();
    for watcher in watchers {
        let (id, installed, sim) = tokio::time::timeout(Duration::from_secs(90), watcher)
            .await
            .expect("every device installs in time")
            .expect("watcher");
        assert_eq!(installed, vec!["1.1.0".to_owned()], "device {id}");
        watched.push((id, sim));
    }
    for (id, mut sim) in watched {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let installations = loop {
            let all = installations(&api, &id).await;
            if !all.is_empty() && all.iter().all(|i| i["status"] != "in-progress") {
                break all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "device {id}: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let statuses: Vec<&str> = installations
            .iter()
            .filter_map(|i| i["status"].as_str())
            .collect();
        assert_eq!(
            statuses,
            vec!["success"],
            "device {id}: no installation lost or doubled"
        );
        // The device installed it once: what it got since were repeats, answered as such.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1), sim.next_event()).await
        {
            assert!(
                !matches!(event, SimEvent::SoftwareInstalled { .. }),
                "device {id} installed twice"
            );
        }
        sim.stop().await;
    }
    assert!(terminate(running).success());
}
