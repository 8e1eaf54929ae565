//! MQTT telemetry ingest benchmark: devices publish QoS 1 telemetry as fast as the server
//! acknowledges it; since a device's PUBACK is sent only after the sample is committed,
//! publish→PUBACK is publish→durable. Prints msg/s and latency percentiles.
//!
//! The server runs in this process on its own runtime; the devices (rumqttc) run on another
//! runtime in their own OS thread — both share the machine's two cores, as a co-located load
//! generator would.
//!
//! `cargo bench -p fleetmq-tests --bench ingest -- [--devices N] [--seconds S] [--inflight K]`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetmq::{Config, Server};
use fleetmq_store::{OrganizationFields, Slug, Store};
use fleetmq_tests::fixtures::register_devices;
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

    // Register the fleet straight into the store.
    let fleet: Vec<(String, String)> = {
        let store = Store::open(dir.path())?;
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
        ..Config::default()
    };
    // Every device of the load connects from 127.0.0.1.
    config.mqtt_limits.max_pending_connections = 4096;
    config.mqtt_limits.max_pending_per_address = 4096;
    let server = server_rt.block_on(Server::start(config))?;
    let mqtt = server.mqtt_addr();
    println!(
        "{devices} devices, QoS 1, up to {inflight} unacknowledged messages each, {seconds} s after 2 s warm-up"
    );

    let load = std::thread::spawn(move || -> anyhow::Result<(u64, Histogram<u64>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = Instant::now() + Duration::from_secs(2);
            let stop = start + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for (id, key) in fleet {
                tasks.push(tokio::spawn(async move {
                    let mut options = MqttOptions::new(&id, mqtt.ip().to_string(), mqtt.port());
                    options.set_credentials(&id, &key);
                    options.set_inflight(inflight);
                    options.set_keep_alive(Duration::from_secs(60));
                    let (client, mut events) = AsyncClient::new(options, inflight as usize * 2);
                    let topic = format!("fleetmq/v1/ingest/{id}/up/telemetry");
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
    let (acked, hist) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    println!(
        "acknowledged (= committed) {acked} messages in {seconds} s: {:.0} msg/s; publish→durable p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        acked as f64 / seconds as f64,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
    server_rt.block_on(server.shutdown());
    Ok(())
}
