//! One task per network connection: CONNECT, authentication, CONNACK, then relaying between
//! the socket and the router with every PUBLISH and SUBSCRIBE authorized on the way in.
//! A device's subscriptions and server-to-device messages never touch the router: the task
//! keeps the filters and delivers what `BrokerHandle::publish` hands it (see `downlink`).
//!
//! rumqttd's router trusts whatever it is given and always answers CONNACK success, so every
//! refusal and return code is decided here. See docs/mqtt.md for the rules.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fleetmq_protocol::Principal;
use fleetmq_protocol::topic::matches;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::v4::{V4, check};
use rumqttd::protocol::{
    ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, Error as WireError, LastWill,
    Packet, PingReq, PingResp, Protocol, Publish, QoS, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::auth::{Authenticator, Login};
use crate::downlink::{DOWNLINK_QUEUE, Downlink, Filters};
use crate::handle::Core;
use crate::router::{SharedTx, build_link, now_or_never};
use crate::session::router_client_id;
use crate::uplink::{SessionEvent, Uplink, UplinkFuture, UplinkMessage};
use crate::{BrokerConfig, BrokerError, Refusal};

/// A socket stalled this long on a write (client not reading) is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client refused for capacity may take to send its CONNECT.
const BUSY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Initial capacity of a connection's read and write buffers.
const INITIAL_BUFFER: usize = 512;
/// A write buffer grown past this by a large packet is given back after the flush.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;
/// Router notifications (or downlink messages) relayed per socket flush.
const MAX_BATCH: usize = 256;
/// Server-to-device QoS 1 messages a device may leave unacknowledged; further downlink
/// waits in its queue (`DOWNLINK_QUEUE`, then dropped by `BrokerHandle::publish`).
const MAX_DOWNLINK_INFLIGHT: usize = 100;

/// Everything a connection task needs from its broker.
pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) uplink: Arc<dyn Uplink>,
    pub(crate) config: BrokerConfig,
    pub(crate) shutdown: CancellationToken,
}

/// A byte stream MQTT runs on: TCP, TLS over TCP, or WebSocket.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An accepted connection after its transport handshake.
pub(crate) type Stream = Box<dyn Transport>;

/// The socket with its MQTT v4 framing buffers.
struct Wire {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    max_packet_size: usize,
}

/// Why the MQTT connection ended; everything but a client DISCONNECT publishes the will.
#[derive(Debug)]
enum Close {
    ClientDisconnect,
    Eof,
    Io(io::Error),
    Protocol(String),
    NotAuthorized(String),
    KeepAliveExpired,
    Kicked,
    Shutdown,
    RouterGone,
    UplinkFailed(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::ClientDisconnect => f.write_str("client sent DISCONNECT"),
            Close::Eof => f.write_str("client closed the socket"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            Close::NotAuthorized(topic) => write!(f, "publish to `{topic}` not authorized"),
            Close::KeepAliveExpired => f.write_str("keep-alive expired"),
            Close::Kicked => f.write_str("taken over or disconnected by the server"),
            Close::Shutdown => f.write_str("broker shutting down"),
            Close::RouterGone => f.write_str("router dropped the session"),
            Close::UplinkFailed(reason) => write!(f, "uplink failed: {reason}"),
        }
    }
}

impl Close {
    /// The reason reported in [`SessionEvent::Disconnected`].
    fn session_reason(&self, taken_over: bool) -> &'static str {
        match self {
            Close::ClientDisconnect => "clean",
            Close::Eof | Close::Io(_) | Close::RouterGone => "connection lost",
            Close::Protocol(_) => "protocol violation",
            Close::NotAuthorized(_) => "publish not authorized",
            Close::KeepAliveExpired => "keep-alive expired",
            Close::Kicked if taken_over => "taken over",
            Close::Kicked => "kicked",
            Close::Shutdown => "server shutting down",
            Close::UplinkFailed(_) => "uplink failed",
        }
    }
}

impl Wire {
    fn new(stream: Stream, max_packet_size: usize) -> Wire {
        Wire {
            stream,
            // Small to start: most devices send and receive small packets, and per-connection
            // memory counts at 19,000 devices. Both grow on demand for larger packets.
            read: BytesMut::with_capacity(INITIAL_BUFFER),
            write: BytesMut::with_capacity(INITIAL_BUFFER),
            max_packet_size,
        }
    }

