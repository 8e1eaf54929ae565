//! The MQTT device plane end to end: real MQTT clients against the whole server, with the
//! REST API reflecting what devices do.

mod access;
mod acknowledged;
mod certificates;
mod commands;
mod configuration;
mod events;
mod ingest;
mod limits;
mod mqtt5;
mod presence;
mod resends;
mod revocation;
mod stock_tools;
mod timeouts;

use fleetmq_tests::mqtt::DeviceIdentity;
use fleetmq_tests::{Reply, TestApp};

/// A server with two organizations, a device in each and a manager of the first.
pub struct Fleet {
    pub app: TestApp,
    pub org_a: String,
    pub manager_a: String,
    pub device_a: DeviceIdentity,
    pub device_b: DeviceIdentity,
}

pub async fn fleet() -> Fleet {
    fleet_with(|_| {}).await
}

pub async fn fleet_with(tweak: impl Fn(&mut fleetmq::Config)) -> Fleet {
    let app = TestApp::spawn_with(tweak).await;
    let orgs = app.two_organizations().await;
    Fleet {
        app,
        org_a: orgs.org_a,
        manager_a: orgs.manager_a,
        device_a: orgs.device_a,
        device_b: orgs.device_b,
    }
}

pub const ONLINE: &str =
    r#"{"status":"online","model":"TL-WR841N","os":"OpenWrt 23.05","system":"MT7628"}"#;

impl Fleet {
    /// Sends device A a `custom` command running `command`, as its manager through the REST
    /// API; the answer to the POST.
    pub async fn custom_command(&self, command: &str) -> Reply {
        let commands = format!("/api/v1/controller/device/{}/command/", self.device_a.id);
        let body = serde_json::json!({"type": "custom", "input": {"command": command}});
        self.app.post(&commands, &self.manager_a, body).await
    }
}
