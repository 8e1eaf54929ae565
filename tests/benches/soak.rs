//! Soak under attack: a fleet of real devices connected and publishing while hostile and
//! careless clients do their worst, against the release binary with its default limits.
//!
//! - the server: `target/release/fleetmq` in its own process (so its RSS is its own);
//! - the fleet: `target/release/fleetmq-sim` in its own process, from 127.0.0.1, devices
//!   registered straight into the store beforehand (a CSV of ids and keys);
//! - the attack, from this process: `--silent` sockets from 127.0.0.2 that open the MQTT port
//!   and never send CONNECT (reopened whenever the server closes one), `--idle-http` sockets
//!   from 127.0.0.3 that send half a request and stay (reopened likewise), and `--hammer`
//!   concurrent wrong-password `POST /api/v1/users/token/` loops from 127.0.0.4;
//! - the probes: `GET /healthz` on a fresh connection every 100 ms (latency into a histogram)
//!   and the server's RSS every second.
//!
//! Build both binaries first, then run:
//! `cargo build --release -p fleetmq -p fleetmq-sim && cargo bench -p fleetmq-tests --bench soak
//! -- [--devices 10000] [--silent 10000] [--idle-http 2000] [--hammer 64] [--seconds 120]
//! [--telemetry-ms 10000]` (a shorter telemetry interval reaches a per-message plateau sooner)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetmq_store::{OrganizationFields, Slug, Store};
use fleetmq_tests::fixtures::{register_devices, rss_kib};
use fleetmq_tests::release::{raise_open_files, release_binary, start_server};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken as Stop;

/// How long an attacking socket waits before it opens again once the server closed it (10,000
/// of them still try 10,000 times a second).
const REOPEN_AFTER: Duration = Duration::from_secs(1);

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Counters of the attack, printed at the end.
#[derive(Default)]
struct Attack {
    silent_opened: AtomicU64,
    silent_refused: AtomicU64,
    http_opened: AtomicU64,
    http_refused: AtomicU64,
    token_answers: [AtomicU64; 6],
}

fn main() -> anyhow::Result<()> {
    let devices = arg("--devices", 10_000) as usize;
    let silent = arg("--silent", 10_000) as usize;
    let idle_http = arg("--idle-http", 2_000) as usize;
    let hammer = arg("--hammer", 64) as usize;
    let seconds = arg("--seconds", 120);
    let telemetry_ms = arg("--telemetry-ms", 10_000);
    raise_open_files();
    let (server_bin, sim_bin) = (release_binary("fleetmq")?, release_binary("fleetmq-sim")?);
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("devices.csv");
    register(dir.path(), devices, &csv)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(soak(SoakPlan {
            server_bin,
            sim_bin,
            data: dir.path().to_owned(),
            csv,
            devices,
            silent,
            idle_http,
            hammer,
            seconds,
            telemetry_ms,
        }))
}

struct SoakPlan {
    server_bin: PathBuf,
    sim_bin: PathBuf,
    data: PathBuf,
    csv: PathBuf,
    devices: usize,
    silent: usize,
    idle_http: usize,
    hammer: usize,
    seconds: u64,
    /// Each device's telemetry interval.
    telemetry_ms: u64,
}