    /// The next complete packet already buffered, if any.
    fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        match V4.read_mut(&mut self.read, self.max_packet_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(WireError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Encodes `packet` for the next flush. Callers strip v5 properties first: rumqttd's v4
    /// encoder panics on them.
    fn queue(&mut self, packet: Packet) {
        if let Err(e) = V4.write(packet, &mut self.write) {
            warn!(error = %e, "cannot encode packet, dropped");
        }
    }

    async fn flush(&mut self) -> Result<(), Close> {
        if self.write.is_empty() {
            return Ok(());
        }
        // TLS and WebSocket buffer inside the stream: flush pushes the bytes out.
        let write = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        };
        match timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.write.clear();
                if self.write.capacity() > KEEP_WRITE_BUFFER {
                    self.write = BytesMut::with_capacity(INITIAL_BUFFER);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(Close::Io(e)),
            Err(_) => Err(Close::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "write timed out",
            ))),
        }
    }

    async fn connack(&mut self, code: ConnectReturnCode, session_present: bool) {
        let connack = ConnAck {
            session_present,
            code,
        };
        self.queue(Packet::ConnAck(connack, None));
        let _ = self.flush().await;
    }
}

enum ConnectFailure {
    /// EOF or I/O error before a full CONNECT.
    Closed,
    /// Not MQTT 3.1.1 (e.g. 3.1 `MQIsdp` or 5): answer CONNACK 0x01.
    UnsupportedProtocol,
    /// Anything else that is not a well-formed CONNECT.
    Malformed(String),
}

async fn read_connect(wire: &mut Wire) -> Result<Packet, ConnectFailure> {
    loop {
        // The first packet must be CONNECT (MQTT 3.1.1 §3.1).
        if wire.read.first().is_some_and(|b| b >> 4 != 1) {
            return Err(ConnectFailure::Malformed(
                "first packet is not CONNECT".into(),
            ));
        }
        if let Some(reason) = connect_flags_violation(&wire.read, wire.max_packet_size) {
            return Err(ConnectFailure::Malformed(reason.into()));
        }
        match wire.parse() {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(WireError::InvalidProtocol | WireError::InvalidProtocolLevel(_)) => {
                return Err(ConnectFailure::UnsupportedProtocol);
            }
            Err(e) => return Err(ConnectFailure::Malformed(e.to_string())),
        }
        match wire.stream.read_buf(&mut wire.read).await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Closed),
            Ok(_) => {}
        }
    }
}

/// What rumqttd's CONNECT decoder lets through: the reserved flag (MQTT-3.1.2-3) and a
/// password without a username (MQTT-3.1.2-22) are protocol violations; the connection is
/// closed without CONNACK. `None` until the buffer holds the whole frame.
fn connect_flags_violation(buffer: &[u8], max_packet_size: usize) -> Option<&'static str> {
    let header = check(buffer.iter(), max_packet_size).ok()?;
    let start = header.fixed_header_len;
    let name_len = u16::from_be_bytes([*buffer.get(start)?, *buffer.get(start + 1)?]) as usize;
    let flags = *buffer.get(start + 2 + name_len + 1)?;
    if flags & 0x01 != 0 {
        Some("reserved CONNECT flag is set")
    } else if flags & 0x80 == 0 && flags & 0x40 != 0 {
        Some("password flag without username flag")
    } else {
        None
    }
}

