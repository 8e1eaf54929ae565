//! Devices log in with certificates over MQTT-over-TLS, end to end: a certificate issued
//! through the REST API logs a simulated device in without its key; revoking it ends the live
//! session and refuses the next attempt; certificates from another organization's CA, or
//! outside their validity, never log in.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleetmq_sim::run::TlsOptions;
use fleetmq_sim::{DeviceConfig, SimDevice, SimEvent, SimHandle};
use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::DeviceIdentity;
use serde_json::{Value, json};
use tokio::time::timeout;

/// Failure guard for every awaited event (never a sleep).
const WAIT: Duration = Duration::from_secs(15);

async fn tls_app() -> TestApp {
    TestApp::spawn_with(|c| c.mqtts_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await
}

/// Writes `cert` (an API certificate) as `<device>.pem`/`.key` under `dir`.
fn keep(dir: &Path, device: &str, cert: &Value) {
    let text = |field: &str| cert[field].as_str().expect("PEM text").to_owned();
    std::fs::write(dir.join(format!("{device}.pem")), text("certificate")).expect("written");
    std::fs::write(dir.join(format!("{device}.key")), text("private_key")).expect("written");
}

/// A simulated device on the TLS listener that presents the certificate in `dir` and a
/// wrong key (so only the certificate can log it in).
fn device_with_certificate(app: &TestApp, device: &DeviceIdentity, dir: &Path) -> SimHandle {
    let tls_addr = app.mqtts_addr.expect("TLS listener on");
    let options = TlsOptions {
        ca: app.data_dir().join("tls").join("mqtt-cert.pem"),
        server_name: None,
        client_cert: None,
        client_cert_dir: Some(dir.to_path_buf()),
    };
    let mut tls = options
        .for_devices(tls_addr, std::slice::from_ref(&device.id))
        .expect("TLS options");
    let mut config = DeviceConfig::new(tls_addr, &device.org, device.id.clone(), "not-the-key");
    config.telemetry_interval = None;
    config.coordinates_interval = None;
    config.tls = tls.pop();
    SimDevice::spawn(config)
}

async fn next(device: &mut SimHandle) -> SimEvent {
    timeout(
        WAIT,
        device.wait_for(|e| !matches!(e, SimEvent::Ignored { .. })),
    )
    .await
    .expect("an event in time")
    .expect("the device runs")
}

async fn refused(device: &mut SimHandle) -> String {
    match next(device).await {
        SimEvent::ConnectFailed { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_device_certificate_logs_in_until_it_is_revoked() {
    let app = tls_app().await;
    let org = app.create_org("org-a").await;
    let device = app
        .register_device(&app.admin_token, &org, "org-a", "dev-a")
        .await;
    let issued = app
        .post(
            &format!("/api/v1/controller/device/{}/certificate/", device.id),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(issued.status, 201, "{:?}", issued.body);
    let files = tempfile::tempdir().expect("temporary directory");
    keep(files.path(), &device.id, &issued.body);

    let mut sim = device_with_certificate(&app, &device, files.path());
    assert_eq!(next(&mut sim).await, SimEvent::Connected);

    // Revoked: the live session ends (pushed by the revocation, not found by a poll) and the
    // next attempt is refused.
    let revoked = app
        .post(
            &format!("/api/v1/controller/cert/{}/revoke/", issued.body["id"]),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    let ended = timeout(
        WAIT,
        sim.wait_for(|e| matches!(e, SimEvent::Disconnected { .. })),
    )
    .await
    .expect("disconnected after the revocation");
    assert!(ended.is_some());
    let reason = refused(&mut sim).await;
    assert!(reason.contains("0x05"), "{reason}");
}

#[tokio::test]
async fn certificates_of_another_organization_or_out_of_date_never_log_in() {
    let app = tls_app().await;
    let org_a = app.create_org("org-a").await;
    let org_b = app.create_org("org-b").await;
    let device = app
        .register_device(&app.admin_token, &org_a, "org-a", "dev-a")
        .await;

    // org-b's CA signs a certificate naming org-a's device.
    let ca_b = app
        .post(
            "/api/v1/controller/ca/",
            &app.admin_token,
            json!({"name": "beta", "organization": org_b, "key_length": "256"}),
        )
        .await;
    assert_eq!(ca_b.status, 201, "{:?}", ca_b.body);
    let foreign = app
        .post(
            "/api/v1/controller/cert/",
            &app.admin_token,
            json!({"name": "forged", "ca": ca_b.body["id"], "organization": org_b,
                "key_length": "256", "common_name": device.id}),
        )
        .await;
    assert_eq!(foreign.status, 201, "{:?}", foreign.body);
    let files = tempfile::tempdir().expect("temporary directory");
    keep(files.path(), &device.id, &foreign.body);
    let mut sim = device_with_certificate(&app, &device, files.path());
    let reason = refused(&mut sim).await;
    assert!(reason.contains("0x05"), "{reason}");
    drop(sim);

    // org-a's own CA, but the certificate expired yesterday (dates derived from now).
    let ca_a = app
        .post(
            "/api/v1/controller/ca/",
            &app.admin_token,
            json!({"name": "acme", "organization": org_a, "key_length": "256"}),
        )
        .await;
    assert_eq!(ca_a.status, 201, "{:?}", ca_a.body);
    let days_ago = |days: i64| {
        let now = fleetmq_store::Timestamp::now().as_micros();
        fleetmq_store::Timestamp::from_micros(now - days * 86_400_000_000).to_string()
    };
    let expired = app
        .post(
            "/api/v1/controller/cert/",
            &app.admin_token,
            json!({"name": "old", "ca": ca_a.body["id"], "organization": org_a,
                "key_length": "256", "common_name": device.id,
                "validity_start": days_ago(30), "validity_end": days_ago(1)}),
        )
        .await;
    assert_eq!(expired.status, 201, "{:?}", expired.body);
    let files = tempfile::tempdir().expect("temporary directory");
    keep(files.path(), &device.id, &expired.body);
    let mut sim = device_with_certificate(&app, &device, files.path());
    let reason = refused(&mut sim).await;
    assert!(reason.contains("0x05"), "{reason}");
}
