//! MQTT telemetry ingest benchmark: devices publish QoS 1 telemetry as fast as the broker
//! acknowledges it. Prints msg/s and latency percentiles.
//!
//! - `--broker embedded` (default): fleetmq's own broker sends a device's PUBACK only after
//!   the sample is committed, so publish→PUBACK is publish→durable.
//! - `--broker mosquitto` / `--broker rabbitmq`: fleetmq in external mode (its bridge a client
//!   of a Mosquitto or RabbitMQ started here, from Debian's packages), the broker admitting
//!   devices with fleetmq's generated files (Mosquitto) or by asking fleetmq's auth service
//!   (RabbitMQ). The broker acknowledges before fleetmq stores, so the bench reports both
//!   what the broker acknowledged and what fleetmq stored in the same window
//!   (`fleetmq_external_uplink_stored_total`), and the time to connect the devices.
//!
//! The server runs in this process on its own runtime; the devices (rumqttc) run on another
//! runtime in their own OS thread — both share the machine's two cores, as a co-located load
//! generator would.
//!
//! `--store postgres --nodes N` adds N − 1 standby nodes on the same database;
//! `--shared-uplink` (with `--broker mosquitto`) has every node store its share of the
//! telemetry through a shared subscription.
//!
//! `cargo bench -p fleetmq-tests --bench ingest -- [--devices N] [--seconds S] [--inflight K]
//! [--broker embedded|mosquitto|rabbitmq] [--store redb|postgres] [--nodes N] [--shared-uplink]`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::path::Path;

