//! The broker side by side with Mosquitto (issue 13): the same load client against both, in
//! one run, with ratios.
//!
//! ```text
//! apt-get install mosquitto        # the bench starts /usr/sbin/mosquitto itself
//! cargo build --release -p fleetmq -p fleetmq-sim && \
//!   cargo bench -p fleetmq-tests --bench broker -- [--runs 3] [--messages 20000] [--window 10] \
//!     [--publishers 50] [--idle 2000,5000] [--devices 19000] [--only one-to-one,fan-in,idle,devices] \
//!     [--in-flight 64] [--fleetmq-args "--store-cache-mib 16"] [--protocol 3.1.1|5] [--out PATH]
//! ```
//!
//! `--protocol 5` runs every load client as MQTT 5 (rumqttc's v5 client for `one-to-one` and
//! `fan-in`, the simulator's codec in MQTT 5 for `idle` and `devices`); 3.1.1 is the default.
//!
//! Scenarios (each run starts a fresh broker process; runs alternate Mosquitto, fleetmq,
//! Mosquitto, fleetmq, … and the table shows the median of `--runs` with every run beside it):
//!
//! - `one-to-one`: one publisher → one subscriber on `bench/x`; `fan-in`: `--publishers`
//!   publishers, each on `bench/{i}/x`, → one subscriber on `bench/+/x`. rumqttc clients, QoS 1
//!   both ways, 100-byte payloads carrying the publisher's index and a sequence number. The
//!   subscriber subscribes first; every publisher connects, then all start together and each
//!   sends `--messages` with at most `--window` unacknowledged (rumqttc's inflight). The
//!   subscriber counts each (publisher, sequence) once, so the bench knows exactly which
//!   messages were acknowledged to their publisher (PUBACK) and never delivered ("lost") and
//!   which came twice. It waits until every message arrived or, once the publishers are done,
//!   nothing arrived for 2 s. Delivered msg/s = distinct messages delivered ÷ (last delivery −
//!   start). A PUBACK says the broker took a message, not that the subscriber has it, so the
//!   broker's queue towards a slow subscriber is bounded by `--publishers × --messages`, not by
//!   the window; `--e2e-window K` additionally holds each publisher to K messages published
//!   and not yet delivered, which keeps the load below any queue bound ≥ publishers × K (a
//!   publisher that sees nothing delivered for 2 s stops holding back: the rest is lost).
//! - `idle`: N raw TCP clients (N from `--idle`) each send a minimal MQTT 3.1.1 CONNECT
//!   (keep-alive 600 s, no credentials) and read the CONNACK, `--in-flight` (64) at once;
//!   connects/s = N ÷ time until the last CONNACK, after a warm-up of 200 connections
//!   opened and closed the same way (a fresh process's first connects pay once for touching
//!   their code, and the broker's CPU is let settle after them); handshake time from
//!   `connect()` to CONNACK (p50, p99); RSS per connection = (broker RSS after − before the
//!   warm-up) ÷ N, both read from `/proc/<pid>/status` once RSS stopped moving (at most 5 s);
//!   broker CPU per connection from `/proc/<pid>/stat` over the timed phase (10 ms ticks).
//! - `devices` (fleetmq only): `--devices` devices written straight into a fresh store, then
//!   connected as devices do (CONNECT with id and key and a retained offline will, retained
//!   online presence at QoS 1, SUBSCRIBE to their `down/#`), `--in-flight` at once; RSS per connected
//!   device and connects/s until the last device's PUBACK and SUBACK.
//!
//! Mosquitto runs as `mosquitto -c <generated conf>` (listener on a free loopback port,
//! `allow_anonymous true`, `max_queued_messages 1000`, `persistence false`, log to a file in a
//! temporary directory); fleetmq as the release binary with a fresh `--data-dir` and
//! `--mqtt-anonymous-sandbox`, its connection limits raised for the load (all clients come
//! from 127.0.0.1). Load client and broker are separate processes on the same machine; both
//! raise their open-files limit to the hard limit (keep under 20,000 sockets per process).
//! Method and figures: docs/benchmarks.md, "Broker side by side with Mosquitto".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fleetmq_sim::mqtt::{self as wire, Connect, Incoming, Will};
use fleetmq_store::Store;
use fleetmq_tests::fixtures::{bench_organization, cpu_ticks, register_devices, rss_kib};
use fleetmq_tests::mosquitto::{MOSQUITTO, Mosquitto};
use fleetmq_tests::release::{raise_open_files, release_binary, start_server_with};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

const PAYLOAD: usize = 100;
/// Nothing delivered for this long once the publishers are done: the rest is lost.
const QUIET: Duration = Duration::from_secs(2);
/// Longest a throughput run may publish, and the longest a connect phase may take.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);
/// One handshake's bound (TCP connect to CONNACK, SUBACK).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);
const ADMIN_PASSWORD: &str = "bench-admin-password";

/// The command line: `--name value` pairs.
struct Options {
    runs: usize,
    messages: u64,
    window: u16,
    e2e_window: u64,
    publishers: usize,
    idle: Vec<usize>,
    devices: usize,
    /// Handshakes in flight at once (idle connections and devices).
    in_flight: usize,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
    /// More flags for every fleetmq server the bench starts (e.g. `--store-cache-mib 16`).
    fleetmq_args: Vec<String>,
    /// The MQTT every load client speaks (`--protocol 3.1.1` or `5`).
    protocol: wire::Version,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.windows(2)
                .find(|pair| pair[0] == name)
                .map(|pair| pair[1].clone())
        };
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            value(name).map_or(Ok(default), |v| {
                v.replace(['_', ','], "")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
            })
        };
        let idle = value("--idle")
            .unwrap_or_else(|| "2000,5000".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--idle: {e}"))?;
        let only = value("--only").map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        });
        if let Some(only) = &only {
            for name in only {
                anyhow::ensure!(
                    SCENARIOS.contains(&name.as_str()),
                    "--only {name}: one of {}",
                    SCENARIOS.join(", ")
                );
            }
        }
        let options = Self {
            runs: number("--runs", 3)?.max(1) as usize,
            messages: number("--messages", 20_000)?.max(1),
            window: number("--window", 10)?.clamp(1, u64::from(u16::MAX)) as u16,
            e2e_window: number("--e2e-window", 0)?,
            publishers: number("--publishers", 50)?.max(1) as usize,
            idle,
            devices: number("--devices", 19_000)? as usize,
            in_flight: number("--in-flight", 64)?.clamp(1, 512) as usize,
            only,
            out: value("--out").map(PathBuf::from),
            fleetmq_args: value("--fleetmq-args")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            protocol: match value("--protocol").as_deref() {
                None | Some("3.1.1") => wire::Version::V311,
                Some("5") => wire::Version::V5,
                Some(other) => anyhow::bail!("--protocol {other}: 3.1.1 or 5"),
            },
        };
        Ok(options)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }
}

