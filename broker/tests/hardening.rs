//! Hostile and careless clients over real sockets (issue 9): pipelined packets, QoS 2
//! resends, pre-CONNECT floods and wrong-key floods. Clients here are raw MQTT writers so
//! that each test controls exactly which bytes go out in which write.
//!
//! The cast: device `…a1` (org `acme`, key `pw-a1`) and device `…b1` (org `beta`, key
//! `pw-b1`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, Login, Refusal, SessionEvent, Uplink,
    UplinkFuture, UplinkMessage,
};
use fleetmq_protocol::Principal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const DEV_A1: &str = "00000000-0000-4000-8000-0000000000a1";
const DEV_B1: &str = "00000000-0000-4000-8000-0000000000b1";

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);

/// Devices `…a1` and `…b1`; counts every call.
#[derive(Default)]
struct DeviceAuth {
    calls: AtomicUsize,
}

impl Authenticator for DeviceAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let password = login.password.unwrap_or_default();
            let device = |org: &str, id: &str| Principal::Device {
                org_slug: org.into(),
                device_id: id.parse().expect("a device id"),
            };
            match (login.username.as_deref(), password.as_slice()) {
                (Some(DEV_A1), b"pw-a1") => Ok(device("acme", DEV_A1)),
                (Some(DEV_B1), b"pw-b1") => Ok(device("beta", DEV_B1)),
                _ => Err(Refusal::BadCredentials),
            }
        })
    }
}

/// Takes every device message at once and keeps it: what the bridge would store.
#[derive(Default)]
struct StoredUplink {
    messages: Mutex<Vec<UplinkMessage>>,
}

impl StoredUplink {
    fn payloads(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }
}

impl Uplink for StoredUplink {
    fn deliver(&self, message: UplinkMessage) -> UplinkFuture<'_> {
        self.messages.lock().unwrap().push(message);
        Box::pin(async { Ok(()) })
    }

    fn session(&self, _event: SessionEvent) {}
}

struct TestBroker {
    addr: SocketAddr,
    uplink: Arc<StoredUplink>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    async fn start(config: BrokerConfig) -> TestBroker {
        let auth: Arc<dyn Authenticator> = Arc::new(DeviceAuth::default());
        let uplink = Arc::new(StoredUplink::default());
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let broker = Broker::bind(config, auth)
            .await
            .unwrap()
            .with_uplink(Arc::clone(&uplink) as Arc<dyn Uplink>);
        let addr = broker.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker.run(shutdown.clone()));
        TestBroker {
            addr,
            uplink,
            shutdown,
            task,
        }
    }

    /// A raw connection from `source` (any 127.0.0.0/8 address is loopback on Linux).
    async fn socket_from(&self, source: [u8; 4]) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback source address");
        let stream = timeout(WAIT, socket.connect(self.addr))
            .await
            .expect("TCP connect in time")
            .unwrap();
        Raw { stream }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

/// A TCP connection speaking MQTT by hand.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next whole packet (fixed header included); panics on EOF or after [`WAIT`].
    async fn packet(&mut self) -> Vec<u8> {
        timeout(WAIT, self.try_packet())
            .await
            .expect("a packet in time")
            .expect("a packet, not EOF")
    }

    /// The next whole packet, or `None` at EOF (or on a reset).
    async fn try_packet(&mut self) -> Option<Vec<u8>> {
        let mut packet = vec![0u8; 1];
        self.stream.read_exact(&mut packet).await.ok()?;
        let mut remaining = 0usize;
        for shift in 0..4 {
            let byte = self.stream.read_u8().await.ok()?;
            packet.push(byte);
            remaining |= usize::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                break;
            }
        }
        let start = packet.len();
        packet.resize(start + remaining, 0);
        self.stream.read_exact(&mut packet[start..]).await.ok()?;
        Some(packet)
    }

    /// Waits until the broker closes the connection; returns what it sent before.
    async fn until_closed(&mut self) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        timeout(WAIT, async {
            while let Some(packet) = self.try_packet().await {
                packets.push(packet);
            }
        })
        .await
        .expect("broker closes the connection");
        packets
    }
}

const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const PINGREQ: [u8; 2] = [0xc0, 0x00];
const PINGRESP: [u8; 2] = [0xd0, 0x00];

/// Appends an MQTT remaining length.
fn put_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![header];
    put_length(&mut packet, body.len());
    packet.extend_from_slice(body);
    packet
}

/// CONNECT, MQTT 3.1.1, clean session.
fn connect(client_id: &str, login: Option<(&str, &str)>, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.push(0x04);
    body.push(0x02 | if login.is_some() { 0xc0 } else { 0 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id);
    if let Some((user, password)) = login {
        put_str(&mut body, user);
        put_str(&mut body, password);
    }
    frame(0x10, &body)
}

fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter);
    body.push(qos);
    frame(0x82, &body)
}

fn publish(topic: &str, payload: &str, qos: u8, pkid: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload.as_bytes());
    frame(0x30 | (u8::from(dup) << 3) | (qos << 1), &body)
}

fn ack(header: u8, pkid: u16) -> Vec<u8> {
    frame(header, &pkid.to_be_bytes())
}

fn telemetry_topic(device: &str) -> String {
    format!("fleetmq/v1/acme/{device}/up/telemetry")
}

#[tokio::test]
async fn packets_pipelined_behind_connect_are_answered_without_more_bytes() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    // Keep-alive 0: the broker has no reason to wait for, and the client sends, nothing more.
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(subscribe(7, &format!("fleetmq/v1/acme/{DEV_A1}/down/#"), 1));
    burst.extend(PINGREQ);
    raw.send(&burst).await;
    assert_eq!(raw.packet().await, CONNACK_ACCEPTED);
    assert_eq!(raw.packet().await, [0x90, 0x03, 0x00, 0x07, 0x01]);
    assert_eq!(raw.packet().await, PINGRESP);
    broker.stop().await;
}

#[tokio::test]
async fn a_publish_pipelined_behind_connect_is_delivered_and_acknowledged() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(publish(&telemetry_topic(DEV_A1), "early", 1, 3, false));
    raw.send(&burst).await;
    assert_eq!(raw.packet().await, CONNACK_ACCEPTED);
    assert_eq!(raw.packet().await, ack(0x40, 3));
    assert_eq!(broker.uplink.payloads(), ["early"]);
    broker.stop().await;
}

#[tokio::test]
async fn a_second_connect_in_the_same_write_closes_the_connection_at_once() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0));
    raw.send(&burst).await;
    // Only the first is answered; the second is a protocol violation (MQTT-3.1.0-2).
    assert_eq!(raw.until_closed().await, [CONNACK_ACCEPTED.to_vec()]);
    broker.stop().await;
}
