//! Configuration pushed over MQTT, end to end: a template change re-renders the device's
//! configuration, the bridge sends the notice, the simulated device downloads the archive
//! through the signed link, checks its checksum, applies it and reports, and the REST API shows
//! the configuration applied. A device that was offline gets its notice when it connects.

use std::time::Duration;

use fleetmq_protocol::ConfigOutcome;
use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent, SimHandle};
use serde_json::json;

use crate::fleet;

/// Longest a notice → download → report round trip may take before the test gives up.
const ROUND_TRIP: Duration = Duration::from_secs(30);

fn site_config(site: &str) -> serde_json::Value {
    json!({"files": [{"path": "/etc/site", "mode": "0644", "contents": format!("site={site}")}]})
}

/// The next configuration report of `sim` about a checksum other than `running`. A device
/// answers every notice, so a notice repeated for the configuration it already runs (the
/// retained one and the one sent as it comes online can both arrive) is reported again.
async fn next_report(sim: &mut SimHandle, running: Option<&str>) -> fleetmq_protocol::ConfigReport {
    let event = tokio::time::timeout(
        ROUND_TRIP,
        sim.wait_for(
            |e| matches!(e, SimEvent::ConfigReported(r) if Some(r.checksum.as_str()) != running),
        ),
    )
    .await
    .expect("the device reports its configuration in time");
    match event {
        Some(SimEvent::ConfigReported(report)) => report,
        other => panic!("the device stopped: {other:?}"),
    }
}

#[tokio::test]
async fn a_template_change_reaches_the_device_over_mqtt_and_comes_back_applied() {
    let f = fleet().await;
    let template = f
        .app
        .post(
            "/api/v1/controller/template/",
            &f.app.admin_token,
            json!({"name": "site", "organization": f.org_a, "backend": "netjsonconfig.OpenWrt",
                   "config": site_config("first")}),
        )
        .await;
    assert_eq!(template.status, 201, "{:?}", template.body);
    let template = template.str("id");
    let device_path = format!("/api/v1/controller/device/{}/", f.device_a.id);
    let assigned = f
        .app
        .call(
            "PATCH",
            &device_path,
            Some(&f.manager_a),
            Some(json!({"config": {"backend": "netjsonconfig.OpenWrt", "templates": [template]}})),
        )
        .await;
    assert_eq!(assigned.status, 200, "{:?}", assigned.body);
    assert_eq!(assigned.body["config"]["status"], "modified");

    // The device was offline when its configuration changed: it is told when it connects.
    let mut config = DeviceConfig::new(
        f.app.mqtt_addr,
        "org-a",
        f.device_a.id.clone(),
        f.device_a.key.clone(),
    );
    config.telemetry_interval = None;
    config.coordinates_interval = None;
    let mut sim = SimDevice::spawn(config);
    let first = next_report(&mut sim, None).await;
    assert_eq!(first.status, ConfigOutcome::Applied, "{first:?}");
    let shown = f
        .app
        .eventually(&device_path, &f.manager_a, |r| {
            r.body["config"]["status"] == "applied"
        })
        .await;
    assert_eq!(shown.body["config"]["error_reason"], "");

    // Change the template: the connected device is notified at once and applies the new one.
    let changed = f
        .app
        .call(
            "PATCH",
            &format!("/api/v1/controller/template/{template}/"),
            Some(&f.app.admin_token),
            Some(json!({"config": site_config("second")})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let second = next_report(&mut sim, Some(&first.checksum)).await;
    assert_eq!(second.status, ConfigOutcome::Applied, "{second:?}");
    let download = f
        .app
        .http
        .get(format!("{}{device_path}configuration/", f.app.base))
        .bearer_auth(&f.manager_a)
        .send()
        .await
        .expect("download");
    assert_eq!(
        download
            .headers()
            .get("x-config-checksum")
            .and_then(|v| v.to_str().ok()),
        Some(second.checksum.as_str()),
        "the device applied the configuration the server serves now"
    );
    f.app
        .eventually(&device_path, &f.manager_a, |r| {
            r.body["config"]["status"] == "applied"
        })
        .await;
    f.app.shutdown().await;
}