const SCENARIOS: [&str; 4] = ["one-to-one", "fan-in", "idle", "devices"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Mosquitto,
    Fleetmq,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mosquitto => "Mosquitto",
            Kind::Fleetmq => "fleetmq",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    raise_open_files();
    anyhow::ensure!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} is missing: apt-get install mosquitto"
    );
    let fleetmq = release_binary("fleetmq")?;
    let open_files = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft);
    let most = options
        .idle
        .iter()
        .copied()
        .chain(options.wants("devices").then_some(options.devices))
        .max()
        .unwrap_or(0);
    anyhow::ensure!(
        (most as u64) + 1_000 <= open_files,
        "{most} connections need more than this process's {open_files} open files (keep under ~{})",
        open_files.saturating_sub(1_000)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let table = runtime.block_on(run(&options, &fleetmq))?;
    println!("\n{table}");
    if let Some(out) = &options.out {
        std::fs::write(out, &table)?;
        println!("(written to {})", out.display());
    }
    Ok(())
}

/// Every figure of one cell, one per run.
#[derive(Default)]
struct Cells {
    mosquitto: Vec<f64>,
    fleetmq: Vec<f64>,
}

impl Cells {
    fn push(&mut self, kind: Kind, value: f64) {
        match kind {
            Kind::Mosquitto => self.mosquitto.push(value),
            Kind::Fleetmq => self.fleetmq.push(value),
        }
    }
}

/// The rows of the table, in order.
struct Report {
    rows: Vec<(String, Cells, usize)>,
    /// Acknowledged / delivered / lost / duplicates, per scenario and broker, every run.
    delivery: Vec<(String, Vec<(Kind, Delivery)>)>,
    /// Handshakes that failed, per run.
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, name: &str, decimals: usize) -> &mut Cells {
        if let Some(i) = self.rows.iter().position(|(n, _, _)| n == name) {
            return &mut self.rows[i].1;
        }
        self.rows
            .push((name.to_owned(), Cells::default(), decimals));
        let last = self.rows.len() - 1;
        &mut self.rows[last].1
    }

    fn delivery(&mut self, scenario: &str, kind: Kind, d: Delivery) {
        if let Some(entry) = self.delivery.iter_mut().find(|(n, _)| n == scenario) {
            entry.1.push((kind, d));
        } else {
            self.delivery.push((scenario.to_owned(), vec![(kind, d)]));
        }
    }
}

async fn run(options: &Options, fleetmq: &Path) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        delivery: Vec::new(),
        notes: Vec::new(),
    };
    let brokers = [Kind::Mosquitto, Kind::Fleetmq];
    let Options {
        messages,
        window,
        e2e_window,
        publishers,
        ..
    } = *options;
    if options.wants("one-to-one") {
        let load = Load {
            publishers: 1,
            messages,
            window,
            e2e_window,
            version: options.protocol,
            fan_in: false,
        };
        for run in 0..options.runs {
            for kind in brokers {
                let broker = Broker::start(kind, fleetmq, 1, None, &options.fleetmq_args).await?;
                let d = throughput(broker.addr, &load).await;
                broker.stop().await;
                let d = d?;
                println!("[run {}] 1 → 1, {}: {d}", run + 1, kind.name());
                report
                    .row(
                        "1 publisher → 1 subscriber: delivered msg/s (QoS 1, 100 B)",
                        0,
                    )
                    .push(kind, d.rate());
                report.delivery("1 → 1", kind, d);
            }
        }
    }
    if options.wants("fan-in") {
        let load = Load {
            publishers,
            messages,
            window,
            e2e_window,
            version: options.protocol,
            fan_in: true,
        };
        for run in 0..options.runs {
            for kind in brokers {
                let broker =
                    Broker::start(kind, fleetmq, publishers + 1, None, &options.fleetmq_args)
                        .await?;
                let d = throughput(broker.addr, &load).await;
                broker.stop().await;
                let d = d?;
                println!("[run {}] {publishers} → 1, {}: {d}", run + 1, kind.name());
                report
                    .row(
                        &format!("{publishers} publishers ({publishers} topics) → 1 wildcard subscriber: delivered msg/s (QoS 1, 100 B)"),
                        0,
                    )
                    .push(kind, d.rate());
                report.delivery(&format!("{publishers} → 1"), kind, d);
            }
        }
    }
    if options.wants("idle") {
        for &n in &options.idle {
            for run in 0..options.runs {
                for kind in brokers {
                    let broker =
                        Broker::start(kind, fleetmq, n, None, &options.fleetmq_args).await?;
                    let idle = connect_idle(&broker, n, options.in_flight, options.protocol).await;
                    broker.stop().await;
                    let idle = idle?;
                    println!(
                        "[run {}] {n} idle connections, {}: {idle}",
                        run + 1,
                        kind.name()
                    );
                    if idle.failed > 0 {
                        report.notes.push(format!(
                            "run {}, {n} idle connections, {}: {idle}",
                            run + 1,
                            kind.name()
                        ));
                    }
                    report
                        .row(
                            &format!("{} idle connections: connects/s", thousands(n as f64, 0)),
                            0,
                        )
                        .push(kind, idle.rate());
                    let at = thousands(n as f64, 0);
                    report
                        .row(&format!("handshake p50 (ms), at {at}"), 2)
                        .push(kind, idle.latency_ms(0.5));
                    report
                        .row(&format!("handshake p99 (ms), at {at}"), 1)
                        .push(kind, idle.latency_ms(0.99));
                    report
                        .row(&format!("broker CPU per connect (µs), at {at}"), 0)
                        .push(kind, idle.cpu_us_each());
                    report
                        .row(
                            &format!(
                                "RSS per idle connection (KiB), at {}",
                                thousands(n as f64, 0)
                            ),
                            1,
                        )
                        .push(kind, idle.kib_each());
                }
            }
        }
    }
    if options.wants("devices") && options.devices > 0 {
        let n = options.devices;
        for run in 0..options.runs {
            let data = tempfile::tempdir()?;
            let written = Instant::now();
            let fleet = register(data.path(), n)?;
            let broker = Broker::start(
                Kind::Fleetmq,
                fleetmq,
                n,
                Some(data.path()),
                &options.fleetmq_args,
            )
            .await?;
            println!(
                "[run {}] {n} devices written into the store in {:.1} s",
                run + 1,
                written.elapsed().as_secs_f64()
            );
            let devices =
                connect_devices(&broker, &fleet, options.in_flight, options.protocol).await;
            broker.stop().await;
            let devices = devices?;
            println!("[run {}] {n} idle devices, fleetmq: {devices}", run + 1);
            if devices.failed > 0 {
                report
                    .notes
                    .push(format!("run {}, {n} devices, fleetmq: {devices}", run + 1));
            }
            let n = thousands(n as f64, 0);
            report
                .row(
                    &format!(
                        "fleetmq: RSS per idle connected device (KiB), at {n} devices (goal ≤ 4)"
                    ),
                    1,
                )
                .push(Kind::Fleetmq, devices.kib_each());
            if let Some(cache) = devices.store_cache_kib_each() {
                report
                    .row(
                        "fleetmq: of which the store's page cache of the devices' rows (KiB per device)",
                        1,
                    )
                    .push(Kind::Fleetmq, cache);
                report
                    .row(
                        "fleetmq: RSS per idle connected device without the store's page cache (KiB)",
                        1,
                    )
                    .push(Kind::Fleetmq, devices.kib_each() - cache);
            }
            report
                .row(&format!("fleetmq: {n} devices: connects/s"), 0)
                .push(Kind::Fleetmq, devices.rate());
        }
    }
    Ok(render(options, &report, started.elapsed()).await)
}

