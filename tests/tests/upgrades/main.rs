//! Firmware upgrades end to end: the REST API starts upgrades, the rollout engine drives
//! simulated devices (fleetmq-sim, with injected faults) through npm.system_update over MQTT.

mod batches;
mod mixed;
mod one_device;

use std::time::Duration;

use fleetmq::Config;
use fleetmq_bridge::UpgradePolicy;
use fleetmq_sim::{DeviceConfig, Fault, SimDevice, SimHandle};
use fleetmq_tests::mqtt::DeviceIdentity;
use fleetmq_tests::{Reply, TestApp};
use serde_json::json;

pub use fleetmq_tests::firmware::sim_firmware as firmware;
/// Longest a whole upgrade scenario may take before a test gives up.
pub const SCENARIO: Duration = Duration::from_secs(60);

/// Short phases so that hung devices fail within seconds (with room for a loaded CI machine,
/// where a notice can take more than two seconds).
pub fn fast_policy(config: &mut Config) {
    config.bridge.rollout.policy = UpgradePolicy {
        fetch_timeout: Duration::from_secs(3),
        init_timeout: Duration::from_secs(3),
        flash_timeout: Duration::from_secs(10),
        max_retries: 2,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    config.bridge.device_call_timeout = Duration::from_secs(1);
}

/// A server with one organization, an administrator, and a build with a simulator image.
pub struct Setup {
    pub app: TestApp,
    pub org_id: String,
    pub admin: String,
    pub build: String,
    pub image: String,
    pub sha256: String,
    pub version: String,
}

pub async fn setup(version: &str) -> Setup {
    let app = TestApp::spawn_with(fast_policy).await;
    let org_id = app.create_org("fleet").await;
    let admin = app.create_user("ada", &["Administrator"], &[&org_id]).await;
    let (build, image, sha256) = firmware(&app, &admin, &org_id, version).await;
    Setup {
        app,
        org_id,
        admin,
        build,
        image,
        sha256,
        version: version.to_owned(),
    }
}

impl Setup {
    /// Registers `n` devices of the simulator's model named `{prefix}-{i}`.
    pub async fn devices(&self, prefix: &str, n: usize) -> Vec<DeviceIdentity> {
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            let reply = self
                .app
                .post(
                    "/api/v1/controller/device/",
                    &self.admin,
                    json!({"name": name, "organization": self.org_id,
                           "mac_address": fleetmq_tests::mac_for(&name), "model": "sim-board"}),
                )
                .await;
            assert_eq!(reply.status, 201, "{:?}", reply.body);
            devices.push(DeviceIdentity {
                id: reply.str("id"),
                key: reply.str("key"),
                org: "fleet".to_owned(),
            });
        }
        devices
    }

    /// Starts a simulated device (on firmware 1.0.0) with an optional fault.
    pub fn start(&self, device: &DeviceIdentity, fault: Option<Fault>) -> SimHandle {
        let mut config = DeviceConfig::new(
            self.app.mqtt_addr,
            device.org.clone(),
            device.id.clone(),
            device.key.clone(),
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config.fault = fault;
        SimDevice::spawn(config)
    }

    /// PUTs the build's image as a device's firmware (which starts an upgrade).
    pub async fn upgrade(&self, device: &str) -> Reply {
        self.app
            .call(
                "PUT",
                &format!("/api/v1/firmware-upgrader/device/{device}/firmware/"),
                Some(&self.admin),
                Some(json!({"image": self.image})),
            )
            .await
    }

    /// Polls `path` until `done` holds, for up to [`SCENARIO`].
    pub async fn until(&self, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        self.app
            .eventually_within(SCENARIO, path, &self.admin, done)
            .await
    }

    /// Waits until an operation has ended; returns it.
    pub async fn finished(&self, operation: &str) -> Reply {
        self.until(
            &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/"),
            |r| r.status == 200 && r.str("status") != "in-progress",
        )
        .await
    }
}

/// The upgrade operation a device firmware PUT started.
pub trait StartedOperation {
    /// Its id.
    fn operation(&self) -> String;
}

impl StartedOperation for Reply {
    fn operation(&self) -> String {
        self.body["upgrade_operation"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no upgrade operation in {:#}", self.body))
            .to_owned()
    }
}
