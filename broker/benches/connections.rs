//! Connections benchmark: broker resident memory per connected device and the connect rate,
//! with the devices in a separate process (`fleetmq-sim`). Not a test: the numbers go to
//! docs/mqtt.md.
//!
//! ```text
//! cargo build --release -p fleetmq-sim
//! cargo bench -p fleetmq-broker --bench connections -- --devices 19000 \
//!     [--sim target/release/fleetmq-sim] [--connect-rate 2000] [--max-pending 500]
//! ```
//!
//! The broker runs in this process with the default router sizing and an `Uplink` that
//! takes everything at once (so the numbers are the broker's, not the store's) and counts
//! `SessionEvent::Connected`. Each simulated device connects (keep-alive 60 s), publishes its
//! retained online presence and subscribes to its `down/#` (answered by the front end, not
//! the router), as real devices do. Both
//! processes raise their open-files limit to the hard limit.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, Delivered, Login, Refusal, SessionEvent,
    Uplink, UplinkFuture, UplinkMessage,
};
use fleetmq_protocol::Principal;
use tokio_util::sync::CancellationToken;

const ORG: &str = "bench";

/// Devices authenticate with key `key-{device id}`.
struct BenchAuth;

impl Authenticator for BenchAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let user = login.username.ok_or(Refusal::BadCredentials)?;
            if login.password.as_deref() == Some(format!("key-{user}").as_bytes()) {
                Ok(Principal::Device {
                    org_slug: ORG.into(),
                    device_id: user.parse().map_err(|_| Refusal::BadCredentials)?,
                })
            } else {
                Err(Refusal::BadCredentials)
            }
        })
    }
}

/// Takes every message at once; records when each device connected.
#[derive(Default)]
struct CountingUplink {
    connected: AtomicUsize,
    delivered: AtomicUsize,
    /// When each device's CONNACK went out, in order.
    connects: Mutex<Vec<Instant>>,
}

impl Uplink for CountingUplink {
    fn deliver(&self, _message: UplinkMessage) -> UplinkFuture<'_> {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(Delivered::Taken)))
    }

    fn session(&self, event: SessionEvent) {
        if let SessionEvent::Connected { .. } = event {
            let now = Instant::now();
            self.connects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(now);
            self.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let devices: usize = arg("--devices", 19_000);
    let connect_rate: f64 = arg("--connect-rate", 2_000.0);
    let max_pending: usize = arg("--max-pending", 500);
    // `cargo bench` runs benches in the package directory, not the workspace root.
    let default_sim =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/fleetmq-sim");
    let sim: PathBuf = arg("--sim", default_sim);
    if !sim.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p fleetmq-sim (or pass --sim PATH)",
            sim.display()
        )
        .into());
    }
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        println!("cannot raise the open files limit: {e}");
    }
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    println!("open files limit of the broker process: {soft} (hard {hard})");

    let dir = std::env::temp_dir().join(format!("fleetmq-conn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("devices.csv");
    let mut rows = String::from("id,key\n");
    for _ in 0..devices {
        let id = uuid::Uuid::new_v4();
        rows.push_str(&format!("{id},key-{id}\n"));
    }
    std::fs::write(&csv, rows)?;

    let config = BrokerConfig {
        mqtt_addr: "127.0.0.1:0".parse()?,
        max_connections: devices + 100,
        // Every simulated device connects from 127.0.0.1 (up to 500 handshakes at once).
        limits: fleetmq_broker::Limits {
            max_pending_per_address: 1024,
            ..fleetmq_broker::Limits::default()
        },
        ..BrokerConfig::default()
    };
    println!("session limits: {:?}", config.limits);
    let uplink = Arc::new(CountingUplink::default());
    let broker = Broker::bind(config, Arc::new(BenchAuth))
        .await?
        .with_uplink(Arc::clone(&uplink) as Arc<dyn Uplink>);
    let addr = broker.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(broker.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib();
    println!("broker RSS before connections: {} MiB", baseline / 1024);

    let mut child = Command::new(&sim)
        .args(["--org", ORG, "--mqtt", &addr.to_string()])
        .arg("--csv")
        .arg(&csv)
        .args(["--devices", &devices.to_string()])
        .args(["--connect-rate", &connect_rate.to_string()])
        .args(["--max-pending-connects", &max_pending.to_string()])
        .args(["--telemetry-interval", "0", "--coordinates-interval", "0"])
        .args(["--connect-timeout", "600s", "--duration", "15s"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;

    let started = Instant::now();
    let mut peak = baseline;
    while uplink.connected.load(Ordering::Relaxed) < devices {
        if started.elapsed() > Duration::from_secs(600) {
            println!("gave up after 600 s");
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            println!("fleetmq-sim exited early: {status}");
            break;
        }
        peak = peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = uplink.connected.load(Ordering::Relaxed);
    // Let the presences and subscriptions of the last devices land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = rss_kib();
    peak = peak.max(all);
    let connects = uplink
        .connects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let span = match (connects.first(), connects.last()) {
        (Some(first), Some(last)) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    println!();
    println!("devices connected: {connected} of {devices}");
    println!(
        "connect phase: {:.1} s from first to last CONNACK = {:.0} connections/s (sim asked for {connect_rate}/s, {max_pending} handshakes in flight)",
        span.as_secs_f64(),
        connected as f64 / span.as_secs_f64().max(0.001)
    );
    // The router's per-subscription and per-topic matching grows with the fleet: show the
    // rate per quarter of the connect phase.
    let quarter = connects.len() / 4;
    if quarter > 0 {
        for q in 0..4 {
            let from = connects[q * quarter];
            let to = connects[((q + 1) * quarter).min(connects.len() - 1)];
            println!(
                "  devices {:>6}..{:<6} {:>7.0} connections/s",
                q * quarter,
                (q + 1) * quarter,
                quarter as f64 / to.duration_since(from).as_secs_f64().max(0.001)
            );
        }
    }
    println!(
        "broker RSS with all connected: {} MiB (+{} MiB, peak {} MiB) = {:.1} KiB per connected device",
        all / 1024,
        all.saturating_sub(baseline) / 1024,
        peak / 1024,
        all.saturating_sub(baseline) as f64 / connected.max(1) as f64
    );
    println!(
        "device messages delivered (presence): {}",
        uplink.delivered.load(Ordering::Relaxed)
    );

    let _ = child.wait();
    shutdown.cancel();
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