/// A broker process of either kind, on a free loopback port.
struct Broker {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    /// fleetmq's HTTP listener (for `/metrics`).
    http: Option<SocketAddr>,
    pid: u32,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts `kind` fresh, with room for `connections` clients; fleetmq on `data` if given
    /// (a store with devices in it), otherwise on a fresh temporary directory, with
    /// `fleetmq_args` after the bench's own flags.
    async fn start(
        kind: Kind,
        fleetmq: &Path,
        connections: usize,
        data: Option<&Path>,
        fleetmq_args: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (child, addr, http) = match kind {
            Kind::Mosquitto => {
                let (child, addr) = Mosquitto::start(
                    dir.path(),
                    "allow_anonymous true\nmax_queued_messages 1000\n",
                )
                .await?
                .into_parts();
                (child, addr, None)
            }
            Kind::Fleetmq => {
                let extra: Vec<String> = [
                    "--mqtt-anonymous-sandbox".to_owned(),
                    "--mqtt-max-connections".to_owned(),
                    // The warm-up's connections may not all be closed yet.
                    (connections + WARM_UP + 100).to_string(),
                    // Every client of the load comes from 127.0.0.1, --in-flight at a time.
                    "--mqtt-max-pending-connections".to_owned(),
                    "512".to_owned(),
                    "--mqtt-max-pending-per-address".to_owned(),
                    "512".to_owned(),
                ]
                .into_iter()
                .chain(fleetmq_args.iter().cloned())
                .collect();
                let data = data.unwrap_or(dir.path());
                let (child, http, mqtt) =
                    start_server_with(fleetmq, data, ADMIN_PASSWORD, &extra).await?;
                (child, mqtt, Some(http))
            }
        };
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} exited at once", kind.name()))?;
        Ok(Self {
            kind,
            child,
            addr,
            http,
            pid,
            _dir: Some(dir),
        })
    }

    /// Bytes fleetmq's store keeps in memory (`fleetmq_store_cache_bytes`); `None` for
    /// Mosquitto.
    async fn store_cache_bytes(&self) -> anyhow::Result<Option<u64>> {
        let Some(http) = self.http else {
            return Ok(None);
        };
        let metrics = reqwest::get(format!("http://{http}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("fleetmq_store_cache_bytes "))
            .map(|v| v.trim().parse().map(Some))
            .ok_or_else(|| anyhow::anyhow!("no fleetmq_store_cache_bytes in /metrics"))?
            .map_err(Into::into)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One throughput scenario's load.
struct Load {
    publishers: usize,
    messages: u64,
    window: u16,
    e2e_window: u64,
    /// The MQTT the clients speak.
    version: wire::Version,
    /// `bench/{i}/x` and a `bench/+/x` subscriber, else `bench/x` for both.
    fan_in: bool,
}

impl Load {
    fn topic(&self, publisher: usize) -> String {
        if self.fan_in {
            format!("bench/{publisher}/x")
        } else {
            "bench/x".to_owned()
        }
    }

    fn filter(&self) -> &'static str {
        if self.fan_in { "bench/+/x" } else { "bench/x" }
    }
}

/// What a throughput run counted.
#[derive(Clone, Debug, Default)]
struct Delivery {
    published: u64,
    acknowledged: u64,
    delivered: u64,
    /// Acknowledged to the publisher, never delivered.
    lost: u64,
    duplicates: u64,
    seconds: f64,
    /// Why a client stopped early, if one did.
    errors: Vec<String>,
}

impl Delivery {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-6)
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} msg/s; published {}, acknowledged {}, delivered {}, lost {}, duplicates {} in {:.2} s",
            thousands(self.rate(), 0),
            self.published,
            self.acknowledged,
            self.delivered,
            self.lost,
            self.duplicates,
            self.seconds
        )?;
        if !self.errors.is_empty() {
            write!(f, "; errors: {}", self.errors.join("; "))?;
        }
        Ok(())
    }
}

