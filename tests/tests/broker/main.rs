//! The embedded broker's promises, end to end over real sockets with stock clients (rumqttc
//! here, paho-mqtt from PyPI in `paho`): wildcard subscriptions filtered per message, QoS
//! downgrade, bounded queues whose overflow is counted, persistent sessions that survive a
//! restart; MQTT 5 and its mix with MQTT 3.1.1 in `mqtt5`.

mod delivery;
mod mqtt5;
mod paho;
mod sandbox;
mod sessions;

use std::time::Duration;

use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient};
use rumqttc::MqttOptions;

/// Retained presence payload of a device that is online.
pub const ONLINE: &str = r#"{"status":"online"}"#;

/// A server with the anonymous sandbox on, two organizations with a device each, and an
/// operator who manages the first.
pub struct Fleet {
    pub app: TestApp,
    pub operator_token: String,
    pub device_a: DeviceIdentity,
    pub device_b: DeviceIdentity,
}

pub fn sandbox_on(config: &mut fleetmq::Config) {
    config.mqtt_anonymous_sandbox = true;
}

pub async fn fleet() -> Fleet {
    fleet_with(|_| {}).await
}

pub async fn fleet_with(tweak: impl Fn(&mut fleetmq::Config)) -> Fleet {
    let app = TestApp::spawn_with(|config| {
        sandbox_on(config);
        tweak(config);
    })
    .await;
    let orgs = app.two_organizations().await;
    Fleet {
        app,
        operator_token: orgs.manager_a,
        device_a: orgs.device_a,
        device_b: orgs.device_b,
    }
}

/// Options of an anonymous sandbox client.
pub fn anonymous(app: &TestApp, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(
        client_id,
        app.mqtt_addr.ip().to_string(),
        app.mqtt_addr.port(),
    );
    options.set_keep_alive(Duration::from_secs(30));
    options
}

impl Fleet {
    /// Options of the operator `alice` (manages org-a only).
    pub fn operator(&self, client_id: &str) -> MqttOptions {
        let mut options = anonymous(&self.app, client_id);
        options.set_credentials("alice", &self.operator_token);
        options
    }

    pub async fn device(&self, device: &DeviceIdentity) -> MqttClient {
        MqttClient::device(self.app.mqtt_addr, device, ONLINE).await
    }
}
