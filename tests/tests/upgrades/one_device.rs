//! One device: the whole path, checksum mismatch, cancel before and after flashing begins,
//! an offline device upgraded when it comes back, and the device API over REST.

use std::time::Duration;

use fleetmq_sim::{Fault, SimEvent};
use serde_json::json;

use crate::{SCENARIO, StartedOperation, setup};

fn firmware_path(device: &str) -> String {
    format!("/api/v1/firmware-upgrader/device/{device}/firmware/")
}

#[tokio::test]
async fn a_device_is_upgraded_over_mqtt_from_fetch_to_reboot_on_the_new_version() {
    let s = setup("2.0.0").await;
    let device = &s.devices("ap", 1).await[0];
    let mut sim = s.start(device, None);
    sim.connected().await.expect("device connects");

    let put = s.upgrade(&device.id).await;
    assert_eq!(put.status, 201, "{:#}", put.body);
    assert_eq!(put.body["installed"], false);
    let operation = put.operation();

    let installed = tokio::time::timeout(
        SCENARIO,
        sim.wait_for(|e| matches!(e, SimEvent::Installed { .. })),
    )
    .await
    .expect("the device installs the image");
    assert_eq!(
        installed,
        Some(SimEvent::Installed {
            version: "2.0.0".into()
        })
    );

    let done = s.finished(&operation).await;
    assert_eq!(done.str("status"), "success", "{:#}", done.body);
    assert_eq!(done.body["progress"], 100);
    let log = done.str("log");
    for step in [
        "download",
        "verified",
        "initialized",
        "flashing",
        "running 2.0.0",
    ] {
        assert!(
            log.to_lowercase().contains(step),
            "log lacks {step:?}: {log}"
        );
    }
    assert!(log.contains(&s.sha256), "{log}");

    let firmware = s.app.get(&firmware_path(&device.id), &s.admin).await;
    assert_eq!(firmware.status, 200);
    assert_eq!(firmware.body["installed"], true, "{:#}", firmware.body);
    assert_eq!(firmware.str("image"), s.image);

    // The device's own API, through the REST bridge: it now runs 2.0.0.
    let update = s
        .app
        .get(
            &format!("/api/v1/devices/{}/npm.system_update/2.0/update", device.id),
            &s.admin,
        )
        .await;
    assert_eq!(update.status, 200, "{:#}", update.body);
    assert_eq!(update.str("state"), "IDLE");
    let history = update.body["update_history"].as_array().expect("history");
    assert_eq!(history.last().expect("entries")["version"], "2.0.0");
}

#[tokio::test]
async fn a_checksum_mismatch_fails_the_upgrade_and_the_image_is_deleted_on_the_device() {
    let s = setup("2.0.1").await;
    let device = &s.devices("ap", 1).await[0];
    let mut sim = s.start(device, Some(Fault::ChecksumMismatch));
    sim.connected().await.expect("device connects");
    let put = s.upgrade(&device.id).await;
    assert_eq!(put.status, 201, "{:#}", put.body);
    let operation = put.operation();
    let done = s.finished(&operation).await;
    assert_eq!(done.str("status"), "failed");
    assert!(
        done.str("log").contains("Checksum mismatch"),
        "{:#}",
        done.body
    );
    // The bridge deleted the bad image on the device.
    let images = s
        .until(
            &format!("/api/v1/devices/{}/npm.system_update/2.0/images", device.id),
            |r| r.status == 200 && r.body["items"].as_array().is_some_and(|i| i.is_empty()),
        )
        .await;
    assert_eq!(images.body["items"], json!([]));
    let firmware = s.app.get(&firmware_path(&device.id), &s.admin).await;
    assert_eq!(firmware.body["installed"], false);
}

#[tokio::test]
async fn a_device_whose_initialized_notice_was_lost_is_reset_and_upgraded_on_the_retry() {
    let s = setup("2.0.2").await;
    let device = &s.devices("ap", 1).await[0];
    // The device initializes on the first update/init, but nobody hears about it.
    let mut sim = s.start(device, Some(Fault::LostInitNotices { times: 1 }));
    sim.connected().await.expect("device connects");
    let put = s.upgrade(&device.id).await;
    assert_eq!(put.status, 201, "{:#}", put.body);
    let done = s.finished(&put.operation()).await;
    // Another update/init alone would be a no-op on an initialized device, unheard again.
    assert_eq!(done.str("status"), "success", "{:#}", done.body);
    assert!(
        done.str("log")
            .contains("No answer from the device to update/init; retry 1 of 2"),
        "{:#}",
        done.body
    );
    let firmware = s.app.get(&firmware_path(&device.id), &s.admin).await;
    assert_eq!(firmware.body["installed"], true, "{:#}", firmware.body);
}

