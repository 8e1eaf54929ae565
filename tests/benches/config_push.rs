//! Configuration push benchmark: a template shared by N devices (10,000 by default) changes;
//! how long until every device's configuration is re-rendered, every device is notified over
//! MQTT, and every device has downloaded, checked and applied the new archive.
//!
//! The fleet is written straight into a fresh store (one organization, one template, N
//! devices using it), then the release server and the release simulator (`fleetmq-sim`, which
//! applies configurations it is notified of) run as separate processes. The devices connect
//! and apply their first configuration; then the template is PATCHed over REST and the bench
//! times, from the PATCH:
//!
//! - *re-rendered*: the PATCH's answer (all N configurations rendered, checksums compared and
//!   the `modified` status written in one transaction);
//! - *notified*: `fleetmq_config_notices_total` on `/metrics` grew by N (polled every 20 ms);
//! - *applied*: `GET /device/?config__status=applied` counts N again (polled every 250 ms).
//!
//! `cargo build --release -p fleetmq -p fleetmq-sim && cargo bench -p fleetmq-tests --bench config_push -- [--devices N]`
//! Numbers go to docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetmq_store::{ConfigBackend, ConfigFields, Store, TemplateFields};
use fleetmq_tests::fixtures::{bench_organization, register_configured_devices};
use fleetmq_tests::release::{admin_token, metric, raise_open_files, release_binary, start_server};
use serde_json::{Value, json};
use tokio::process::Command;

const ADMIN_PASSWORD: &str = "bench-admin-password";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

fn site(version: &str) -> Value {
    json!({
        "general": {"timezone": "Europe/Rome"},
        "interfaces": [
            {"name": "lan", "type": "bridge", "bridge_members": ["lan1", "lan2"],
             "addresses": [{"proto": "static", "family": "ipv4", "address": "192.168.1.1", "mask": 24}]},
            {"name": "wan", "type": "ethernet", "addresses": [{"proto": "dhcp", "family": "ipv4"}]}
        ],
        "dns_servers": ["9.9.9.9", "1.1.1.1"],
        "ntp": {"enabled": true, "enable_server": false, "server": ["0.openwrt.pool.ntp.org"]},
        "files": [{"path": "/etc/fleet-site", "mode": "0644",
                   "contents": format!("site={{{{ site }}}} device={{{{ name }}}} version={version}")}]
    })
}

fn main() -> anyhow::Result<()> {
    let devices = arg("--devices", 10_000) as usize;
    raise_open_files();
    let (server_bin, sim_bin) = (release_binary("fleetmq")?, release_binary("fleetmq-sim")?);
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("devices.csv");
    let loaded = Instant::now();
    let template = register(dir.path(), devices, &csv)?;
    println!(
        "fleet: {devices} devices sharing template {template}, written and rendered in {:.2} s",
        loaded.elapsed().as_secs_f64()
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(
            server_bin,
            sim_bin,
            dir.path(),
            &csv,
            devices,
            &template,
        ))
}

fn register(data: &Path, devices: usize, csv: &Path) -> anyhow::Result<String> {
    let store = Store::open(data)?;
    let db = store.blocking();
    let org = bench_organization(db)?;
    let Value::Object(config) = site("1") else {
        anyhow::bail!("the template is an object");
    };
    let mut default_values = serde_json::Map::new();
    default_values.insert("site".into(), json!("hq"));
    let (template, _) = db.create_template(TemplateFields {
        name: "site".into(),
        organization: Some(org.id),
        kind: fleetmq_store::TemplateType::Generic,
        backend: ConfigBackend::OpenWrt,
        vpn: None,
        tags: Vec::new(),
        default: false,
        required: false,
        notes: String::new(),
        default_values,
        config,
    })?;
    let config = ConfigFields {
        backend: ConfigBackend::OpenWrt,
        templates: vec![template.id.0],
        context: serde_json::Map::new(),
        config: serde_json::Map::new(),
    };
    let mut lines = String::new();
    for device in register_configured_devices(db, org.id, "sim", 3, devices, Some(config))? {
        lines.push_str(&format!("{},{}\n", device.id, device.fields.key.as_str()));
    }
    std::fs::write(csv, lines)?;
    Ok(template.id.0.to_string())
}

async fn run(
    server_bin: PathBuf,
    sim_bin: PathBuf,
    data: &Path,
    csv: &Path,
    devices: usize,
    template: &str,
) -> anyhow::Result<()> {
    let (mut server, http, mqtt) = start_server(&server_bin, data, ADMIN_PASSWORD).await?;
    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let token = admin_token(&client, &base, ADMIN_PASSWORD).await?;
    let api = Api {
        client,
        base,
        token,
    };

    let connecting = Instant::now();
    let mut sim = Command::new(&sim_bin)
        .args(["--org", "bench", "--mqtt", &mqtt.to_string()])
        .arg("--csv")
        .arg(csv)
        .args(["--devices", &devices.to_string()])
        .args(["--telemetry-interval", "0", "--coordinates-interval", "0"])
        .args(["--duration", "600s"])
        .args(["--connect-rate", "2000", "--max-pending-connects", "48"])
        .args(["--api", &api.base])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    api.until_applied(devices, Duration::from_secs(300)).await?;
    println!(
        "first push: {devices} devices connected, notified, downloaded and applied in {:.2} s",
        connecting.elapsed().as_secs_f64()
    );

    let notices_before = api.notices().await?;
    let start = Instant::now();
    let patched = api
        .client
        .patch(format!(
            "{}/api/v1/controller/template/{template}/",
            api.base
        ))
        .bearer_auth(&api.token)
        .json(&json!({"config": site("2")}))
        .send()
        .await?;
    let rendered = start.elapsed();
    anyhow::ensure!(
        patched.status().is_success(),
        "PATCH failed: {}",
        patched.text().await?
    );
    let target = notices_before + devices as u64;
    while api.notices().await? < target {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "notices never reached {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let notified = start.elapsed();
    api.until_applied(devices, Duration::from_secs(300)).await?;
    let applied = start.elapsed();
    println!("| N | re-rendered (PATCH answered) | all notified | all applied |");
    println!("|---|---|---|---|");
    println!(
        "| {devices} | {:.2} s | {:.2} s | {:.2} s |",
        rendered.as_secs_f64(),
        notified.as_secs_f64(),
        applied.as_secs_f64()
    );
    let _ = sim.kill().await;
    let _ = server.kill().await;
    Ok(())
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// `fleetmq_config_notices_total` from `/metrics`.
    async fn notices(&self) -> anyhow::Result<u64> {
        metric(
            &self.client,
            &self.base,
            &self.token,
            "fleetmq_config_notices_total",
        )
        .await
    }

    /// Waits until `devices` configurations are `applied`.
    async fn until_applied(&self, devices: usize, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let page: Value = self
                .client
                .get(format!(
                    "{}/api/v1/controller/device/?config__status=applied&page_size=1",
                    self.base
                ))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            if page["count"].as_u64() == Some(devices as u64) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {devices} configurations applied",
                page["count"]
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