/// The payload: publisher index, sequence number, padding to [`PAYLOAD`] bytes.
fn payload(publisher: usize, seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD);
    p.extend_from_slice(&(publisher as u32).to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(PAYLOAD, b'.');
    p
}

fn parse_payload(p: &[u8]) -> Option<(usize, u64)> {
    let publisher = u32::from_be_bytes(p.get(0..4)?.try_into().ok()?) as usize;
    let seq = u64::from_be_bytes(p.get(4..12)?.try_into().ok()?);
    Some((publisher, seq))
}

/// A rumqttc client of either version, as the throughput scenarios use it.
#[derive(Clone)]
enum Client {
    V311(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Its event loop.
enum Events {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the scenarios look at in a client's events.
enum Seen {
    /// CONNACK: accepted or not (the code).
    ConnAck(Result<(), String>),
    /// SUBACK: every filter granted, or the codes.
    SubAck(Result<(), String>),
    /// A message's payload.
    Publish(bytes::Bytes),
    /// A PUBLISH written, with the packet id its PUBACK will name.
    Written(u16),
    PubAck(u16),
    Other,
}

/// A client named `id` of `version` with at most `inflight` QoS 1 messages unacknowledged
/// (for MQTT 5, also within the broker's receive maximum).
fn client(
    id: &str,
    addr: SocketAddr,
    inflight: u16,
    capacity: usize,
    version: wire::Version,
) -> (Client, Events) {
    let (host, port) = (addr.ip().to_string(), addr.port());
    match version {
        wire::Version::V311 => {
            let mut options = MqttOptions::new(id, host, port);
            options.set_keep_alive(Duration::from_secs(60));
            options.set_clean_session(true);
            options.set_inflight(inflight);
            let (client, events) = AsyncClient::new(options, capacity);
            (Client::V311(client), Events::V311(Box::new(events)))
        }
        wire::Version::V5 => {
            let mut options = rumqttc::v5::MqttOptions::new(id, host, port);
            options.set_keep_alive(Duration::from_secs(60));
            options.set_clean_start(true);
            options.set_outgoing_inflight_upper_limit(inflight);
            let (client, events) = rumqttc::v5::AsyncClient::new(options, capacity);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
    }
}

impl Client {
    async fn subscribe(&self, filter: &str) -> anyhow::Result<()> {
        match self {
            Client::V311(c) => c.subscribe(filter, QoS::AtLeastOnce).await?,
            Client::V5(c) => {
                c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                    .await?
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Client::V311(c) => c.publish(topic, QoS::AtLeastOnce, false, payload).await?,
            Client::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                c.publish(topic, qos, false, payload).await?
            }
        }
        Ok(())
    }

    async fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl Events {
    async fn poll(&mut self) -> Result<Seen, String> {
        use rumqttc::v5::Event as E5;
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        Ok(match self {
            Events::V311(events) => match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(ack)) => Seen::ConnAck(
                    (ack.code == rumqttc::ConnectReturnCode::Success)
                        .then_some(())
                        .ok_or_else(|| format!("CONNACK {:?}", ack.code)),
                ),
                Event::Incoming(Packet::SubAck(ack)) => Seen::SubAck(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        .then_some(())
                        .ok_or_else(|| format!("{:?}", ack.return_codes)),
                ),
                Event::Incoming(Packet::Publish(p)) => Seen::Publish(p.payload),
                Event::Incoming(Packet::PubAck(ack)) => Seen::PubAck(ack.pkid),
                Event::Outgoing(Outgoing::Publish(pkid)) => Seen::Written(pkid),
                _ => Seen::Other,
            },
            Events::V5(events) => match events.poll().await.map_err(|e| e.to_string())? {
                E5::Incoming(P5::ConnAck(ack)) => Seen::ConnAck(
                    (ack.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success)
                        .then_some(())
                        .ok_or_else(|| format!("CONNACK {:?}", ack.code)),
                ),
                E5::Incoming(P5::SubAck(ack)) => Seen::SubAck(
                    ack.return_codes
                        .iter()
                        .all(|c| {
                            matches!(
                                c,
                                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                            )
                        })
                        .then_some(())
                        .ok_or_else(|| format!("{:?}", ack.return_codes)),
                ),
                E5::Incoming(P5::Publish(p)) => Seen::Publish(p.payload),
                E5::Incoming(P5::PubAck(ack)) => Seen::PubAck(ack.pkid),
                E5::Outgoing(Outgoing::Publish(pkid)) => Seen::Written(pkid),
                _ => Seen::Other,
            },
        })
    }
}

/// Waits (bounded) for the CONNACK of a fresh client.
async fn connected(events: &mut Events) -> anyhow::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(Seen::ConnAck(accepted))) => return accepted.map_err(anyhow::Error::msg),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("connect: {e}"),
            Err(_) => anyhow::bail!("no CONNACK within {HANDSHAKE_LIMIT:?}"),
        }
    }
}

/// The subscriber's tally: each (publisher, sequence) once.
struct Tally {
    seen: Vec<Vec<bool>>,
    delivered: u64,
    duplicates: u64,
    foreign: u64,
    last: Option<Instant>,
}

