//! The simulator's devices (fleetmq-sim) run application software: a fleet walks two hops
//! within a rollout limit, and an abort threshold suspends a failing version.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent, SimHandle, SoftwareConfig};
use serde_json::json;

use crate::{Setup, setup};

/// Longest a fleet scenario may take.
const SCENARIO: Duration = Duration::from_secs(60);

impl Setup {
    /// Registers `n` devices and starts them in the simulator, each running `kettle` 1.0.0
    /// and failing `fail_fraction` of its installations.
    async fn fleet(&self, n: usize, fail_fraction: f64) -> Vec<SimHandle> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("sim-{i}");
            let reply = self
                .app
                .post(
                    "/api/v1/controller/device/",
                    &self.admin,
                    json!({"name": name, "organization": self.org,
                           "mac_address": fleetmq_tests::mac_for(&name), "model": "sim-board"}),
                )
                .await;
            assert_eq!(reply.status, 201, "{:#}", reply.body);
            let mut config = DeviceConfig::new(
                self.app.mqtt_addr,
                "acme".to_owned(),
                reply.str("id"),
                reply.str("key"),
            );
            config.telemetry_interval = None;
            config.coordinates_interval = None;
            config.software = SoftwareConfig {
                applications: BTreeMap::from([("kettle".to_owned(), "1.0.0".to_owned())]),
                fail_fraction,
                install_time: Duration::from_millis(20),
                ..SoftwareConfig::default()
            };
            let mut handle = SimDevice::spawn(config);
            handle.connected().await.expect("the device connects");
            handles.push(handle);
        }
        handles
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_fleet_walks_two_hops_within_its_rollout_limit() {
    let s = setup().await;
    let mut fleet = s.fleet(20, 0.0).await;
    s.publish(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "rollout": {"maxParallel": 5}}),
    )
    .await;
    s.publish("kettle", "1.2.0", json!({"upgradableFrom": ["1.1.0"]}))
        .await;
    for device in &mut fleet {
        let done = tokio::time::timeout(
            SCENARIO,
            device.wait_for(
                |e| matches!(e, SimEvent::SoftwareInstalled { version, .. } if version == "1.2.0"),
            ),
        )
        .await;
        assert!(
            matches!(done, Ok(Some(_))),
            "{} never reached 1.2.0",
            device.device_id()
        );
    }
    for device in &fleet {
        let reply = s
            .app
            .eventually(
                &format!(
                    "/api/v1/endpoints/{}/software/installations",
                    device.device_id()
                ),
                &s.admin,
                |r| {
                    r.body.as_array().is_some_and(|all| {
                        all.len() == 2 && all.iter().all(|i| i["status"] == "success")
                    })
                },
            )
            .await;
        let hops: Vec<(&str, &str)> = reply
            .body
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["from"].as_str().unwrap_or_default(),
                    i["version"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(hops, vec![("1.1.0", "1.2.0"), ("1.0.0", "1.1.0")]);
    }
    for device in fleet {
        device.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_threshold_suspends_a_failing_version_and_stops_its_other_installations() {
    let s = setup().await;
    let fleet = s.fleet(12, 1.0).await;
    s.publish(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
               "rollout": {"maxParallel": 1,
                           "abortThreshold": {"failureRate": 0.5, "minSample": 3}}}),
    )
    .await;
    let software = s
        .app
        .eventually_within(
            SCENARIO,
            "/api/v1/applications/kettle/software/1.1.0",
            &s.admin,
            |r| r.str("rolloutStrategy") == "suspended",
        )
        .await;
    assert_eq!(software.status, 200);
    // Exactly the sample failed: one at a time, three failures, then nothing more started.
    let mut statuses = BTreeMap::<String, usize>::new();
    for device in &fleet {
        let reply = s
            .app
            .eventually(
                &format!(
                    "/api/v1/endpoints/{}/software/installations",
                    device.device_id()
                ),
                &s.admin,
                |r| {
                    r.body
                        .as_array()
                        .is_some_and(|all| all.iter().all(|i| i["status"] != "in-progress"))
                },
            )
            .await;
        for inst in reply.body.as_array().into_iter().flatten() {
            *statuses
                .entry(inst["status"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(statuses.get("failed"), Some(&3), "{statuses:?}");
    assert_eq!(statuses.get("success"), None, "{statuses:?}");
    assert_eq!(
        statuses.values().sum::<usize>(),
        12,
        "every device got one installation: {statuses:?}"
    );
    for device in fleet {
        device.stop().await;
    }
}