#[tokio::test]
async fn cancel_works_before_flashing_and_is_refused_once_flashing_began() {
    let s = setup("2.0.2").await;
    let devices = s.devices("ap", 2).await;
    // A device that never answers stays below 65 %.
    let mut hung = s.start(&devices[0], Some(Fault::Hang));
    hung.connected().await.expect("connects");
    let put = s.upgrade(&devices[0].id).await;
    let early = put.operation();
    let cancel = format!("/api/v1/firmware-upgrader/upgrade-operation/{early}/cancel/");
    let cancelled = s.app.post(&cancel, &s.admin, json!({})).await;
    assert_eq!(cancelled.status, 200, "{:#}", cancelled.body);
    let op = s
        .app
        .get(
            &format!("/api/v1/firmware-upgrader/upgrade-operation/{early}/"),
            &s.admin,
        )
        .await;
    assert_eq!(op.str("status"), "cancelled");

    // A device that takes its time installing sits at ≥ 65 % meanwhile.
    let mut config = fleetmq_sim::DeviceConfig::new(
        s.app.mqtt_addr,
        "fleet",
        devices[1].id.clone(),
        devices[1].key.clone(),
    );
    config.telemetry_interval = None;
    config.coordinates_interval = None;
    config.install_time = Duration::from_secs(3600);
    let mut slow = fleetmq_sim::SimDevice::spawn(config);
    slow.connected().await.expect("connects");
    let put = s.upgrade(&devices[1].id).await;
    let late = put.operation();
    s.until(
        &format!("/api/v1/firmware-upgrader/upgrade-operation/{late}/"),
        |r| r.body["progress"].as_u64().is_some_and(|p| p >= 65),
    )
    .await;
    let refused = s
        .app
        .post(
            &format!("/api/v1/firmware-upgrader/upgrade-operation/{late}/cancel/"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        refused.body,
        json!({"error": "Cannot cancel upgrade: firmware reflashing has already started"})
    );
    let op = s
        .app
        .get(
            &format!("/api/v1/firmware-upgrader/upgrade-operation/{late}/"),
            &s.admin,
        )
        .await;
    assert_eq!(op.str("status"), "in-progress");
}

#[tokio::test]
async fn an_offline_device_is_upgraded_when_it_comes_back() {
    let s = setup("2.0.3").await;
    let device = &s.devices("ap", 1).await[0];
    let put = s.upgrade(&device.id).await;
    assert_eq!(put.status, 201, "{:#}", put.body);
    let operation = put.operation();
    let path = format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/");
    // Nothing is sent to an offline device: its operation waits in the queue.
    let waiting = s.app.get(&path, &s.admin).await;
    assert_eq!(waiting.str("status"), "in-progress", "{:#}", waiting.body);
    assert_eq!(waiting.body["progress"], 0);

    let mut sim = s.start(device, None);
    sim.connected().await.expect("device connects");
    let done = s.finished(&operation).await;
    assert_eq!(done.str("status"), "success", "{:#}", done.body);
}

#[tokio::test]
async fn the_device_api_answers_503_for_an_offline_device_and_relays_device_errors() {
    let s = setup("2.0.4").await;
    let device = &s.devices("ap", 1).await[0];
    let base = format!("/api/v1/devices/{}/npm.system_update/2.0", device.id);
    let offline = s.app.get(&format!("{base}/update"), &s.admin).await;
    assert_eq!(offline.status, 503, "{:#}", offline.body);
    assert!(
        offline.str("detail").contains("offline"),
        "{:#}",
        offline.body
    );

    let mut sim = s.start(device, None);
    sim.connected().await.expect("connects");
    let missing = s
        .app
        .get(&format!("{base}/images/items/42"), &s.admin)
        .await;
    assert_eq!(missing.status, 404, "{:#}", missing.body);
    // Starting without an initialized update is refused by the device itself.
    let start = s
        .app
        .post(&format!("{base}/update/start"), &s.admin, json!(null))
        .await;
    assert_eq!(start.status, 409, "{:#}", start.body);
}

#[tokio::test]
async fn a_device_that_does_not_answer_its_api_call_is_a_504() {
    let s = setup("2.0.5").await;
    let device = &s.devices("ap", 1).await[0];
    let mut sim = s.start(device, Some(Fault::Hang));
    sim.connected().await.expect("connects");
    let reply = s
        .app
        .get(
            &format!("/api/v1/devices/{}/npm.system_update/2.0/images", device.id),
            &s.admin,
        )
        .await;
    assert_eq!(reply.status, 504, "{:#}", reply.body);
    assert!(
        reply.str("detail").contains("did not answer"),
        "{:#}",
        reply.body
    );
}

#[tokio::test]
async fn deactivating_a_device_aborts_its_upgrade() {
    let s = setup("2.0.6").await;
    let device = &s.devices("ap", 1).await[0];
    let mut sim = s.start(device, Some(Fault::Hang));
    sim.connected().await.expect("connects");
    let put = s.upgrade(&device.id).await;
    let operation = put.operation();
    let deactivate = s
        .app
        .post(
            &format!("/api/v1/controller/device/{}/deactivate/", device.id),
            &s.admin,
            json!({}),
        )
        .await;
    assert!(deactivate.status < 300, "{:#}", deactivate.body);
    let op = s
        .app
        .get(
            &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/"),
            &s.admin,
        )
        .await;
    assert_eq!(op.str("status"), "aborted", "{:#}", op.body);
    assert!(op.str("log").contains("deactivated"), "{:#}", op.body);
}