async fn throughput(addr: SocketAddr, load: &Load) -> anyhow::Result<Delivery> {
    // The subscriber first, subscribed before anyone publishes.
    let (sub, mut sub_events) = client("bench-sub", addr, 100, 1_000, load.version);
    connected(&mut sub_events).await?;
    sub.subscribe(load.filter()).await?;
    let deadline = Instant::now() + HANDSHAKE_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub_events.poll()).await {
            Ok(Ok(Seen::SubAck(granted))) => {
                if let Err(codes) = granted {
                    anyhow::bail!("subscription refused: {codes}");
                }
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("subscriber: {e}"),
            Err(_) => anyhow::bail!("no SUBACK within {HANDSHAKE_LIMIT:?}"),
        }
    }

    let expected = load.publishers as u64 * load.messages;
    let delivered_by: Arc<Vec<AtomicU64>> =
        Arc::new((0..load.publishers).map(|_| AtomicU64::new(0)).collect());
    let progress = Arc::new(tokio::sync::Notify::new());
    let publishing_done = Arc::new(AtomicBool::new(false));

    // Every publisher connected before any starts.
    let mut clients = Vec::with_capacity(load.publishers);
    for i in 0..load.publishers {
        let (client, mut events) = client(
            &format!("bench-pub-{i}"),
            addr,
            load.window,
            usize::from(load.window) + 16,
            load.version,
        );
        connected(&mut events).await?;
        clients.push((client, events));
    }

    let start = Instant::now();
    let subscriber = {
        let delivered_by = delivered_by.clone();
        let progress = progress.clone();
        let publishing_done = publishing_done.clone();
        let (publishers, messages) = (load.publishers, load.messages);
        tokio::spawn(async move {
            let mut tally = Tally {
                seen: vec![vec![false; messages as usize]; publishers],
                delivered: 0,
                duplicates: 0,
                foreign: 0,
                last: None,
            };
            let mut error = None;
            let mut quiet_since: Option<Instant> = None;
            let hard_stop = start + SCENARIO_LIMIT + QUIET;
            while tally.delivered < expected && Instant::now() < hard_stop {
                match tokio::time::timeout(Duration::from_millis(200), sub_events.poll()).await {
                    Ok(Ok(Seen::Publish(payload))) => {
                        let now = Instant::now();
                        tally.last = Some(now);
                        quiet_since = None;
                        match parse_payload(&payload) {
                            Some((i, seq)) if i < publishers && seq < messages => {
                                let slot = &mut tally.seen[i][seq as usize];
                                if *slot {
                                    tally.duplicates += 1;
                                } else {
                                    *slot = true;
                                    tally.delivered += 1;
                                    delivered_by[i].fetch_add(1, Ordering::Relaxed);
                                    progress.notify_waiters();
                                }
                            }
                            _ => tally.foreign += 1,
                        }
                        continue;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        error = Some(format!("subscriber: {e}"));
                        break;
                    }
                    Err(_) => {}
                }
                if publishing_done.load(Ordering::Acquire) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    let last = tally.last.map_or(since, |l| l.max(since));
                    if last.elapsed() >= QUIET {
                        break;
                    }
                }
            }
            sub.disconnect().await;
            (tally, error)
        })
    };

    let mut tasks = JoinSet::new();
    for (i, (client, events)) in clients.into_iter().enumerate() {
        let topic = load.topic(i);
        let (messages, e2e_window) = (load.messages, load.e2e_window);
        let delivered_by = delivered_by.clone();
        let progress = progress.clone();
        tasks.spawn(publish(
            i,
            client,
            events,
            topic,
            messages,
            e2e_window,
            delivered_by,
            progress,
        ));
    }
    let mut delivery = Delivery::default();
    let mut acked: Vec<Vec<bool>> = vec![Vec::new(); load.publishers];
    while let Some(done) = tasks.join_next().await {
        let (i, published, acked_seqs, error) = done?;
        delivery.published += published;
        delivery.acknowledged += acked_seqs.iter().filter(|a| **a).count() as u64;
        if let Some(e) = error {
            delivery.errors.push(format!("publisher {i}: {e}"));
        }
        acked[i] = acked_seqs;
    }
    publishing_done.store(true, Ordering::Release);
    let (tally, error) = subscriber.await?;
    delivery.errors.extend(error);
    if tally.foreign > 0 {
        delivery
            .errors
            .push(format!("{} payloads not from this run", tally.foreign));
    }
    delivery.delivered = tally.delivered;
    delivery.duplicates = tally.duplicates;
    delivery.seconds = tally
        .last
        .map_or(0.0, |last| last.duration_since(start).as_secs_f64());
    delivery.lost = acked
        .iter()
        .zip(&tally.seen)
        .map(|(acked, seen)| acked.iter().zip(seen).filter(|(a, s)| **a && !**s).count() as u64)
        .sum();
    Ok(delivery)
}

/// One publisher: `messages` QoS 1 messages, rumqttc keeping at most its inflight window
/// unacknowledged (and, with `e2e_window`, at most that many not yet delivered). Returns its
/// index, how many it sent, which were acknowledged, and why it stopped early.
#[allow(clippy::too_many_arguments)]
async fn publish(
    i: usize,
    client: Client,
    mut events: Events,
    topic: String,
    messages: u64,
    e2e_window: u64,
    delivered_by: Arc<Vec<AtomicU64>>,
    progress: Arc<tokio::sync::Notify>,
) -> (usize, u64, Vec<bool>, Option<String>) {
    let stop = Instant::now() + SCENARIO_LIMIT;
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut e2e_window = e2e_window;
            for seq in 0..messages {
                while e2e_window > 0
                    && seq.saturating_sub(delivered_by[i].load(Ordering::Relaxed)) >= e2e_window
                {
                    let notified = progress.notified();
                    if seq.saturating_sub(delivered_by[i].load(Ordering::Relaxed)) < e2e_window {
                        break;
                    }
                    // Nothing delivered for QUIET: what is missing is lost, and would stall
                    // this publisher for ever; it stops holding back.
                    if tokio::time::timeout(QUIET, notified).await.is_err() {
                        e2e_window = 0;
                        break;
                    }
                }
                if client.publish(&topic, payload(i, seq)).await.is_err() {
                    break;
                }
            }
        })
    };
    // rumqttc reports each PUBLISH as it writes it, in the order they were asked for, with
    // the packet id its PUBACK will name.
    let mut acked = vec![false; messages as usize];
    let mut written = 0u64;
    let mut acknowledged = 0u64;
    let mut pending: HashMap<u16, u64> = HashMap::new();
    let mut error = None;
    while acknowledged < messages {
        let left = stop.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(Seen::Written(pkid))) => {
                pending.insert(pkid, written);
                written += 1;
            }
            Ok(Ok(Seen::PubAck(pkid))) => {
                if let Some(seq) = pending.remove(&pkid)
                    && let Some(slot) = acked.get_mut(seq as usize)
                    && !*slot
                {
                    *slot = true;
                    acknowledged += 1;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Err(_) => {
                error = Some(format!(
                    "{acknowledged} of {messages} acknowledged after {SCENARIO_LIMIT:?}"
                ));
                break;
            }
        }
    }
    sender.abort();
    client.disconnect().await;
    // Let the DISCONNECT out (bounded).
    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    (i, written, acked, error)
}

