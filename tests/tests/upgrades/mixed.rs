//! A fleet that mixes MQTT 5 and MQTT 3.1.1 devices is upgraded in one batch: the v5 devices
//! get each npm.system_update request with a response topic and correlation data and answer
//! with them, the v3.1.1 devices on their usual channel, and every device ends on the new
//! firmware.

use fleetmq_sim::{DeviceConfig, Fleet, FleetOptions};
use serde_json::json;

use crate::{SCENARIO, setup};

/// `fleetmq_mqtt_connections_accepted_total{protocol=…}` from the server's `/metrics`.
fn accepted(metrics: &str, protocol: &str) -> u64 {
    let series = format!("fleetmq_mqtt_connections_accepted_total{{protocol=\"{protocol}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_mqtt5_and_mqtt311_devices_is_upgraded_in_one_batch() {
    let s = setup("4.0.0").await;
    let devices = s.devices("mixed", 40).await;
    let configs = devices.iter().map(|device| {
        let mut config = DeviceConfig::new(
            s.app.mqtt_addr,
            device.org.clone(),
            device.id.clone(),
            device.key.clone(),
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config
    });
    let options = FleetOptions {
        mqtt5_fraction: 0.5,
        ..FleetOptions::default()
    };
    let fleet = Fleet::spawn(configs, options);
    tokio::time::timeout(SCENARIO, fleet.wait_connected(40))
        .await
        .expect("the fleet connects");
    let metrics = s.app.metrics().await;
    assert_eq!(accepted(&metrics, "5"), 20, "half the fleet speaks MQTT 5");
    assert_eq!(accepted(&metrics, "3.1.1"), 20);

    let started = s
        .app
        .post(
            &format!("/api/v1/firmware-upgrader/build/{}/upgrade/", s.build),
            &s.admin,
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(started.status, 201, "{:#}", started.body);
    let batch = started.str("batch");
    let done = s
        .until(
            &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"),
            |r| r.status == 200 && !["in-progress", "idle"].contains(&r.str("status").as_str()),
        )
        .await;
    assert_eq!(done.body["status"], "success", "{:#}", done.body);
    assert_eq!(
        done.body["status_counts"],
        json!({"in-progress": 0, "success": 40, "failed": 0, "aborted": 0, "cancelled": 0})
    );
    // Each device rebooted into the new firmware and came back in its own version.
    let metrics = s.app.metrics().await;
    assert!(accepted(&metrics, "5") >= 40, "{metrics}");
    assert!(accepted(&metrics, "3.1.1") >= 40, "{metrics}");
    fleet.stop().await;
}