fn return_code(code: u8) -> ConnectReturnCode {
    match code {
        0x01 => ConnectReturnCode::RefusedProtocolVersion,
        0x02 => ConnectReturnCode::ClientIdentifierNotValid,
        0x03 => ConnectReturnCode::ServiceUnavailable,
        0x04 => ConnectReturnCode::BadUserNamePassword,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// Answers a client that arrives while the broker is full with CONNACK 0x03. Reading its
/// CONNECT first matters: closing a socket with unread data resets it, and the client
/// would never see the return code.
pub(crate) async fn refuse_busy(stream: Stream, max_packet_size: usize) {
    let mut wire = Wire::new(stream, max_packet_size);
    if let Ok(Ok(_)) = timeout(BUSY_CONNECT_TIMEOUT, read_connect(&mut wire)).await {
        wire.connack(ConnectReturnCode::ServiceUnavailable, false)
            .await;
    }
}

/// Serves one network connection until it closes.
pub(crate) async fn serve(stream: Stream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut wire = Wire::new(stream, shared.config.max_packet_size);
    let first = tokio::select! {
        r = timeout(shared.config.connect_timeout, read_connect(&mut wire)) => r,
        () = shared.shutdown.cancelled() => return,
    };
    let packet = match first {
        Ok(Ok(packet)) => packet,
        Ok(Err(ConnectFailure::UnsupportedProtocol)) => {
            debug!(%peer, "unsupported protocol version");
            wire.connack(ConnectReturnCode::RefusedProtocolVersion, false)
                .await;
            return;
        }
        Ok(Err(ConnectFailure::Malformed(reason))) => {
            debug!(%peer, reason, "malformed CONNECT");
            return;
        }
        Ok(Err(ConnectFailure::Closed)) => return,
        Err(_) => {
            debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    let Packet::Connect(connect, _, will, _, login) = packet else {
        return;
    };

    // Client id rules: the router silently drops ids containing `+ $ # /`, and an empty id
    // is only allowed with a clean session (MQTT 3.1.1 §3.1.3.1).
    if (connect.client_id.is_empty() && !connect.clean_session)
        || connect.client_id.contains(['+', '$', '#', '/', '\0'])
    {
        wire.connack(ConnectReturnCode::ClientIdentifierNotValid, false)
            .await;
        return;
    }
    let client_id = if connect.client_id.is_empty() {
        format!("auto-{}", uuid::Uuid::new_v4().simple())
    } else {
        connect.client_id.clone()
    };
    let (username, password) = match login {
        Some(login) => (
            Some(login.username).filter(|u| !u.is_empty()),
            Some(login.password.into_bytes()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };

    let authenticated_at = std::time::Instant::now();
    let principal = match authenticate(&shared, &client_id, username.clone(), password, peer).await
    {
        Ok(principal) => principal,
        Err(code) => {
            info!(%peer, client_id, code, "connection refused");
            wire.connack(return_code(code), false).await;
            return;
        }
    };
    if let Some(will) = &will {
        let allowed = std::str::from_utf8(&will.topic).is_ok_and(|t| principal.may_publish(t));
        if !allowed {
            info!(%peer, client_id, "last will topic not authorized");
            wire.connack(ConnectReturnCode::NotAuthorized, false).await;
            return;
        }
    }

    let router_id = router_client_id(&principal, username.as_deref(), &client_id);
    let span = tracing::info_span!("mqtt", client_id, %peer);
    async move {
        let Ok(guard) = shared
            .core
            .sessions
            .register(&router_id, authenticated_at)
            .await
        else {
            info!("kicked while logging in");
            wire.connack(ConnectReturnCode::NotAuthorized, false).await;
            return;
        };
        let (tx, rx, connack) =
            match build_link(&shared.core.links, router_id.clone(), connect.clean_session).await {
                Ok(link) => link,
                Err(e) => {
                    warn!(error = %e, "router refused the session");
                    wire.connack(ConnectReturnCode::ServiceUnavailable, false)
                        .await;
                    return;
                }
            };
        let session_present = match Option::<Packet>::from(connack) {
            Some(Packet::ConnAck(ack, _)) => ack.session_present,
            _ => false,
        };
        wire.connack(ConnectReturnCode::Success, session_present)
            .await;
        debug!(?principal, session_present, "connected");
        // A device's downlink is served here, not by the router (see `downlink`). Registered
        // before `Connected` so that what the bridge resends on it finds this connection.
        let (downlink_rx, registered) = match &principal {
            Principal::Device { device_id, .. } => {
                let (downlink_tx, downlink_rx) = mpsc::channel(DOWNLINK_QUEUE);
                let generation = shared.core.downlinks.register(device_id, downlink_tx);
                (Some(downlink_rx), Some((device_id.clone(), generation)))
            }
            _ => (None, None),
        };
        let device = registered.as_ref().map(|(device_id, _)| DeviceDownlink {
            filters: shared
                .core
                .downlinks
                .restore(device_id, connect.clean_session),
            ..DeviceDownlink::default()
        });
        if let Principal::Device {
            org_slug,
            device_id,
        } = &principal
        {
            shared.uplink.session(SessionEvent::Connected {
                org_slug: org_slug.clone(),
                device_id: device_id.clone(),
                peer,
            });
        }

        let mut session = Session {
            shared: &shared,
            device,
            principal,
            tx: Arc::new(Mutex::new(tx)),
            pending_subacks: VecDeque::new(),
            pending_unsubacks: VecDeque::new(),
            held: None,
        };
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let close = session
            .run(&mut wire, rx, downlink_rx, keep_alive, guard.kicked())
            .await;
        debug!(reason = %close, "disconnected");
        if let Some((device_id, generation)) = registered {
            // Unacknowledged downlink is dropped with the connection (clean-session semantics).
            shared.core.downlinks.remove(&device_id, generation);
            if !connect.clean_session
                && let Some(device) = session.device.take()
            {
                shared.core.downlinks.keep(&device_id, device.filters);
            }
        }
        if let Some(held) = session.held.take() {
            // Closed (kick, shutdown) while a delivery was in flight. Its effect may already
            // be under way; let it finish so that `Disconnected` is reported after it. It is
            // not acknowledged: the device sends it again.
            let _ = held.delivery.await;
        }
        if let Principal::Device {
            org_slug,
            device_id,
        } = &session.principal
        {
            shared.uplink.session(SessionEvent::Disconnected {
                org_slug: org_slug.clone(),
                device_id: device_id.clone(),
                reason: close.session_reason(guard.taken_over()).to_owned(),
            });
        }

        // Every end but a client DISCONNECT publishes the will (MQTT 3.1.1 §3.1.2.5).
        let will = will.filter(|_| !matches!(close, Close::ClientDisconnect));
        let published = match will {
            Some(LastWill {
                topic,
                message,
                retain,
                ..
            }) => shared.core.publish(topic, message, retain).await,
            None => Ok(()),
        };
        if let Err(e) = published {
            warn!(error = %e, "cannot publish last will");
        }
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        let _ = shared
            .core
            .feeder
            .send_and_wait(&session.tx, Packet::Disconnect(disconnect, None))
            .await;
        let _ = wire.stream.shutdown().await;
        drop(guard);
    }
    .instrument(span)
    .await;
}

/// Decides the principal or the CONNACK return code.
async fn authenticate(
    shared: &Shared,
    client_id: &str,
    username: Option<String>,
    password: Option<Vec<u8>>,
    peer: SocketAddr,
) -> Result<Principal, u8> {
    let principal = match username {
        None => Principal::Anonymous,
        Some(username) => {
            let login = Login {
                client_id: client_id.to_owned(),
                username: Some(username),
                password,
                peer,
            };
            match timeout(
                shared.config.connect_timeout,
                shared.auth.authenticate(login),
            )
            .await
            {
                Ok(Ok(principal)) => principal,
                Ok(Err(refusal)) => return Err(refusal.return_code()),
                Err(_) => return Err(Refusal::ServerUnavailable.return_code()),
            }
        }
    };
    match &principal {
        Principal::Anonymous if !shared.config.anonymous_sandbox => {
            Err(Refusal::NotAuthorized.return_code())
        }
        Principal::Device { device_id, .. } if device_id != client_id => {
            Err(Refusal::IdentifierRejected.return_code())
        }
        _ => Ok(principal),
    }
}

/// A SUBSCRIBE whose allowed filters went to the router; refused ones already have 0x80.
struct PendingSubAck {
    pkid: u16,
    codes: Vec<Option<SubscribeReasonCode>>,
}

/// A device PUBLISH waiting for [`Uplink::deliver`] before it goes to the router (which then
/// acknowledges it).
struct Held<'a> {
    publish: Publish,
    delivery: UplinkFuture<'a>,
}

/// A device's subscriptions and server-to-device QoS 1 state, kept in the front end: the
/// router never sees a device's SUBSCRIBE, so it never sends the device anything and the
/// packet-id space towards the device is ours.
#[derive(Default)]
struct DeviceDownlink {
    /// Filter (as subscribed) and granted QoS (at most 1).
    filters: Filters,
    /// Packet ids sent at QoS 1 and not yet acknowledged.
    inflight: HashSet<u16>,
    last_pkid: u16,
    /// Whether the device has sent a SUBSCRIBE on this connection.
    subscribed: bool,
    /// Downlink that arrived after CONNACK but before the device's first SUBSCRIBE (a
    /// command the bridge resends on connect races the device's subscription); matched
    /// again once the device subscribes, at most [`MAX_EARLY_DOWNLINK`] of them.
    early: Vec<Downlink>,
}

/// Downlink kept for a device that has not subscribed yet on its connection.
const MAX_EARLY_DOWNLINK: usize = 64;

impl DeviceDownlink {
    fn can_take(&self) -> bool {
        self.inflight.len() < MAX_DOWNLINK_INFLIGHT
    }

    /// The QoS to deliver `topic` at: the highest granted QoS among matching filters.
    fn qos_for(&self, topic: &str) -> Option<QoS> {
        self.filters
            .iter()
            .filter(|(filter, _)| matches(inner_filter(filter), topic))
            .map(|(_, qos)| *qos)
            .max_by_key(|qos| *qos as u8)
    }

    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Encodes a downlink message as a PUBLISH (QoS 1 ones are kept in flight); `None` if
    /// no subscription matches.
    fn publish(&mut self, message: Downlink) -> Option<Publish> {
        let topic = std::str::from_utf8(&message.topic).ok()?;
        let qos = self.qos_for(topic)?;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => {
                let pkid = self.next_pkid();
                self.inflight.insert(pkid);
                pkid
            }
        };
        // rumqttd keeps `Publish.qos`/`pkid` private; its own serialization sets them.
        let mut raw = BytesMut::with_capacity(5 + message.topic.len() + message.payload.len());
        raw.put_u8(0b0011_0000 | ((qos as u8) << 1));
        raw.put_u16(pkid);
        raw.put_u16(u16::try_from(message.topic.len()).ok()?);
        raw.extend_from_slice(&message.topic);
        raw.extend_from_slice(&message.payload);
        Some(Publish::deserialize(raw.freeze()))
    }

    fn subscribe(&mut self, principal: &Principal, subscribe: Subscribe) -> SubAck {
        let return_codes = subscribe
            .filters
            .into_iter()
            .map(|filter| {
                if !principal.may_subscribe(&filter.path) {
                    info!(filter = filter.path, "subscription refused");
                    return SubscribeReasonCode::Failure;
                }
                let granted = match filter.qos {
                    QoS::AtMostOnce => QoS::AtMostOnce,
                    _ => QoS::AtLeastOnce,
                };
                // A subscription to an existing filter replaces it (MQTT 3.1.1 §3.8.4).
                match self.filters.iter_mut().find(|(f, _)| *f == filter.path) {
                    Some(existing) => existing.1 = granted,
                    None => self.filters.push((filter.path, granted)),
                }
                SubscribeReasonCode::Success(granted)
            })
            .collect();
        SubAck {
            pkid: subscribe.pkid,
            return_codes,
        }
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> UnsubAck {
        self.filters
            .retain(|(f, _)| !unsubscribe.filters.contains(f));
        UnsubAck {
            pkid: unsubscribe.pkid,
            reasons: Vec::new(),
        }
    }
}

/// The filter a subscription matches with: `$share/{group}/{filter}` → `{filter}`.
fn inner_filter(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, inner)| inner)
}

/// The next downlink message; never resolves without a queue. Cancel-safe.
fn next_downlink<'r>(
    rx: &'r mut Option<mpsc::Receiver<Box<Downlink>>>,
) -> impl Future<Output = Option<Box<Downlink>>> + 'r {
    std::future::poll_fn(move |cx| match rx {
        Some(rx) => rx.poll_recv(cx),
        None => Poll::Pending,
    })
}

struct Session<'a> {
    shared: &'a Shared,
    principal: Principal,
    /// Set for devices: their downlink is served by the front end.
    device: Option<DeviceDownlink>,
    tx: SharedTx,
    pending_subacks: VecDeque<PendingSubAck>,
    /// UNSUBSCRIBEs awaiting our marker (see `handle_client`).
    pending_unsubacks: VecDeque<u16>,
    /// The device message being delivered to the uplink. While it is, nothing more is read
    /// from the socket: packets stay in order and a slow uplink slows only this device.
    held: Option<Held<'a>>,
}