/// What a connect phase measured.
struct Connections {
    count: usize,
    failed: usize,
    seconds: f64,
    rss_before: u64,
    rss_after: u64,
    /// KiB fleetmq's store kept in memory before and after (its page cache, bounded by
    /// `--store-cache-mib`): part of the RSS, reported apart.
    store_cache: Option<(u64, u64)>,
    /// CPU time the broker process used from the first connect to the last answer, in
    /// clock ticks (1/100 s).
    cpu_ticks: u64,
    /// Each handshake's time, sorted.
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

impl Connections {
    fn rate(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-6)
    }

    fn kib_each(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.count.max(1) as f64
    }

    /// The `q` quantile of the handshakes' times, in milliseconds.
    fn latency_ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return 0.0;
        };
        let at = ((self.latencies.len() as f64 * q) as usize).min(last);
        self.latencies[at].as_secs_f64() * 1000.0
    }

    /// Broker CPU time per connection, in microseconds (user and system; ±10 ms in all).
    fn cpu_us_each(&self) -> f64 {
        self.cpu_ticks as f64 * 10_000.0 / self.count.max(1) as f64
    }

    /// Of [`kib_each`](Self::kib_each), what the store's page cache grew by per connection.
    fn store_cache_kib_each(&self) -> Option<f64> {
        self.store_cache
            .map(|(before, after)| after.saturating_sub(before) as f64 / self.count.max(1) as f64)
    }
}

impl std::fmt::Display for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connected in {:.2} s ({} /s, broker CPU {:.0} µs each; handshake p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms), {} failed; RSS {} → {} KiB ({:.1} KiB each)",
            self.count,
            self.seconds,
            thousands(self.rate(), 0),
            self.cpu_us_each(),
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.latency_ms(1.0),
            self.failed,
            self.rss_before,
            self.rss_after,
            self.kib_each()
        )?;
        if let Some(cache) = self.store_cache_kib_each() {
            write!(f, ", of which the store's page cache {cache:.1} KiB each")?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "; first error: {e}")?;
        }
        Ok(())
    }
}

/// RSS of `pid` once two readings 200 ms apart differ by at most 64 KiB (at most 5 s).
async fn settled_rss(pid: u32) -> u64 {
    settled(|| rss_kib(pid), Duration::from_millis(200), 64, 25).await
}

/// The CPU ticks of `pid` once two readings 50 ms apart are equal (at most 2 s).
async fn quiet_cpu(pid: u32) -> u64 {
    settled(|| cpu_ticks(pid), Duration::from_millis(50), 0, 40).await
}

/// `read()` once two readings `every` apart differ by at most `within`, or the last of
/// `tries` readings.
async fn settled(read: impl Fn() -> u64, every: Duration, within: u64, tries: usize) -> u64 {
    let mut last = read();
    for _ in 0..tries {
        tokio::time::sleep(every).await;
        let now = read();
        if now.abs_diff(last) <= within {
            return now;
        }
        last = now;
    }
    last
}

/// How a handshake goes on after a packet from the broker.
enum Step {
    /// Wait for more.
    More,
    /// The connection is set up.
    Done,
    /// The broker refused something.
    Refused(String),
}

/// Opens `n` raw MQTT connections, `in_flight` handshakes at a time; each writes what
/// `hello(i)` builds (a CONNECT and whatever follows it) and reads until `until` says the
/// connection is set up. Keeps the sockets open until the broker's RSS is read.
///
/// First, `warm_up` connections (`hello(n)`, `hello(n + 1)`, …) are opened the same way and
/// closed, uncounted and untimed: a fresh process's first connects pay for touching their
/// code and growing their allocator once (fleetmq's first connect took ~10 ms more than
/// Mosquitto's). RSS "before" is read ahead of them, so what they leave behind is counted.
async fn connect_many<F, G>(
    broker: &Broker,
    n: usize,
    warm_up: usize,
    in_flight: usize,
    version: wire::Version,
    hello: F,
    until: G,
) -> anyhow::Result<Connections>
where
    F: Fn(usize) -> BytesMut + Send + Sync + 'static,
    G: FnMut(&Incoming) -> Step + Send + Sync + Copy + 'static,
{
    let rss_before = settled_rss(broker.pid).await;
    let cache_before = broker.store_cache_bytes().await?;
    let hello = Arc::new(hello);
    let warm = handshakes(broker, n..n + warm_up, in_flight, version, &hello, until).await?;
    anyhow::ensure!(
        warm.failed == 0,
        "warm-up: {} of {warm_up} refused: {:?}",
        warm.failed,
        warm.first_error
    );
    drop(warm);
    // Let the broker finish closing them before the clock starts.
    let cpu_before = quiet_cpu(broker.pid).await;
    let start = Instant::now();
    let Opened {
        open,
        latencies,
        failed,
        first_error,
    } = handshakes(broker, 0..n, in_flight, version, &hello, until).await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_ticks(broker.pid).saturating_sub(cpu_before);
    let rss_after = settled_rss(broker.pid).await;
    let cache_after = broker.store_cache_bytes().await?;
    let result = Connections {
        count: open.len(),
        failed,
        seconds,
        rss_before,
        rss_after,
        store_cache: cache_before
            .zip(cache_after)
            .map(|(b, a)| (b / 1024, a / 1024)),
        cpu_ticks: cpu,
        latencies,
        first_error,
    };
    drop(open);
    Ok(result)
}

