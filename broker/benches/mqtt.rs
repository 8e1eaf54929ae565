//! MQTT front-end benchmark: QoS 1 throughput (one device publisher -> one operator
//! subscriber, loopback) and resident memory per idle connection. Not a test: the numbers go
//! to docs/mqtt.md.
//!
//! `cargo bench -p fleetmq-broker --bench mqtt -- [--messages N] [--payload BYTES] [--idle C]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmq_broker::{AuthFuture, Authenticator, Broker, BrokerConfig, Login, Refusal};
use fleetmq_protocol::topic::{Topic, UpChannel};
use fleetmq_protocol::{OrgScope, Principal};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct BenchAuth;

impl Authenticator for BenchAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            match login.username.as_deref() {
                Some("sub") => Ok(Principal::Operator {
                    orgs: OrgScope::All,
                }),
                _ => Ok(Principal::Device {
                    org_slug: "bench".into(),
                    device_id: login
                        .client_id
                        .parse()
                        .map_err(|_| Refusal::IdentifierRejected)?,
                }),
            }
        })
    }
}

fn arg(name: &str, default: usize) -> usize {
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

async fn client(
    addr: std::net::SocketAddr,
    id: &str,
    user: &str,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, "x");
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.expect("connect") {
            return (client, eventloop);
        }
    }
}

async fn throughput(addr: std::net::SocketAddr, messages: usize, payload: usize) {
    let (sub, mut sub_loop) = client(addr, "op", "sub").await;
    sub.subscribe("fleetmq/v1/+/+/up/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }
    let (publisher, mut pub_loop) = client(
        addr,
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000001",
    )
    .await;
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let topic = Topic::up(
        "bench",
        "00000000-0000-4000-8000-000000000001",
        UpChannel::Telemetry,
    )
    .to_string();
    let body = vec![b'x'; payload];
    let start = Instant::now();
    tokio::spawn(async move {
        for _ in 0..messages {
            publisher
                .publish(&topic, QoS::AtLeastOnce, false, body.clone())
                .await
                .unwrap();
        }
    });
    let mut received = 0;
    while received < messages {
        if let Event::Incoming(Packet::Publish(_)) = sub_loop.poll().await.unwrap() {
            received += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "qos1 throughput: {messages} x {payload} B in {:.2?} = {:.0} msg/s",
        elapsed,
        messages as f64 / elapsed.as_secs_f64()
    );
}

async fn idle_memory(addr: std::net::SocketAddr, count: usize) {
    let before = rss_kib();
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("idle-{i}");
        let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&packet).await.unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        streams.push(stream);
    }
    let after = rss_kib();
    println!(
        "idle connections: {count}, RSS +{} KiB = {:.1} KiB per connection (broker side, clients are raw sockets)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / count as f64
    );
    drop(streams);
}

fn main() {
    let messages = arg("--messages", 100_000);
    let payload = arg("--payload", 100);
    let idle = arg("--idle", 2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            anonymous_sandbox: true,
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config, Arc::new(BenchAuth)).await.unwrap();
        let addr = broker.local_addr();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(broker.run(shutdown.clone()));
        idle_memory(addr, idle).await;
        throughput(addr, messages, payload).await;
        shutdown.cancel();
        let _ = running.await;
    });
}