/// Resolves when the held delivery does; never while there is none. Cancel-safe (the
/// delivery stays in `held`).
fn delivered<'s>(
    held: &'s mut Option<Held<'_>>,
) -> impl Future<Output = Result<(), BrokerError>> + 's {
    std::future::poll_fn(move |cx| match held {
        Some(held) => held.delivery.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

impl<'a> Session<'a> {
    async fn run(
        &mut self,
        wire: &mut Wire,
        mut rx: LinkRx,
        mut downlink_rx: Option<mpsc::Receiver<Box<Downlink>>>,
        keep_alive: Option<Duration>,
        kicked: &CancellationToken,
    ) -> Close {
        let far_future = Duration::from_secs(86_400 * 365);
        let mut expiry = pin!(sleep_until(
            Instant::now() + keep_alive.unwrap_or(far_future)
        ));
        loop {
            let result = tokio::select! {
                () = self.shared.shutdown.cancelled() => Err(Close::Shutdown),
                () = kicked.cancelled() => Err(Close::Kicked),
                // While a delivery is held the socket is not read, so silence is ours, not
                // the client's: the keep-alive clock restarts when the delivery ends.
                () = &mut expiry, if keep_alive.is_some() && self.held.is_none() => {
                    Err(Close::KeepAliveExpired)
                }
                result = delivered(&mut self.held), if self.held.is_some() => {
                    if let Some(keep_alive) = keep_alive {
                        expiry.as_mut().reset(Instant::now() + keep_alive);
                    }
                    self.on_delivered(result, wire).await
                }
                read = wire.stream.read_buf(&mut wire.read), if self.held.is_none() => match read {
                    Ok(0) => Err(Close::Eof),
                    Ok(_) => {
                        if let Some(keep_alive) = keep_alive {
                            expiry.as_mut().reset(Instant::now() + keep_alive);
                        }
                        self.drain_socket(wire).await
                    }
                    Err(e) => Err(Close::Io(e)),
                },
                notification = rx.next() => match notification {
                    Ok(first) => self.drain_router(wire, &mut rx, first).await,
                    Err(_) => Err(Close::RouterGone),
                },
                message = next_downlink(&mut downlink_rx),
                    if self.device.as_ref().is_some_and(DeviceDownlink::can_take) =>
                {
                    match message {
                        Some(message) => {
                            self.deliver_downlink(message, wire, &mut downlink_rx);
                            Ok(())
                        }
                        // Replaced in the registry (takeover): nothing more will come.
                        None => {
                            downlink_rx = None;
                            Ok(())
                        }
                    }
                }
            };
            if let Err(close) = result {
                return close;
            }
            // A client that stops reading must not delay a kick or a shutdown by the write
            // timeout.
            let flushed = tokio::select! {
                flushed = wire.flush() => flushed,
                () = self.shared.shutdown.cancelled() => Err(Close::Shutdown),
                () = kicked.cancelled() => Err(Close::Kicked),
            };
            if let Err(close) = flushed {
                return close;
            }
        }
    }

    /// Writes `first` and what else is queued (up to a batch, within the in-flight cap).
    fn deliver_downlink(
        &mut self,
        first: Box<Downlink>,
        wire: &mut Wire,
        downlink_rx: &mut Option<mpsc::Receiver<Box<Downlink>>>,
    ) {
        let Some(device) = self.device.as_mut() else {
            return;
        };
        let mut next = Some(first);
        for _ in 0..MAX_BATCH {
            let Some(message) = next.take().map(|boxed| *boxed) else {
                break;
            };
            let kept = (!device.subscribed).then(|| message.clone());
            match (device.publish(message), kept) {
                (Some(publish), _) => wire.queue(Packet::Publish(publish, None)),
                (None, Some(kept)) if device.early.len() < MAX_EARLY_DOWNLINK => {
                    device.early.push(kept);
                }
                (None, _) => debug!("downlink message matches no subscription, dropped"),
            }
            if !device.can_take() {
                break;
            }
            next = downlink_rx.as_mut().and_then(|rx| rx.try_recv().ok());
        }
    }

    async fn drain_socket(&mut self, wire: &mut Wire) -> Result<(), Close> {
        // Packets after a held device message wait in the read buffer, in order.
        while self.held.is_none() {
            match wire.parse() {
                Ok(Some(packet)) => self.handle_client(packet, wire).await?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Close::Protocol(e.to_string())),
            }
        }
        Ok(())
    }

    /// The uplink answered for the held message: route it (the router then sends the
    /// PUBACK/PUBREC) and go on with what the client sent after it; or close without
    /// acknowledgement.
    async fn on_delivered(
        &mut self,
        result: Result<(), BrokerError>,
        wire: &mut Wire,
    ) -> Result<(), Close> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        if let Err(e) = result {
            warn!(error = %e, "uplink did not take a device message, closing unacknowledged");
            return Err(Close::UplinkFailed(e.to_string()));
        }
        self.to_router(Packet::Publish(held.publish, None)).await?;
        self.drain_socket(wire).await
    }

    async fn drain_router(
        &mut self,
        wire: &mut Wire,
        rx: &mut LinkRx,
        first: Option<Notification>,
    ) -> Result<(), Close> {
        // Relay what is already buffered (up to a batch) before the caller flushes the socket.
        // Every notification taken from `rx` must be handled: a dropped forward is a lost
        // message, and at QoS 1 a never-acknowledged slot in the router's inflight window.
        let mut next = first;
        for _ in 0..MAX_BATCH {
            if let Some(notification) = next.take() {
                self.relay(notification, wire, rx).await?;
            }
            match now_or_never(rx.next()) {
                Some(Ok(Some(notification))) => next = Some(notification),
                Some(Ok(None)) => {}
                Some(Err(_)) => return Err(Close::RouterGone),
                None => break,
            }
        }
        if let Some(notification) = next {
            self.relay(notification, wire, rx).await?;
        }
        Ok(())
    }

    async fn relay(
        &mut self,
        notification: Notification,
        wire: &mut Wire,
        rx: &mut LinkRx,
    ) -> Result<(), Close> {
        if self.handle_router(notification, wire)? {
            // The router paused us because our buffer was full; tell it we drained it, or it
            // never schedules this connection again.
            rx.wake().await.map_err(|_| Close::RouterGone)?;
        }
        Ok(())
    }

    /// Queues `packet` for the router. Not an `async fn` on `&self`: the future must not
    /// borrow the session, whose held delivery is `Send` but not `Sync`.
    fn to_router(&self, packet: Packet) -> impl Future<Output = Result<(), Close>> + Send + 'a {
        let shared: &'a Shared = self.shared;
        let tx = Arc::clone(&self.tx);
        async move {
            shared
                .core
                .feeder
                .send(&tx, packet)
                .await
                .map_err(|_| Close::RouterGone)
        }
    }

    async fn handle_client(&mut self, packet: Packet, wire: &mut Wire) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish, _) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return Err(Close::Protocol("topic is not UTF-8".into()));
                };
                if !self.principal.may_publish(topic) {
                    // MQTT 3.1.1 has no negative PUBACK; closing is the allowed response.
                    warn!(topic, "publish not authorized, closing");
                    return Err(Close::NotAuthorized(topic.to_owned()));
                }
                if let Principal::Device {
                    org_slug,
                    device_id,
                } = &self.principal
                {
                    // A device may only publish under its own up/ prefix: all of it is uplink.
                    let message = UplinkMessage {
                        org_slug: org_slug.clone(),
                        device_id: device_id.clone(),
                        topic: topic.to_owned(),
                        payload: publish.payload.clone(),
                        retain: publish.retain,
                    };
                    let shared: &'a Shared = self.shared;
                    let delivery = shared.uplink.deliver(message);
                    let limit = shared.config.uplink_timeout;
                    self.held = Some(Held {
                        publish,
                        delivery: Box::pin(async move {
                            timeout(limit, delivery).await.unwrap_or_else(|_| {
                                Err(BrokerError::Uplink(format!("no answer within {limit:?}")))
                            })
                        }),
                    });
                    return Ok(());
                }
                self.to_router(Packet::Publish(publish, None)).await
            }
            Packet::Subscribe(subscribe, _) if self.device.is_some() => {
                if let Some(device) = self.device.as_mut() {
                    let suback = device.subscribe(&self.principal, subscribe);
                    wire.queue(Packet::SubAck(suback, None));
                    if !device.subscribed {
                        device.subscribed = true;
                        // What came before the first subscription gets its chance now.
                        for message in std::mem::take(&mut device.early) {
                            match device.publish(message) {
                                Some(publish) => wire.queue(Packet::Publish(publish, None)),
                                None => debug!("early downlink matches no subscription, dropped"),
                            }
                        }
                    }
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) if self.device.is_some() => {
                if let Some(device) = self.device.as_mut() {
                    wire.queue(Packet::UnsubAck(device.unsubscribe(unsubscribe), None));
                }
                Ok(())
            }
            // The router never sends a device anything: acknowledgements of server-to-device
            // messages are ours. PUBREL still goes to the router (the device's QoS 2 uplink).
            Packet::PubAck(ack, _) if self.device.is_some() => {
                if let Some(device) = self.device.as_mut()
                    && !device.inflight.remove(&ack.pkid)
                {
                    debug!(pkid = ack.pkid, "PUBACK for nothing in flight, ignored");
                }
                Ok(())
            }
            Packet::PubRec(..) | Packet::PubComp(..) if self.device.is_some() => {
                debug!("QoS 2 acknowledgement from a device for nothing sent, ignored");
                Ok(())
            }
            Packet::Subscribe(subscribe, _) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::with_capacity(subscribe.filters.len());
                for filter in subscribe.filters {
                    if self.principal.may_subscribe(&filter.path) && router_serves(&filter.path) {
                        codes.push(None);
                        allowed.push(filter);
                    } else {
                        info!(filter = filter.path, "subscription refused");
                        codes.push(Some(SubscribeReasonCode::Failure));
                    }
                }
                if allowed.is_empty() {
                    let return_codes = codes.into_iter().flatten().collect();
                    wire.queue(Packet::SubAck(
                        SubAck {
                            pkid: subscribe.pkid,
                            return_codes,
                        },
                        None,
                    ));
                    return Ok(());
                }
                self.pending_subacks.push_back(PendingSubAck {
                    pkid: subscribe.pkid,
                    codes,
                });
                let routed = Subscribe {
                    pkid: subscribe.pkid,
                    filters: allowed,
                };
                self.to_router(Packet::Subscribe(routed, None)).await
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                // The router only acknowledges filters that were subscribed, once per filter;
                // MQTT wants exactly one UNSUBACK. We answer PINGREQ ourselves, so a PINGRESP
                // from the router can only be the marker queued behind this UNSUBSCRIBE: when
                // it arrives, the router has processed the unsubscription.
                self.pending_unsubacks.push_back(unsubscribe.pkid);
                self.to_router(Packet::Unsubscribe(unsubscribe, None))
                    .await?;
                self.to_router(Packet::PingReq(PingReq)).await
            }
            Packet::PingReq(_) => {
                wire.queue(Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::PubAck(ack, _) => self.to_router(Packet::PubAck(ack, None)).await,
            Packet::PubRec(ack, _) => self.to_router(Packet::PubRec(ack, None)).await,
            Packet::PubRel(ack, _) => self.to_router(Packet::PubRel(ack, None)).await,
            Packet::PubComp(ack, _) => self.to_router(Packet::PubComp(ack, None)).await,
            Packet::Disconnect(..) => Err(Close::ClientDisconnect),
            other => Err(Close::Protocol(format!(
                "unexpected packet from client: {}",
                packet_name(&other)
            ))),
        }
    }

    /// Relays one router notification; returns whether the router asked to be woken.
    fn handle_router(
        &mut self,
        notification: Notification,
        wire: &mut Wire,
    ) -> Result<bool, Close> {
        match notification {
            Notification::Forward(forward) => {
                wire.queue(Packet::Publish(forward.publish, None));
            }
            Notification::DeviceAck(ack) => match Packet::from(ack) {
                Packet::PubAck(ack, _) => wire.queue(Packet::PubAck(ack, None)),
                Packet::PubRec(ack, _) => wire.queue(Packet::PubRec(ack, None)),
                Packet::PubRel(ack, _) => wire.queue(Packet::PubRel(ack, None)),
                Packet::PubComp(ack, _) => wire.queue(Packet::PubComp(ack, None)),
                Packet::SubAck(ack, _) => self.merge_suback(ack, wire),
                Packet::PingResp(_) => {
                    if let Some(pkid) = self.pending_unsubacks.pop_front() {
                        let unsuback = UnsubAck {
                            pkid,
                            reasons: Vec::new(),
                        };
                        wire.queue(Packet::UnsubAck(unsuback, None));
                    }
                }
                // ConnAck was consumed at link creation; UnsubAck is replaced by ours.
                _ => {}
            },
            Notification::Unschedule => return Ok(true),
            Notification::Disconnect(..) => return Err(Close::RouterGone),
            _ => {}
        }
        Ok(false)
    }

    /// Puts the router's return codes for the allowed filters back between our refusals.
    fn merge_suback(&mut self, ack: SubAck, wire: &mut Wire) {
        let Some(index) = self.pending_subacks.iter().position(|p| p.pkid == ack.pkid) else {
            warn!(
                pkid = ack.pkid,
                "SUBACK from router without a pending SUBSCRIBE"
            );
            return;
        };
        let pending = self.pending_subacks.remove(index);
        let mut routed = ack.return_codes.into_iter();
        let return_codes = pending
            .into_iter()
            .flat_map(|p| p.codes)
            .map(|code| {
                code.or_else(|| routed.next())
                    .unwrap_or(SubscribeReasonCode::Failure)
            })
            .collect();
        wire.queue(Packet::SubAck(
            SubAck {
                pkid: ack.pkid,
                return_codes,
            },
            None,
        ));
    }
}

/// rumqttd's router disconnects a client that subscribes to a `$…` filter other than
/// `$share/…`; such filters are refused with 0x80 instead, whatever the ACL says.
fn router_serves(filter: &str) -> bool {
    !filter.starts_with('$') || filter.starts_with("$share/")
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(..) => "CONNACK",
        Packet::SubAck(..) => "SUBACK",
        Packet::UnsubAck(..) => "UNSUBACK",
        Packet::PingResp(..) => "PINGRESP",
        _ => "other",
    }
}