async fn soak(plan: SoakPlan) -> anyhow::Result<()> {
    let (mut server, http, mqtt) =
        start_server(&plan.server_bin, &plan.data, "soak-admin-password").await?;
    let pid = server.id().unwrap_or_default();
    println!("server pid {pid}: REST on {http}, MQTT on {mqtt}");
    let stop = Stop::new();
    let attack = Arc::new(Attack::default());
    let mut tasks = Vec::new();
    for _ in 0..plan.silent {
        tasks.push(tokio::spawn(silent_socket(
            mqtt,
            Arc::clone(&attack),
            stop.clone(),
        )));
    }
    for _ in 0..plan.idle_http {
        tasks.push(tokio::spawn(idle_http(
            http,
            Arc::clone(&attack),
            stop.clone(),
        )));
    }
    for _ in 0..plan.hammer {
        tasks.push(tokio::spawn(hammer_tokens(
            http,
            Arc::clone(&attack),
            stop.clone(),
        )));
    }
    let rss_before = rss_kib(pid);
    // The probe stands for an outside monitor: on a thread and runtime of its own, so that the
    // attack's tasks in this process cannot delay its timer or its socket and be counted as
    // the server's latency.
    let probe_stop = stop.clone();
    let probes = std::thread::Builder::new()
        .name("healthz-probe".into())
        .spawn(move || -> anyhow::Result<Vec<Window>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(probe(http, pid, probe_stop)))
        })?;

    let sim = Command::new(&plan.sim_bin)
        .args(["--org", "soak", "--mqtt", &mqtt.to_string()])
        .arg("--csv")
        .arg(&plan.csv)
        .args(["--devices", &plan.devices.to_string()])
        .args(["--telemetry-interval", &format!("{}ms", plan.telemetry_ms)])
        .args(["--coordinates-interval", "0"])
        .args(["--duration", &format!("{}s", plan.seconds)])
        // A real fleet connects from many addresses; from one, its handshakes in flight stay
        // within the per-address pre-CONNECT budget (64 by default).
        .args(["--connect-rate", "1000", "--max-pending-connects", "48"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let report = sim.wait_with_output().await?;
    let report = String::from_utf8_lossy(&report.stdout);
    stop.cancel();
    let windows = tokio::task::spawn_blocking(move || probes.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.kill().await;

    println!("--- fleetmq-sim (the legitimate fleet) ---\n{report}");
    println!("--- attack ---");
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "silent MQTT sockets: {} opened, {} refused or closed by the server",
        n(&attack.silent_opened),
        n(&attack.silent_refused)
    );
    println!(
        "idle HTTP sockets:   {} opened, {} refused or closed by the server",
        n(&attack.http_opened),
        n(&attack.http_refused)
    );
    let statuses = ["401", "429", "503", "400", "other", "failed"];
    let answers: Vec<String> = statuses
        .iter()
        .zip(&attack.token_answers)
        .map(|(s, c)| format!("{s}: {}", n(c)))
        .collect();
    println!("wrong-password token requests: {}", answers.join(", "));
    println!("--- server ---");
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("RSS before the fleet: {} MiB", rss_before / 1024);
    println!("| from s | /healthz probes | failed | p50 ms | p99 ms | max ms | RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let mut all = histogram();
    let mut failed = 0;
    for (i, w) in windows.iter().enumerate() {
        let _ = all.add(&w.histogram);
        failed += w.failed;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            i * 10,
            w.histogram.len(),
            w.failed,
            ms(&w.histogram, 0.5),
            ms(&w.histogram, 0.99),
            w.histogram.max() as f64 / 1000.0,
            w.rss_kib / 1024
        );
    }
    println!(
        "/healthz over the whole run: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failed} failed",
        all.len(),
        ms(&all, 0.5),
        ms(&all, 0.99),
        all.max() as f64 / 1000.0
    );
    Ok(())
}

/// Writes an organization `soak` with `devices` devices into a new store under `data`, and
/// their ids and keys into `csv` for fleetmq-sim.
fn register(data: &Path, devices: usize, csv: &Path) -> anyhow::Result<()> {
    let store = Store::open(data)?;
    let db = store.blocking();
    let org = db.create_organization(OrganizationFields {
        name: "Soak".into(),
        slug: Slug::parse("soak").map_err(anyhow::Error::msg)?,
        description: String::new(),
        email: String::new(),
        url: String::new(),
        is_active: true,
    })?;
    let mut lines = String::new();
    for device in register_devices(db, org.id, "sim", 2, devices)? {
        lines.push_str(&format!("{},{}\n", device.id, device.fields.key.as_str()));
    }
    std::fs::write(csv, lines)?;
    Ok(())
}

/// Starts the release server on free ports; returns it with its REST and MQTT addresses.
fn from(last_octet: u8) -> anyhow::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)),
        0,
    ))?;
    Ok(socket)
}

