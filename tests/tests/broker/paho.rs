//! The same promises checked with Eclipse paho-mqtt from PyPI (`tests/paho/broker_check.py`,
//! installed by .ci/run): a second, independent MQTT 3.1.1 implementation.

use std::path::PathBuf;
use std::time::Duration;

use fleetmq_protocol::UpChannel;
use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::DeviceIdentity;
use tokio::process::Command;

use crate::{fleet, sandbox_on};

/// Runs one scenario of the script against `app`; fails the test with the script's output.
async fn scenario(
    app: &TestApp,
    name: &str,
    devices: &[&DeviceIdentity],
    user: Option<(&str, &str)>,
) {
    run_script("broker_check.py", app, name, devices, user).await;
}

/// Runs scenario `name` of the paho script `script` (in `tests/paho/`) against `app`.
pub async fn run_script(
    script: &str,
    app: &TestApp,
    name: &str,
    devices: &[&DeviceIdentity],
    user: Option<(&str, &str)>,
) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("paho")
        .join(script);
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg(name)
        .args(["--port", &app.mqtt_addr.port().to_string()])
        .kill_on_drop(true);
    for device in devices {
        command.args([
            "--device",
            &device.id,
            &device.key,
            &device.up(UpChannel::Telemetry),
        ]);
    }
    if let Some((name, password)) = user {
        command.args(["--user", name, password]);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the paho scenario finishes in time")
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'paho'"),
        "paho-mqtt is missing: python3 -m pip install paho-mqtt==2.1.0 (.ci/run installs it)"
    );
    assert!(
        output.status.success(),
        "paho scenario {name} failed:\n{stderr}{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn paho_wildcard_sandbox_subscriber_sees_no_fleet_topic() {
    let f = fleet().await;
    scenario(&f.app, "sandbox", &[&f.device_a, &f.device_b], None).await;
}

#[tokio::test]
async fn paho_operator_wildcard_sees_only_its_organization() {
    let f = fleet().await;
    scenario(
        &f.app,
        "operator",
        &[&f.device_a, &f.device_b],
        Some(("alice", &f.operator_token)),
    )
    .await;
}

#[tokio::test]
async fn paho_qos_is_downgraded_to_the_granted_qos() {
    let f = fleet().await;
    scenario(&f.app, "qos", &[], None).await;
}

#[tokio::test]
async fn paho_persistent_session_queues_qos1_and_qos2_across_a_restart() {
    let mut f = fleet().await;
    scenario(&f.app, "persist-before", &[], None).await;
    f.app.restart_with(sandbox_on).await;
    scenario(&f.app, "persist-after", &[], None).await;
}