/// What [`handshakes`] opened.
struct Opened {
    open: Vec<TcpStream>,
    /// From `connect()` to the broker's last answer, each handshake that succeeded, sorted.
    latencies: Vec<Duration>,
    failed: usize,
    first_error: Option<String>,
}

/// One handshake per index in `range`, `in_flight` at a time, within [`SCENARIO_LIMIT`].
async fn handshakes<F, G>(
    broker: &Broker,
    range: std::ops::Range<usize>,
    in_flight: usize,
    version: wire::Version,
    hello: &Arc<F>,
    until: G,
) -> anyhow::Result<Opened>
where
    F: Fn(usize) -> BytesMut + Send + Sync + 'static,
    G: FnMut(&Incoming) -> Step + Send + Sync + Copy + 'static,
{
    let n = range.len();
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let mut open = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    let mut tasks = JoinSet::new();
    let mut indices = range;
    let mut next = indices.next();
    while next.is_some() || !tasks.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {n} connected after {SCENARIO_LIMIT:?}",
            open.len()
        );
        if let Some(i) = next.filter(|_| tasks.len() < in_flight) {
            let (addr, hello) = (broker.addr, Arc::clone(hello));
            tasks.spawn(async move {
                let began = Instant::now();
                let stream = tokio::time::timeout(
                    HANDSHAKE_LIMIT,
                    handshake(addr, version, hello(i), until),
                )
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {HANDSHAKE_LIMIT:?}"))??;
                Ok::<_, anyhow::Error>((stream, began.elapsed()))
            });
            next = indices.next();
            continue;
        }
        match tasks.join_next().await {
            Some(Ok(Ok((stream, took)))) => {
                open.push(stream);
                latencies.push(took);
            }
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Some(Err(e)) => anyhow::bail!("a handshake task failed: {e}"),
            None => {}
        }
    }
    latencies.sort();
    Ok(Opened {
        open,
        latencies,
        failed,
        first_error,
    })
}

/// Sends `hello` (a CONNECT and whatever follows it) and reads until CONNACK 0 and then
/// until `until` says [`Step::Done`].
async fn handshake(
    addr: SocketAddr,
    version: wire::Version,
    hello: BytesMut,
    mut until: impl FnMut(&Incoming) -> Step,
) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&hello).await?;
    let mut buf = BytesMut::with_capacity(256);
    let mut accepted = false;
    loop {
        while let Some(packet) = wire::decode(&mut buf, 64 * 1024, version)? {
            if let Incoming::ConnAck { code, .. } = packet {
                anyhow::ensure!(code == 0, "CONNACK {code:#04x}");
                accepted = true;
            }
            match until(&packet) {
                Step::More => {}
                Step::Done => return Ok(stream),
                Step::Refused(why) => anyhow::bail!(why),
            }
        }
        anyhow::ensure!(
            stream.read_buf(&mut buf).await? > 0,
            "closed by the broker{}",
            if accepted {
                " after CONNACK"
            } else {
                " before CONNACK"
            }
        );
    }
}

/// Connections each broker accepts and closes before an idle-connections phase is timed.
const WARM_UP: usize = 200;

