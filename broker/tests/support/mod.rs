//! A raw MQTT 3.1.1 writer and a broker with two devices, for tests that must control
//! exactly which bytes go out in which write.
#![allow(dead_code)] // each test crate uses a part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, Delivered, Login, Refusal, SessionEvent,
    Uplink, UplinkFuture, UplinkMessage,
};
use fleetmq_protocol::Principal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub const DEV_A1: &str = "00000000-0000-4000-8000-0000000000a1";
pub const DEV_B1: &str = "00000000-0000-4000-8000-0000000000b1";

/// Failure guard for anything awaited; never a sleep.
pub const WAIT: Duration = Duration::from_secs(10);

/// Devices `…a1` and `…b1`; counts every call.
#[derive(Default)]
pub struct DeviceAuth {
    pub calls: AtomicUsize,
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
pub struct StoredUplink {
    pub messages: Mutex<Vec<UplinkMessage>>,
}

impl StoredUplink {
    pub fn payloads(&self) -> Vec<String> {
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
        Box::pin(async { Ok(Delivered::Taken) })
    }

    fn session(&self, _event: SessionEvent) {}
}

pub struct TestBroker {
    pub addr: SocketAddr,
    pub auth: Arc<DeviceAuth>,
    pub uplink: Arc<StoredUplink>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    pub async fn start(config: BrokerConfig) -> TestBroker {
        let auth = Arc::new(DeviceAuth::default());
        let uplink = Arc::new(StoredUplink::default());
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let broker = Broker::bind(config, Arc::clone(&auth) as Arc<dyn Authenticator>)
            .await
            .unwrap()
            .with_uplink(Arc::clone(&uplink) as Arc<dyn Uplink>);
        let addr = broker.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker.run(shutdown.clone()));
        TestBroker {
            addr,
            auth,
            uplink,
            shutdown,
            task,
        }
    }

    /// A raw connection from `source` (any 127.0.0.0/8 address is loopback on Linux).
    pub async fn socket_from(&self, source: [u8; 4]) -> Raw {
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

    /// Device `…a1` (from 127.0.0.1), connected: CONNACK 0 read.
    pub async fn device_a(&self) -> Raw {
        let mut raw = self.socket_from([127, 0, 0, 1]).await;
        raw.send(&connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0)).await;
        assert_eq!(raw.packet().await, CONNACK_ACCEPTED);
        raw
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

/// A TCP connection speaking MQTT by hand.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next whole packet (fixed header included); panics on EOF or after [`WAIT`].
    pub async fn packet(&mut self) -> Vec<u8> {
        timeout(WAIT, self.try_packet())
            .await
            .expect("a packet in time")
            .expect("a packet, not EOF")
    }

    /// The next whole packet, or `None` at EOF (or on a reset).
    pub async fn try_packet(&mut self) -> Option<Vec<u8>> {
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
    pub async fn until_closed(&mut self) -> Vec<Vec<u8>> {
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

pub const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];

/// Appends an MQTT remaining length.
pub fn put_length(out: &mut Vec<u8>, mut len: usize) {
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

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![header];
    put_length(&mut packet, body.len());
    packet.extend_from_slice(body);
    packet
}

/// CONNECT, MQTT 3.1.1, clean session.
pub fn connect(client_id: &str, login: Option<(&str, &str)>, keep_alive: u16) -> Vec<u8> {
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

pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter);
    body.push(qos);
    frame(0x82, &body)
}

pub fn publish(topic: &str, payload: &str, qos: u8, pkid: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload.as_bytes());
    frame(0x30 | (u8::from(dup) << 3) | (qos << 1), &body)
}

pub fn ack(header: u8, pkid: u16) -> Vec<u8> {
    frame(header, &pkid.to_be_bytes())
}

pub fn telemetry_topic(device: &str) -> String {
    format!("fleetmq/v1/acme/{device}/up/telemetry")
}

/// Reads packets until one equals `last`; returns all of them (that one included).
pub async fn packets_until(raw: &mut Raw, last: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    loop {
        let packet = raw.packet().await;
        let done = packet == last;
        packets.push(packet);
        if done {
            return packets;
        }
    }
}
