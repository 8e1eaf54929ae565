//! OTAO targeted rollout benchmark: N endpoints (10,000 by default) run `kettle` 1.0.0;
//! version 1.1.0 is published `targeted` with two filters, each matching half the fleet,
//! whose rollout dates are 10 s apart. How long from each rollout date until the last
//! endpoint of its filter reports the version installed, and what the server spent.
//!
//! The fleet is written straight into a fresh store (one organization, N devices whose
//! hardware id is `kettle-a` for one half and `kettle-b` for the other), then the release
//! server and the release simulator (`fleetmq-sim --software kettle=1.0.0`, which reports its
//! inventory on connect and installs what it is delivered) run as separate processes. Once
//! every device has connected and reported its inventory, the bench creates the filters and
//! publishes 1.1.0 over REST with rollout dates `now + 5 s` and `now + 15 s`, then polls
//! `fleetmq_software_installations_succeeded_total` on `/metrics` every 50 ms.
//!
//! `cargo build --release -p fleetmq -p fleetmq-sim && cargo bench -p fleetmq-tests --bench otao -- [--devices N]`
//! Numbers go to docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetmq_store::Store;
use fleetmq_tests::fixtures::{bench_organization, register_fleet, rss_kib};
use fleetmq_tests::release::{admin_token, metric, raise_open_files, release_binary, start_server};
use serde_json::{Value, json};
use tokio::process::Command;

const ADMIN_PASSWORD: &str = "bench-admin-password";
/// The gap between the two filters' rollout dates.
const GAP: Duration = Duration::from_secs(10);
/// From publishing to the first rollout date.
const LEAD: Duration = Duration::from_secs(5);

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let devices = arg("--devices", 10_000) as usize;
    raise_open_files();
    let (server_bin, sim_bin) = (release_binary("fleetmq")?, release_binary("fleetmq-sim")?);
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("devices.csv");
    let loaded = Instant::now();
    let org = register(dir.path(), devices, &csv)?;
    println!(
        "fleet: {devices} devices in two halves, written in {:.2} s",
        loaded.elapsed().as_secs_f64()
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(server_bin, sim_bin, dir.path(), &csv, devices, &org))
}

fn register(data: &Path, devices: usize, csv: &Path) -> anyhow::Result<String> {
    let store = Store::open(data)?;
    let db = store.blocking();
    let org = bench_organization(db)?;
    let a = devices / 2;
    let mut lines = String::new();
    for (prefix, mac, count) in [("a", 5, a), ("b", 6, devices - a)] {
        let hardware_id = format!("kettle-{prefix}");
        for device in register_fleet(db, org.id, prefix, mac, count, None, &hardware_id)? {
            lines.push_str(&format!("{},{}\n", device.id, device.fields.key.as_str()));
        }
    }
    std::fs::write(csv, lines)?;
    Ok(org.id.0.to_string())
}

/// User and system CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// `yyyy-MM-ddTHH:mm:ssZ`, the seed's rollout date format.
fn rfc3339(at: std::time::SystemTime) -> String {
    let micros = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 * 1_000_000);
    let text = fleetmq_store::Timestamp::from_micros(micros).to_string();
    format!("{}Z", &text[..19])
}

async fn run(
    server_bin: PathBuf,
    sim_bin: PathBuf,
    data: &Path,
    csv: &Path,
    devices: usize,
    org: &str,
) -> anyhow::Result<()> {
    let (mut server, http, mqtt) = start_server(&server_bin, data, ADMIN_PASSWORD).await?;
    let pid = server.id().unwrap_or(0);
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
        .args(["--software", "kettle=1.0.0", "--software-install-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    // Every device's inventory stored.
    api.until_metric(
        "fleetmq_software_inventories_total",
        devices as u64,
        Duration::from_secs(300),
    )
    .await?;
    println!(
        "{devices} devices connected and reported their inventory in {:.2} s",
        connecting.elapsed().as_secs_f64()
    );

    println!(
        "before publishing: server RSS {} MiB, CPU so far {:.1} s",
        rss_kib(pid) / 1024,
        cpu_seconds(pid)
    );
    let mut filters = Vec::new();
    for wave in ["a", "b"] {
        let created = api
            .send(
                reqwest::Method::POST,
                "/api/v1/filters",
                json!({"name": format!("wave {wave}"), "organization": org,
                       "hardwareId": format!("kettle-{wave}")}),
            )
            .await?;
        filters.push(
            created["filterId"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no filterId: {created}"))?
                .to_owned(),
        );
    }
    // Whole seconds, as the seed's format has them: the dates are the next whole second
    // after now + LEAD and 10 s later.
    let first = std::time::SystemTime::now() + LEAD + Duration::from_secs(1);
    let first_secs = first
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let first = std::time::UNIX_EPOCH + Duration::from_secs(first_secs);
    let second = first + GAP;
    let cpu_before = cpu_seconds(pid);
    api.send(
        reqwest::Method::POST,
        &format!("/api/v1/applications/kettle/software/1.1.0?organization={org}"),
        json!({
            "specification": {"link": "http://repository.invalid/kettle-1.1.0.ipk"},
            "metadata": "bench",
            "upgradableFrom": ["1.0.0"],
            "rolloutStrategy": "targeted",
            "filters": [
                {"filterId": filters[0], "rolloutDate": rfc3339(first)},
                {"filterId": filters[1], "rolloutDate": rfc3339(second)},
            ]
        }),
    )
    .await?;

    let half_a = (devices / 2) as u64;
    let since = |at: std::time::SystemTime| {
        std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
    };
    let mut done_a = None;
    let mut waited = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let installed = api
            .metric("fleetmq_software_installations_succeeded_total")
            .await?;
        if done_a.is_none() && installed >= half_a {
            done_a = Some(since(first));
            println!(
                "filter A done: server RSS {} MiB, CPU since publishing {:.1} s",
                rss_kib(pid) / 1024,
                cpu_seconds(pid) - cpu_before
            );
        }
        if !waited && std::time::SystemTime::now() >= first {
            waited = true;
            println!(
                "first rollout date: CPU while waiting for it {:.1} s",
                cpu_seconds(pid) - cpu_before
            );
        }
        if installed >= devices as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {installed} of {devices} endpoints installed 1.1.0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done_b = since(second);
    let cpu = cpu_seconds(pid) - cpu_before;
    let installed_early = api
        .metric("fleetmq_software_installations_failed_total")
        .await?;
    println!(
        "| N | filter A: rollout date → last installed | filter B: rollout date → last installed | server CPU (publish → end) | server peak RSS | failed |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {devices} | {:.2} s | {:.2} s | {:.1} s | {} MiB | {installed_early} |",
        done_a.unwrap_or_default().as_secs_f64(),
        done_b.as_secs_f64(),
        cpu,
        peak_rss_kib(pid) / 1024,
    );
    println!("server RSS now: {} MiB", rss_kib(pid) / 1024);
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
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        metric(&self.client, &self.base, &self.token, name).await
    }

    async fn until_metric(
        &self,
        name: &str,
        at_least: u64,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let value = self.metric(name).await?;
            if value >= at_least {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} reached only {value} of {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