/// `n` idle anonymous connections: CONNECT (keep-alive 600 s) and CONNACK.
async fn connect_idle(
    broker: &Broker,
    n: usize,
    in_flight: usize,
    version: wire::Version,
) -> anyhow::Result<Connections> {
    let kind = broker.kind.name();
    let run = std::process::id();
    connect_many(
        broker,
        n,
        WARM_UP,
        in_flight,
        version,
        move |i| {
            let mut buf = BytesMut::with_capacity(64);
            let id = format!("idle-{run}-{i}");
            wire::encode_connect(
                &Connect {
                    client_id: &id,
                    login: None,
                    keep_alive: 600,
                    clean_session: true,
                    will: None,
                    version,
                },
                &mut buf,
            );
            buf
        },
        |packet| match packet {
            Incoming::ConnAck { .. } => Step::Done,
            _ => Step::More,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{kind}, idle connections: {e}"))
}

/// Writes `n` devices into a fresh store at `data` (organization `bench`); their ids and keys.
fn register(data: &Path, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let store = Store::open(data)?;
    let db = store.blocking();
    let org = bench_organization(db)?;
    Ok(register_devices(db, org.id, "dev", 7, n)?
        .into_iter()
        .map(|d| (d.id.to_string(), d.fields.key.as_str().to_owned()))
        .collect())
}

/// Connects `fleet` as devices do: CONNECT with id, key and a retained offline will, then the
/// retained online presence (QoS 1, packet id 1) and SUBSCRIBE to `down/#` (packet id 2) in
/// the same write; a device is connected once both its PUBACK and its SUBACK arrived.
async fn connect_devices(
    broker: &Broker,
    fleet: &[(String, String)],
    in_flight: usize,
    version: wire::Version,
) -> anyhow::Result<Connections> {
    let fleet: Arc<Vec<(String, String)>> = Arc::new(fleet.to_vec());
    let n = fleet.len();
    // No warm-up: only the fleet's own devices may log in (fleetmq alone runs this scenario).
    let result = connect_many(
        broker,
        n,
        0,
        in_flight,
        version,
        move |i| {
            let (id, key) = &fleet[i];
            let presence = format!("fleetmq/v1/bench/{id}/up/presence");
            let mut buf = BytesMut::with_capacity(512);
            wire::encode_connect(
                &Connect {
                    client_id: id,
                    login: Some((id, key.as_bytes())),
                    keep_alive: 600,
                    clean_session: true,
                    will: Some(Will {
                        topic: &presence,
                        payload: br#"{"status":"offline"}"#,
                        qos: wire::QoS::AtLeastOnce,
                        retain: true,
                    }),
                    version,
                },
                &mut buf,
            );
            wire::encode_publish(
                version,
                &presence,
                br#"{"status":"online"}"#,
                wire::QoS::AtLeastOnce,
                true,
                1,
                None,
                &mut buf,
            );
            wire::encode_subscribe(
                version,
                2,
                &format!("fleetmq/v1/bench/{id}/down/#"),
                wire::QoS::AtLeastOnce,
                &mut buf,
            );
            buf
        },
        {
            let (mut presence_acked, mut subscribed) = (false, false);
            move |packet: &Incoming| {
                match packet {
                    Incoming::PubAck(1) => presence_acked = true,
                    Incoming::SubAck { pkid: 2, codes } => match codes.first() {
                        Some(code) if *code < 0x80 => subscribed = true,
                        _ => return Step::Refused(format!("SUBACK {codes:?}")),
                    },
                    _ => {}
                }
                if presence_acked && subscribed {
                    Step::Done
                } else {
                    Step::More
                }
            }
        },
    )
    .await?;
    anyhow::ensure!(result.count > 0, "no device connected: {result}");
    Ok(result)
}

/// `12,345.6`.
fn thousands(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::new();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// `median (run 1 · run 2 · run 3)`, or `—`.
fn cell(values: &[f64], decimals: usize) -> String {
    match median(values) {
        None => "—".to_owned(),
        Some(m) if values.len() == 1 => thousands(m, decimals),
        Some(m) => format!(
            "{} ({})",
            thousands(m, decimals),
            values
                .iter()
                .map(|v| thousands(*v, decimals))
                .collect::<Vec<_>>()
                .join(" · ")
        ),
    }
}

async fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output().await {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            text
        }
        Err(_) => String::new(),
    }
}

/// The machine and versions the figures come from.
async fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB RAM", kib as f64 / 1_048_576.0)
        });
    let mosquitto = command_line(MOSQUITTO, &["-h"])
        .await
        .lines()
        .find(|l| l.contains("version"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| "mosquitto (version unknown)".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let commit = command_line("git", &["-C", root, "rev-parse", "--short", "HEAD"]).await;
    let dirty = !command_line("git", &["-C", root, "status", "--porcelain"])
        .await
        .trim()
        .is_empty();
    let commit = match commit.trim() {
        "" => "unknown".to_owned(),
        c if dirty => format!("{c} (with uncommitted changes)"),
        c => c.to_owned(),
    };
    format!(
        "Machine: {cpus} CPUs (`nproc`), {model}{memory}, kernel {kernel}; {mosquitto}; fleetmq {commit} (release build)."
    )
}

async fn render(options: &Options, report: &Report, took: Duration) -> String {
    let mut out = String::new();
    out.push_str(&machine().await);
    out.push('\n');
    if !options.fleetmq_args.is_empty() {
        out.push_str(&format!(
            "\nfleetmq ran with `{}` beside the bench's own flags.\n",
            options.fleetmq_args.join(" ")
        ));
    }
    out.push_str(match options.protocol {
        wire::Version::V311 => "\nEvery load client speaks MQTT 3.1.1.\n",
        wire::Version::V5 => "\nEvery load client speaks MQTT 5 (`--protocol 5`).\n",
    });
    out.push_str(&format!(
        "\nRuns: {} per cell, alternating Mosquitto and fleetmq; cells show the median (every run in brackets). \
         Throughput: QoS 1, {PAYLOAD}-byte payloads, {} messages per publisher, window {} unacknowledged per publisher{}. \
         Ratio = fleetmq ÷ Mosquitto. Whole bench: {:.0} s.\n\n",
        options.runs,
        thousands(options.messages as f64, 0),
        options.window,
        if options.e2e_window > 0 {
            format!(", at most {} per publisher not yet delivered", options.e2e_window)
        } else {
            String::new()
        },
        took.as_secs_f64()
    ));
    out.push_str("| scenario | Mosquitto | fleetmq | ratio |\n|---|---|---|---|\n");
    for (name, cells, decimals) in &report.rows {
        let ratio = match (median(&cells.mosquitto), median(&cells.fleetmq)) {
            (Some(m), Some(f)) if m > 0.0 => format!("{:.2}", f / m),
            _ => "—".to_owned(),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {ratio} |\n",
            cell(&cells.mosquitto, *decimals),
            cell(&cells.fleetmq, *decimals)
        ));
    }
    if !report.notes.is_empty() {
        out.push_str("\nFailed handshakes (rates and RSS count only the connections made):\n\n");
        for note in &report.notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    if !report.delivery.is_empty() {
        out.push_str(
            "\nDelivery, every run: acknowledged to publishers (PUBACK) / delivered to the subscriber \
             (distinct) / lost (acknowledged, never delivered) / duplicates, of published.\n\n\
             | scenario | Mosquitto | fleetmq |\n|---|---|---|\n",
        );
        for (scenario, runs) in &report.delivery {
            let of = |kind: Kind| {
                let cells: Vec<String> = runs
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, d)| {
                        let mut c = format!(
                            "{} / {} / **{}** / {} of {}",
                            thousands(d.acknowledged as f64, 0),
                            thousands(d.delivered as f64, 0),
                            thousands(d.lost as f64, 0),
                            thousands(d.duplicates as f64, 0),
                            thousands(d.published as f64, 0)
                        );
                        if !d.errors.is_empty() {
                            c.push_str(&format!(" ({})", d.errors.join("; ")));
                        }
                        c
                    })
                    .collect();
                if cells.is_empty() {
                    "—".to_owned()
                } else {
                    cells.join("<br>")
                }
            };
            out.push_str(&format!(
                "| {scenario} | {} | {} |\n",
                of(Kind::Mosquitto),
                of(Kind::Fleetmq)
            ));
        }
    }
    out
}
