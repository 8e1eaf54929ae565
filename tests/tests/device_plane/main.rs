//! The MQTT device plane end to end: real MQTT clients against the whole server, with the
//! REST API reflecting what devices do.

mod access;
mod acknowledged;
mod certificates;
mod commands;
mod configuration;
mod ingest;
mod limits;
mod resends;
mod revocation;
mod stock_tools;
mod timeouts;

use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::DeviceIdentity;

/// A server with two organizations, a device in each and a manager of the first.
pub struct Fleet {
    pub app: TestApp,
    pub org_a: String,
    pub manager_a: String,
    pub device_a: DeviceIdentity,
    pub device_b: DeviceIdentity,
}

pub async fn fleet() -> Fleet {
    let app = TestApp::spawn().await;
    let org_a = app.create_org("org-a").await;
    let org_b = app.create_org("org-b").await;
    let manager_a = app.create_user("alice", &["Operator"], &[&org_a]).await;
    let device_a = app
        .register_device(&manager_a, &org_a, "org-a", "dev-a")
        .await;
    let device_b = app
        .register_device(&app.admin_token, &org_b, "org-b", "dev-b")
        .await;
    Fleet {
        app,
        org_a,
        manager_a,
        device_a,
        device_b,
    }
}

pub const ONLINE: &str =
    r#"{"status":"online","model":"TL-WR841N","os":"OpenWrt 23.05","system":"MT7628"}"#;