/// Holds a socket to the MQTT port that never sends CONNECT; reopens it when the server
/// closes it (as a flood would).
async fn silent_socket(mqtt: SocketAddr, attack: Arc<Attack>, stop: Stop) {
    while !stop.is_cancelled() {
        let Ok(socket) = from(2) else { return };
        match socket.connect(mqtt).await {
            Ok(mut stream) => {
                attack.silent_opened.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = stream.read(&mut buf) => {
                        attack.silent_refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(REOPEN_AFTER).await;
                    }
                    () = stop.cancelled() => return,
                }
            }
            Err(_) => {
                attack.silent_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(REOPEN_AFTER).await;
            }
        }
    }
}

/// Holds an HTTP connection with half a request; reopens it when the server closes it.
async fn idle_http(http: SocketAddr, attack: Arc<Attack>, stop: Stop) {
    while !stop.is_cancelled() {
        let Ok(socket) = from(3) else { return };
        match socket.connect(http).await {
            Ok(mut stream) => {
                attack.http_opened.fetch_add(1, Ordering::Relaxed);
                let _ = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: soak\r\n")
                    .await;
                let mut buf = [0u8; 256];
                tokio::select! {
                    _ = stream.read(&mut buf) => {
                        attack.http_refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(REOPEN_AFTER).await;
                    }
                    () = stop.cancelled() => return,
                }
            }
            Err(_) => {
                attack.http_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(REOPEN_AFTER).await;
            }
        }
    }
}

/// Asks for a token with a wrong password, over and over, on one keep-alive connection.
async fn hammer_tokens(http: SocketAddr, attack: Arc<Attack>, stop: Stop) {
    let Ok(client) = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))
        .timeout(Duration::from_secs(30))
        .build()
    else {
        return;
    };
    let url = format!("http://{http}/api/v1/users/token/");
    while !stop.is_cancelled() {
        let answer = client
            .post(&url)
            .json(&serde_json::json!({"username": "admin", "password": "wrong-password"}))
            .send()
            .await;
        let slot = match answer.map(|r| r.status().as_u16()) {
            Ok(401) => 0,
            Ok(429) => 1,
            Ok(503) => 2,
            Ok(400) => 3,
            Ok(_) => 4,
            Err(_) => 5,
        };
        attack.token_answers[slot].fetch_add(1, Ordering::Relaxed);
        if slot == 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `/healthz` latency and the server's RSS over one 10-second window.
struct Window {
    histogram: Histogram<u64>,
    failed: u64,
    rss_kib: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 figures is valid"))
    })
}

/// `/healthz` on a fresh connection every 100 ms, and the server's RSS, in 10-second windows.
async fn probe(http: SocketAddr, pid: u32, stop: Stop) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.is_cancelled() {
        let mut window = Window {
            histogram: histogram(),
            failed: 0,
            rss_kib: 0,
        };
        for _ in 0..100 {
            tick.tick().await;
            let started = Instant::now();
            match tokio::time::timeout(Duration::from_secs(5), healthz(http)).await {
                Ok(Ok(())) => {
                    let micros = started.elapsed().as_micros() as u64;
                    let _ = window.histogram.record(micros.max(1));
                }
                _ => window.failed += 1,
            }
            if stop.is_cancelled() {
                break;
            }
        }
        window.rss_kib = rss_kib(pid);
        windows.push(window);
    }
    windows
}

async fn healthz(http: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(http).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    anyhow::ensure!(answer.starts_with(b"HTTP/1.1 200"), "healthz not OK");
    Ok(())
}