use fleetmq::{Config, Server};
use fleetmq_api::routes::broker_auth::BrokerAuthConfig;
use fleetmq_bridge::external::ExternalBroker;
use fleetmq_bridge::mosquitto_files::MosquittoFiles;
use fleetmq_store::{OrganizationFields, Slug, Store};
use fleetmq_tests::fixtures::register_devices;
use fleetmq_tests::mosquitto::{Mosquitto, write_password_file};
use fleetmq_tests::rabbitmq::{RabbitMq, free_port};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let devices = arg("--devices", 200) as usize;
    let seconds = arg("--seconds", 10);
    let inflight = arg("--inflight", 50) as u16;
    let dir = tempfile::tempdir()?;
    let store = fleetmq_tests::BenchStore::start(&text_arg("--store", "redb"))?;

    // Register the fleet straight into the store.
    let fleet: Vec<(String, String)> = {
        let store = Store::open_with(dir.path(), &store.options)?;
        let db = store.blocking();
        let org = db.create_organization(OrganizationFields {
            name: "Ingest".into(),
            slug: Slug::parse("ingest").map_err(anyhow::Error::msg)?,
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        })?;
        register_devices(db, org.id, "ingest", 1, devices)?
            .into_iter()
            .map(|d| (d.id.to_string(), d.fields.key.as_str().to_owned()))
            .collect()
    };

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        store: store.options.clone(),
        ..Config::default()
    };
    // Every device of the load connects from 127.0.0.1.
    config.mqtt_limits.max_pending_connections = 4096;
    config.mqtt_limits.max_pending_per_address = 4096;
    let broker = text_arg("--broker", "embedded");
    let shared_uplink = std::env::args().any(|a| a == "--shared-uplink");
    let external = server_rt.block_on(External::prepare(&broker, &mut config, dir.path()))?;
    if let Some(external) = &mut config.external_broker {
        external.shared_uplink = shared_uplink;
    }
    anyhow::ensure!(
        !shared_uplink || broker == "mosquitto",
        "--shared-uplink needs --broker mosquitto"
    );
    let template = config.external_broker.clone();
    let server = server_rt.block_on(Server::start(config))?;
    let http = server.http_addr();
    let external = server_rt.block_on(external.start(http))?;
    let mqtt = external.mqtt_addr().unwrap_or(server.mqtt_addr());
    // `--nodes N`: N − 1 standby nodes on the same PostgreSQL store follow every commit (and
    // with `--shared-uplink` store their share of the telemetry).
    let nodes = arg("--nodes", 1).max(1) as usize;
    let template = template.unwrap_or_else(|| ExternalBroker::new(format!("mqtt://{mqtt}")));
    let standbys = server_rt.block_on(store.standbys(nodes - 1, dir.path(), template))?;
    println!(
        "{devices} devices, QoS 1, up to {inflight} unacknowledged messages each, {seconds} s after 2 s warm-up; broker: {}{}; store: {}; nodes: {nodes}",
        external.describe(),
        if shared_uplink {
            ", telemetry shared between the nodes"
        } else {
            ""
        },
        store.label
    );
    let nodes_http: Vec<SocketAddr> = std::iter::once(http)
        .chain(standbys.iter().map(Server::http_addr))
        .collect();
    let stored_at = move || stored(nodes_http.clone());
    let connecting = Instant::now();
    let (connected_tx, connected_rx) = std::sync::mpsc::channel::<()>();
    let load = std::thread::spawn(move || -> anyhow::Result<(u64, Histogram<u64>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut tasks = Vec::new();
            let all_connected = std::sync::Arc::new(tokio::sync::Barrier::new(fleet.len() + 1));
            for (id, key) in fleet {
                let all_connected = std::sync::Arc::clone(&all_connected);
                tasks.push(tokio::spawn(async move {
                    let mut options = MqttOptions::new(&id, mqtt.ip().to_string(), mqtt.port());
                    options.set_credentials(&id, &key);
                    options.set_inflight(inflight);
                    options.set_keep_alive(Duration::from_secs(60));
                    let (client, mut events) = AsyncClient::new(options, inflight as usize * 2);
                    let topic = format!("fleetmq/v1/ingest/{id}/up/telemetry");
                    // Connected (retrying while an external broker does not know it yet).
                    let mut refused = 0;
                    loop {
                        match events.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                            Ok(_) => {}
                            Err(e) => {
                                refused += 1;
                                anyhow::ensure!(refused < 100, "{id} never connected: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    all_connected.wait().await;
                    // Measured from 2 s after every device is connected, as the main thread.
                    let start = Instant::now() + Duration::from_secs(2);
                    let stop = start + Duration::from_secs(seconds);
                    let publisher = {
                        let client = client.clone();
                        tokio::spawn(async move {
                            let mut n = 0u64;
                            while Instant::now() < stop {
                                n += 1;
                                let stamp = fleetmq_store::Timestamp::now();
                                let payload = format!(
                                    r#"{{"timestamp":"{stamp}","metrics":{{"n":{n},"cpu":0.42,"rx_bytes":123456789}}}}"#
                                );
                                if client.publish(&topic, QoS::AtLeastOnce, false, payload.into_bytes()).await.is_err() {
                                    break;
                                }
                            }
                        })
                    };
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
                    let mut acked = 0u64;
                    loop {
                        let now = Instant::now();
                        if now >= stop + Duration::from_secs(2) {
                            break;
                        }
                        let event = match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                            Ok(Ok(event)) => event,
                            _ => break,
                        };
                        match event {
                            Event::Outgoing(Outgoing::Publish(pkid)) => {
                                sent_at.insert(pkid, Instant::now());
                            }
                            Event::Incoming(Packet::PubAck(ack)) => {
                                if let Some(sent) = sent_at.remove(&ack.pkid)
                                    && sent >= start
                                    && sent < stop
                                {
                                    hist.record(sent.elapsed().as_micros().max(1) as u64)?;
                                    acked += 1;
                                }
                            }
                            _ => {}
                        }
                        if now >= stop && sent_at.is_empty() {
                            break;
                        }
                    }
                    publisher.abort();
                    anyhow::Ok((acked, hist))
                }));
            }
            all_connected.wait().await;
            let _ = connected_tx.send(());
            let mut total = 0u64;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for task in tasks {
                let (acked, h) = task.await??;
                total += acked;
                hist.add(h)?;
            }
            anyhow::Ok((total, hist))
        })
    });
    // The window opens 2 s after every device is connected.
    connected_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the load ended before every device connected"))?;
    let connect_seconds = connecting.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let stored_before = server_rt.block_on(stored_at())?;
    std::thread::sleep(Duration::from_secs(seconds));
    let stored_after = server_rt.block_on(stored_at())?;
    let (acked, hist) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let latency = format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
    println!("connected {devices} devices in {connect_seconds:.1} s");
    match (stored_before, stored_after) {
        (Some(before), Some(after)) => {
            println!(
                "acknowledged by the broker {acked} messages in {seconds} s: {:.0} msg/s; publish→PUBACK {latency}",
                acked as f64 / seconds as f64
            );
            println!(
                "stored by fleetmq in the same {seconds} s: {} messages, {:.0} msg/s",
                after.saturating_sub(before),
                after.saturating_sub(before) as f64 / seconds as f64
            );
        }
        _ => println!(
            "acknowledged (= committed) {acked} messages in {seconds} s: {:.0} msg/s; publish→durable {latency}",
            acked as f64 / seconds as f64
        ),
    }
    for standby in standbys {
        server_rt.block_on(standby.shutdown());
    }
    server_rt.block_on(server.shutdown());
    drop(external);
    Ok(())
}

fn text_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .unwrap_or_else(|| default.to_owned())
}

