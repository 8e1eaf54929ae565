//! Broker settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::TlsIdentity;

/// How the broker listens and how much it admits. `Default` is what the tests and a small
/// deployment want; every field is public so the binary can map its CLI onto it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Plain MQTT (TCP) listen address. Port 0 picks a free port; read it back with
    /// [`Broker::local_addr`](crate::Broker::local_addr).
    pub mqtt_addr: SocketAddr,
    /// MQTT over TLS (its own port), off when `None`.
    pub tls: Option<TlsListener>,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`), off when `None`. Port 0 picks
    /// a free one ([`Broker::ws_addr`](crate::Broker::ws_addr)).
    pub ws_addr: Option<SocketAddr>,
    /// MQTT over secure WebSocket (`wss://`, path `/mqtt`, subprotocol `mqtt`), off when
    /// `None`: browsers on HTTPS pages may not open plain `ws://`. It presents the TLS
    /// listener's certificate and asks for client certificates as that listener does, so it
    /// needs [`tls`](Self::tls); without it [`Broker::bind`](crate::Broker::bind) fails. Port
    /// 0 picks a free one ([`Broker::wss_addr`](crate::Broker::wss_addr)).
    pub wss_addr: Option<SocketAddr>,
    /// Admit clients that send no username as [`Principal::Anonymous`](fleetmq_protocol::Principal)
    /// (a sandbox outside `fleetmq/`). Off by default: such clients get CONNACK 0x05.
    pub anonymous_sandbox: bool,
    /// Authenticated sessions at once; a further client gets CONNACK 0x03 (server
    /// unavailable) once authenticated. Sockets before their CONNACK count against
    /// [`Limits::max_pending_connections`] instead.
    pub max_connections: usize,
    /// How long a new TCP connection may take to send CONNECT (and to be authenticated).
    pub connect_timeout: Duration,
    /// Largest MQTT packet accepted (remaining length), in bytes; larger packets close the
    /// connection before they are buffered.
    pub max_packet_size: usize,
    /// How long an [`Uplink::deliver`](crate::Uplink::deliver) may take before it counts as
    /// failed (the connection is closed without acknowledgement; the device resends).
    pub uplink_timeout: Duration,
    /// Bounds against hostile and careless clients (docs/mqtt.md, "Limits").
    pub limits: Limits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls: None,
            ws_addr: None,
            wss_addr: None,
            anonymous_sandbox: false,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1024 * 1024,
            uplink_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// Bounds on what one client, or one source address, can make the broker hold or do.
/// Documented with their flags in docs/mqtt.md ("Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sockets that have not had their CONNECT answered yet (TLS/WebSocket handshake,
    /// CONNECT, authentication), across all listeners. Apart from `max_connections`, which
    /// counts sessions only. Sockets over it are closed at once.
    pub max_pending_connections: usize,
    /// Of those, from one source address: a single host flooding silent sockets fills only
    /// its own share.
    pub max_pending_per_address: usize,
    /// QoS 2 messages one client may have awaiting its PUBREL; one more closes the
    /// connection. Their packet ids are what keeps a resent QoS 2 PUBLISH from being taken
    /// twice.
    pub max_awaiting_pubrel: usize,
    /// Failed logins one source address may make in a burst; then its CONNECTs are refused
    /// (CONNACK 0x05, before authentication) until it earns more at
    /// `login_failures_per_minute`.
    pub login_failures_per_address: u32,
    /// Failed logins an address earns back per minute.
    pub login_failures_per_minute: u32,
    /// Failed logins in a row for one identity (username; a device's id) before its logins
    /// are refused for 1 s, doubling with each further failure up to `login_backoff_max`.
    pub login_failures_per_identity: u32,
    /// Longest lockout of an identity.
    pub login_backoff_max: Duration,
    /// Messages one session (operator, sandbox client, in-process link) may have waiting to
    /// be sent; past it (or past `max_queued_bytes`) the newest messages are dropped for that
    /// session and counted. A persistent session's queue while it is offline counts too.
    pub max_queued_messages: usize,
    /// Topic and payload bytes one session may have waiting to be sent.
    pub max_queued_bytes: usize,
    /// QoS 1/2 messages sent to one session and not yet acknowledged; further messages wait
    /// in its queue.
    pub max_inflight_messages: usize,
    /// Retained messages kept in all; past it a new retained topic is routed but not kept
    /// (counted).
    pub max_retained_messages: usize,
    /// Persistent sessions (clean session 0) kept in all, connected or not; a client asking
    /// for a new one past it gets CONNACK 0x03 (counted). Resuming a kept one always works.
    pub max_persistent_sessions: usize,
    /// Topic aliases an MQTT 5 client may set on one connection (announced in CONNACK; an
    /// alias above it closes the connection with DISCONNECT 0x94). Each holds a topic.
    pub max_topic_aliases: u16,
    /// Longest keep-alive an MQTT 5 client gets: one asking for more, or for none (0), is
    /// given this one in CONNACK (server keep alive), so that a dead connection is noticed.
    /// MQTT 3.1.1 has no way to say so: its clients keep theirs.
    pub max_keep_alive: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_connections: 1024,
            max_pending_per_address: 64,
            max_awaiting_pubrel: 1024,
            login_failures_per_address: 20,
            login_failures_per_minute: 30,
            login_failures_per_identity: 5,
            login_backoff_max: Duration::from_secs(60),
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_inflight_messages: 100,
            max_retained_messages: 1_000_000,
            max_persistent_sessions: 100_000,
            max_topic_aliases: 10,
            max_keep_alive: 3600,
        }
    }
}

/// The MQTT-over-TLS listener: where, and with which certificate.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Listen address (port 0 picks a free one; read it back with
    /// [`Broker::tls_addr`](crate::Broker::tls_addr)).
    pub addr: SocketAddr,
    /// Certificate chain and key presented to clients.
    pub identity: TlsIdentity,
}