/// Device messages fleetmq stored through an external broker, over every node's `/metrics`
/// (`fleetmq_external_uplink_stored_total` and `fleetmq_shared_uplink_stored_total`);
/// `None` on the embedded broker.
async fn stored(nodes: Vec<SocketAddr>) -> anyhow::Result<Option<u64>> {
    let mut total = None;
    for http in nodes {
        let metrics = reqwest::get(format!("http://{http}/metrics"))
            .await?
            .text()
            .await?;
        for line in metrics.lines() {
            let value = line
                .strip_prefix("fleetmq_external_uplink_stored_total ")
                .or_else(|| line.strip_prefix("fleetmq_shared_uplink_stored_total "));
            if let Some(value) = value.and_then(|v| v.trim().parse::<u64>().ok()) {
                total = Some(total.unwrap_or(0) + value);
            }
        }
    }
    Ok(total)
}

const BRIDGE: (&str, &str) = ("fleetmq-bridge", "bench-bridge-password");
const SECRET: &str = "bench-broker-auth-secret";

/// The broker the devices use, when it is not fleetmq's own.
enum External {
    Embedded,
    Mosquitto(Box<Mosquitto>),
    RabbitMq(Box<RabbitMq>),
    /// Configured, not yet started.
    Pending {
        kind: String,
        port: u16,
        dir: std::path::PathBuf,
    },
}

impl External {
    /// Sets fleetmq up for `kind`; Mosquitto starts now (fleetmq keeps its files), RabbitMQ
    /// once fleetmq serves (it asks fleetmq).
    async fn prepare(kind: &str, config: &mut Config, data: &Path) -> anyhow::Result<External> {
        let bridge = (BRIDGE.0.to_owned(), BRIDGE.1.to_owned());
        match kind {
            "embedded" => Ok(External::Embedded),
            "mosquitto" => {
                let dir = data.join("mosquitto");
                std::fs::create_dir_all(&dir)?;
                let (passwd, acl, pid) = (dir.join("passwd"), dir.join("acl"), dir.join("pid"));
                write_password_file(&passwd, &[BRIDGE]).await?;
                std::fs::write(
                    &acl,
                    format!("user {}\ntopic readwrite fleetmq/#\n", BRIDGE.0),
                )?;
                let mosquitto = Mosquitto::start(
                    &dir,
                    &format!(
                        "allow_anonymous false\npassword_file {}\nacl_file {}\npid_file {}\nmax_queued_messages 100000\nmax_inflight_messages 256\n",
                        passwd.display(),
                        acl.display(),
                        pid.display()
                    ),
                )
                .await?;
                config.external_broker = Some(ExternalBroker {
                    credentials: Some(bridge.clone()),
                    ..ExternalBroker::new(format!("mqtt://{}", mosquitto.addr))
                });
                config.mosquitto_files = Some(MosquittoFiles {
                    dir,
                    pid_file: Some(pid),
                    bridge: Some(bridge),
                });
                Ok(External::Mosquitto(Box::new(mosquitto)))
            }
            "rabbitmq" => {
                let port = free_port()?;
                config.external_broker = Some(ExternalBroker {
                    credentials: Some(bridge.clone()),
                    ..ExternalBroker::new(format!("mqtt://127.0.0.1:{port}"))
                });
                config.api.broker_auth = Some(BrokerAuthConfig {
                    bridge: Some(bridge),
                    // The bench asks for every publish: do not let the bound decide.
                    requests_per_second: 1_000_000,
                    ..BrokerAuthConfig::new(SECRET.to_owned())
                });
                Ok(External::Pending {
                    kind: kind.to_owned(),
                    port,
                    dir: data.to_owned(),
                })
            }
            other => anyhow::bail!("--broker {other}: embedded, mosquitto or rabbitmq"),
        }
    }

    /// Starts what must wait for fleetmq, then waits until fleetmq's bridge is subscribed.
    async fn start(self, http: SocketAddr) -> anyhow::Result<External> {
        let started = match self {
            External::Pending { port, .. } => {
                let auth = format!("http://rabbitmq:{SECRET}@{http}/broker-auth/rabbitmq");
                External::RabbitMq(Box::new(RabbitMq::start(port, &auth, None).await?))
            }
            other => other,
        };
        if !matches!(started, External::Embedded) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let health: serde_json::Value = reqwest::get(format!("http://{http}/healthz"))
                    .await?
                    .json()
                    .await?;
                if health["broker"] == "ok" {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "the bridge never subscribed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(started)
    }

    fn mqtt_addr(&self) -> Option<SocketAddr> {
        match self {
            External::Mosquitto(m) => Some(m.addr),
            External::RabbitMq(r) => Some(r.mqtt_addr),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            External::Embedded => "fleetmq's own (PUBACK after the sample is stored)".into(),
            External::Mosquitto(_) => {
                "Mosquitto, fleetmq external (files kept by fleetmq; PUBACK from Mosquitto)".into()
            }
            External::RabbitMq(_) => {
                "RabbitMQ 3.10, fleetmq external (auth service; PUBACK from RabbitMQ)".into()
            }
            External::Pending { kind, dir, .. } => {
                format!("{kind} (not started, {})", dir.display())
            }
        }
    }
}
