//! One task per network connection: CONNECT, authentication, CONNACK, then relaying between
//! the socket and the router with every PUBLISH and SUBSCRIBE authorized on the way in.
//! A device's subscriptions and server-to-device messages never touch the router: the task
//! keeps the filters and delivers what `BrokerHandle::publish` hands it (see `downlink`).
//!
//! rumqttd's router trusts whatever it is given and always answers CONNACK success, so every
//! refusal and return code is decided here. See docs/mqtt.md for the rules.
//!
//! # Layout
//! - this module: [`serve`], a connection's life from CONNECT to the last will; [`Close`].
//! - `framing`: the socket's read and write buffers, parsing and the packets written.
//! - `handshake`: reading CONNECT, client id rules, authentication.
//! - `inflight`: the client's QoS 1/2 packet ids in flight (resends are not new messages).
//! - `mqtt5`: what MQTT 5 adds: negotiated limits, topic aliases, properties, reason codes.
//! - `peer`: device or routed client, and the subscription state kept for each.
//! - `relay`: the session loop between socket, uplink, router and downlink.

mod framing;
mod handshake;
mod inflight;
mod mqtt5;
mod peer;
mod relay;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmq_protocol::Principal;
use rumqttd::protocol::{Connect, ConnectProperties, LastWill, LastWillProperties, Packet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::admission::{PendingBudget, PendingPermit};
use crate::auth::Authenticator;
use crate::auth::Login;
use crate::backoff::LoginBackoff;
use crate::handle::Core;
use crate::metrics::{Metrics, Sampled};
use crate::router::{Expiry, Message};
use crate::session::{Credentials, SessionGuard, router_client_id};
use crate::uplink::{SessionEvent, Uplink};
use crate::{BrokerConfig, Refusal};
use framing::Wire;
use handshake::{ConnectFailure, authenticate, read_connect};
use mqtt5::{Announced, Negotiated, reason};
use peer::{DownlinkRx, Peer};
use relay::Relay;

/// Router notifications (or downlink messages) relayed per socket flush.
const MAX_BATCH: usize = 256;

/// Everything a connection task needs from its broker.
pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) uplink: Arc<dyn Uplink>,
    pub(crate) config: BrokerConfig,
    pub(crate) shutdown: CancellationToken,
    /// Authenticated sessions (`max_connections`).
    pub(crate) slots: Arc<Semaphore>,
    /// Sockets whose CONNECT is not answered yet.
    pub(crate) pending: Arc<PendingBudget>,
    /// Sampled log line for sockets closed over the pending budget.
    pub(crate) pending_log: Sampled,
    /// Failed logins per source address and identity.
    pub(crate) backoff: LoginBackoff,
    /// Sampled log line for logins the authenticator refused.
    pub(crate) refusal_log: Sampled,
    /// Sampled log line for logins the backoff refused.
    pub(crate) throttle_log: Sampled,
}

/// A byte stream MQTT runs on: TCP, TLS over TCP, or WebSocket.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An accepted connection after its transport handshake.
pub(crate) type Stream = Box<dyn Transport>;

/// Why the MQTT connection ended; everything but a client DISCONNECT publishes the will.
#[derive(Debug)]
enum Close {
    ClientDisconnect,
    /// MQTT 5 DISCONNECT 0x04: the client wants its will published.
    ClientDisconnectWithWill,
    Eof,
    Io(io::Error),
    Protocol(String),
    /// An MQTT 5 client broke a rule that has its own reason code (DISCONNECT's).
    Violation(u8, String),
    NotAuthorized(String),
    KeepAliveExpired,
    Kicked,
    Shutdown,
    UplinkFailed(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::ClientDisconnect => f.write_str("client sent DISCONNECT"),
            Close::ClientDisconnectWithWill => {
                f.write_str("client sent DISCONNECT asking for its will")
            }
            Close::Eof => f.write_str("client closed the socket"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::Protocol(reason) | Close::Violation(_, reason) => {
                write!(f, "protocol violation: {reason}")
            }
            Close::NotAuthorized(topic) => write!(f, "publish to `{topic}` not authorized"),
            Close::KeepAliveExpired => f.write_str("keep-alive expired"),
            Close::Kicked => f.write_str("taken over or disconnected by the server"),
            Close::Shutdown => f.write_str("broker shutting down"),
            Close::UplinkFailed(reason) => write!(f, "uplink failed: {reason}"),
        }
    }
}

impl Close {
    /// The reason reported in [`SessionEvent::Disconnected`].
    fn session_reason(&self, taken_over: bool) -> &'static str {
        match self {
            Close::ClientDisconnect | Close::ClientDisconnectWithWill => "clean",
            Close::Eof | Close::Io(_) => "connection lost",
            Close::Protocol(_) | Close::Violation(..) => "protocol violation",
            Close::NotAuthorized(_) => "publish not authorized",
            Close::KeepAliveExpired => "keep-alive expired",
            Close::Kicked if taken_over => "taken over",
            Close::Kicked => "kicked",
            Close::Shutdown => "server shutting down",
            Close::UplinkFailed(_) => "uplink failed",
        }
    }

    /// The reason code of the DISCONNECT an MQTT 5 client is sent, if it is sent one.
    fn disconnect_reason(&self, taken_over: bool) -> Option<u8> {
        Some(match self {
            Close::ClientDisconnect | Close::ClientDisconnectWithWill => return None,
            Close::Eof | Close::Io(_) => return None,
            Close::Protocol(_) => reason::PROTOCOL_ERROR,
            Close::Violation(code, _) => *code,
            Close::NotAuthorized(_) => reason::NOT_AUTHORIZED,
            Close::KeepAliveExpired => reason::KEEP_ALIVE_TIMEOUT,
            Close::Kicked if taken_over => reason::SESSION_TAKEN_OVER,
            // A right was revoked, or an operator disconnected the client.
            Close::Kicked => reason::ADMINISTRATIVE_ACTION,
            Close::Shutdown => reason::SERVER_SHUTTING_DOWN,
            Close::UplinkFailed(_) => reason::SERVER_BUSY,
        })
    }
}

/// How long a DISCONNECT to a closing MQTT 5 client may take to write and the client to
/// close.
const DISCONNECT_WRITE: Duration = Duration::from_secs(1);

/// A client's last will, kept for the connection's life.
struct Will {
    message: Message,
    /// MQTT 5 will delay interval, seconds.
    delay: u32,
    /// MQTT 5 message expiry interval, seconds: counted from when the will is published.
    expiry: Option<u32>,
}

impl Will {
    /// The message to publish now, its expiry counted from now.
    fn message_now(self) -> Message {
        let Will {
            mut message,
            expiry,
            ..
        } = self;
        if let (Some(seconds), Some(properties)) = (expiry, message.properties.as_mut()) {
            Arc::make_mut(properties).expires_at =
                Some(crate::router::now_ms().saturating_add(u64::from(seconds) * 1000));
        }
        message
    }
}

/// Serves an accepted connection's session until it closes.
///
/// A connection's task lives as long as the connection, so its size is what every idle
/// connection costs. Only the relay loop (and what it runs on, [`Live`]) is held for that
/// long: the phases before and after it ([`accept`], [`start`], [`finish`]) run in boxes
/// that are freed when they are done, and arguments are boxed. Async state machines do not
/// overlap the state of phases well and keep their arguments for their whole life: inline,
/// these phases made an idle connection's task 3.4 KB.
pub(crate) async fn serve(shared: &Shared, accepted: Box<Accepted>) {
    let span = tracing::info_span!(
        "mqtt",
        client_id = accepted.login.client_id,
        peer = %accepted.login.peer
    );
    session(shared, accepted).instrument(span).await;
}

/// A connection whose CONNECT was accepted: what its session starts from.
pub(crate) struct Accepted {
    wire: Wire,
    /// The one login both judged at CONNECT and kept with the session, so that a
    /// revocation judges the same chain again.
    login: Login,
    principal: Principal,
    will: Option<Box<Will>>,
    /// Seconds, as the client asked or (MQTT 5) as the broker told it (0: none).
    keep_alive: u16,
    /// Clean session (MQTT 3.1.1) or clean start (MQTT 5): a kept session is not resumed.
    clean_start: bool,
    /// How long the session outlives the connection.
    expiry: Expiry,
    /// What CONNACK tells an MQTT 5 client the broker chose for it: a client identifier
    /// (it sent none) and a keep-alive.
    assigned_client_id: Option<String>,
    server_keep_alive: Option<u16>,
    /// When authentication started: a kick or revocation after it concerns this login.
    authenticated_at: Instant,
    router_id: String,
    slot: OwnedSemaphorePermit,
}

/// A session from CONNACK until it closes: what its relay loop runs on.
struct Live<'s> {
    wire: Wire,
    relay: Relay<'s>,
    guard: SessionGuard<'s>,
    /// Boxed: most connections have none, and every byte here is kept per connection.
    will: Option<Box<Will>>,
    keep_alive: Option<Duration>,
    downlink_rx: Option<DownlinkRx>,
    slot: OwnedSemaphorePermit,
}

/// CONNECT, authentication and the session slot on a stream whose transport handshake is
/// done. `client_certificates` is the chain the client presented in the TLS handshake
/// (empty without one). `pending` (its pre-CONNECT slot) is held until the CONNECT is
/// answered; an accepted session then holds a session slot instead. Returns the accepted
/// connection, or `None` once it was refused (CONNACK with the reason, where MQTT has one)
/// or closed.
pub(crate) async fn accept(
    stream: Stream,
    client_certificates: Vec<CertificateDer<'static>>,
    peer: SocketAddr,
    shared: &Shared,
    pending: PendingPermit,
) -> Option<Box<Accepted>> {
    let mut wire = Wire::new(stream, shared.config.max_packet_size);
    let first = tokio::select! {
        r = timeout(shared.config.connect_timeout, read_connect(&mut wire)) => r,
        () = shared.shutdown.cancelled() => return None,
    };
    let packet = match first {
        Ok(Ok(packet)) => packet,
        Ok(Err(ConnectFailure::UnsupportedProtocol)) => {
            debug!(%peer, "unsupported protocol version");
            wire.connack(reason::UNSUPPORTED_PROTOCOL_VERSION, false, None)
                .await;
            return None;
        }
        Ok(Err(ConnectFailure::Malformed(reason))) => {
            debug!(%peer, reason, "malformed CONNECT");
            return None;
        }
        Ok(Err(ConnectFailure::Closed)) => return None,
        Err(_) => {
            debug!(%peer, "no CONNECT in time");
            return None;
        }
    };
    let (connect, properties, will, will_properties, login) = connect_parts(packet)?;
    // Enhanced authentication (MQTT 5 §4.12) is not supported.
    if properties
        .as_ref()
        .is_some_and(|p| p.authentication_method.is_some())
    {
        debug!(%peer, "enhanced authentication asked for, not supported");
        wire.connack(reason::BAD_AUTHENTICATION_METHOD, false, None)
            .await;
        return None;
    }
    if wire.is_v5() {
        let aliases = shared.config.limits.max_topic_aliases;
        wire.v5 = Some(Box::new(Negotiated::new(properties.as_ref(), aliases)));
    }
    // MQTT 3.1.1: clean session 1 ends with the connection, 0 is kept until replaced.
    // MQTT 5: clean start and the session expiry interval say each.
    let expiry = match (&properties, wire.is_v5()) {
        (_, false) if connect.clean_session => Expiry::WithConnection,
        (_, false) => Expiry::Never,
        (properties, true) => Expiry::from_interval(
            properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0),
        ),
    };

    let Some((client_id, assigned)) = handshake::client_id(&connect, wire.is_v5()) else {
        wire.connack(reason::CLIENT_IDENTIFIER_NOT_VALID, false, None)
            .await;
        return None;
    };
    let (username, password) = handshake::credentials(login);

    // The identity a password is guessed for. A certificate login without a username has
    // none: the TLS handshake already proved the client holds the certificate's key, so
    // there is nothing to guess.
    let identity = username.clone();
    if let Some(identity) = &identity {
        let checked = shared
            .backoff
            .check(peer.ip(), identity, std::time::Instant::now());
        if let Err(throttled) = checked {
            Metrics::count(&shared.core.metrics.logins_throttled);
            let reason = throttled.as_str();
            match shared.throttle_log.hit() {
                Some(refused) => {
                    warn!(%peer, client_id, refused, reason, "MQTT logins refused before authentication (one line per 10 s)")
                }
                None => debug!(%peer, client_id, reason, "login refused before authentication"),
            }
            wire.connack(reason::NOT_AUTHORIZED, false, None).await;
            return None;
        }
    }
    let authenticated_at = Instant::now();
    let login = Login {
        client_id: client_id.clone(),
        username: username.clone(),
        password,
        peer,
        client_certificates,
    };
    let principal = match authenticate(shared, &login).await {
        Ok(principal) => {
            if let Some(identity) = &identity {
                shared.backoff.succeeded(identity);
            }
            principal
        }
        Err(code) => {
            let bad_login = code == Refusal::BadCredentials.return_code()
                || code == Refusal::NotAuthorized.return_code();
            if let (Some(identity), true) = (&identity, bad_login) {
                shared
                    .backoff
                    .failed(peer.ip(), identity, std::time::Instant::now());
                Metrics::count(&shared.core.metrics.login_failures);
            }
            // One line per refusal was 19,014 lines in one flood: sampled.
            match shared.refusal_log.hit() {
                Some(refused) => {
                    info!(%peer, client_id, code, refused, "MQTT connections refused (one line per 10 s)")
                }
                None => debug!(%peer, client_id, code, "connection refused"),
            }
            wire.connack(mqtt5::reason_for_return_code(code), false, None)
                .await;
            return None;
        }
    };
    if let Some(will) = &will {
        let allowed = std::str::from_utf8(&will.topic).is_ok_and(|t| principal.may_publish(t));
        if !allowed {
            info!(%peer, client_id, "last will topic not authorized");
            wire.connack(reason::NOT_AUTHORIZED, false, None).await;
            return None;
        }
    }

    // Only an authenticated client competes for a session slot.
    let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        Metrics::count(&shared.core.metrics.sessions_refused);
        warn!(%peer, client_id, "connection limit reached");
        wire.connack(reason::QUOTA_EXCEEDED, false, None).await;
        return None;
    };
    drop(pending);

    // An MQTT 5 client asking for no keep-alive, or a longer one than the bound, is told
    // the bound.
    let max_keep_alive = shared.config.limits.max_keep_alive;
    let server_keep_alive = (wire.is_v5()
        && (connect.keep_alive == 0 || connect.keep_alive > max_keep_alive))
        .then_some(max_keep_alive);
    let router_id = router_client_id(&principal, username.as_deref(), &client_id);
    Some(Box::new(Accepted {
        wire,
        login,
        principal,
        keep_alive: server_keep_alive.unwrap_or(connect.keep_alive),
        clean_start: connect.clean_session,
        expiry,
        assigned_client_id: assigned.then_some(client_id),
        server_keep_alive,
        authenticated_at,
        router_id,
        slot,
        will: will.map(|will| own_will(will, will_properties.as_ref())),
    }))
}

/// An accepted connection's session: started, relayed until it closes, finished.
async fn session(shared: &Shared, accepted: Box<Accepted>) {
    let Some(mut live) = Box::pin(start(shared, accepted)).await else {
        return;
    };
    let Live {
        wire,
        relay,
        guard,
        keep_alive,
        downlink_rx,
        ..
    } = &mut live;
    let close = relay
        .run(wire, downlink_rx.take(), *keep_alive, guard.kicked())
        .await;
    debug!(reason = %close, "disconnected");
    Box::pin(finish(shared, live, close)).await;
}

/// Registers the session (taking over one of the same key), opens its peer and answers
/// CONNACK; `None` if it was refused meanwhile (kicked or revoked while logging in, or
/// over the persistent session limit).
async fn start(shared: &Shared, accepted: Box<Accepted>) -> Option<Live<'_>> {
    let Accepted {
        mut wire,
        login,
        principal,
        will,
        keep_alive,
        clean_start,
        expiry,
        assigned_client_id,
        server_keep_alive,
        authenticated_at,
        router_id,
        slot,
    } = *accepted;
    let peer = login.peer;
    let credentials = Credentials {
        login,
        principal: principal.clone(),
    };
    let registered = shared
        .core
        .sessions
        .register(&router_id, authenticated_at, credentials, &shared.shutdown)
        .await;
    let Ok(guard) = registered else {
        info!("kicked while logging in");
        wire.connack(reason::NOT_AUTHORIZED, false, None).await;
        return None;
    };
    // A revocation while this login was being judged: judge it again.
    if shared
        .core
        .sessions
        .revoked_since(authenticated_at, &principal)
        && !still_allowed(shared, &guard).await
    {
        info!("revoked while logging in");
        wire.connack(reason::NOT_AUTHORIZED, false, None).await;
        return None;
    }
    // A will delayed by an earlier connection of this session is not published now (MQTT 5
    // §3.1.3.2.2).
    shared.core.cancel_will(&router_id);
    let receive_maximum = wire
        .v5
        .as_ref()
        .map_or(usize::MAX, |v5| usize::from(v5.client_receive_maximum));
    // A device's subscriptions and downlink are served here, not by the router (see
    // `downlink`); everyone else gets a session in the router.
    let (peer_kind, downlink_rx, session_present, resend) = match &principal {
        Principal::Device {
            org_slug,
            device_id,
        } => {
            let (peer, rx, present) = Peer::device(
                &shared.core.downlinks,
                org_slug,
                *device_id,
                clean_start,
                receive_maximum,
            );
            (peer, Some(rx), present, Vec::new())
        }
        Principal::Operator { .. } | Principal::Anonymous => {
            let opened = shared.core.router.open(
                &router_id,
                principal.clone(),
                clean_start,
                expiry,
                receive_maximum,
            );
            let Ok((mailbox, present, resend)) = opened else {
                warn!("persistent session limit reached");
                wire.connack(reason::QUOTA_EXCEEDED, false, None).await;
                return None;
            };
            (Peer::routed(mailbox), None, present, resend)
        }
    };
    let announced = wire.v5.as_ref().map(|v5| Announced {
        receive_maximum: u16::try_from(shared.config.limits.max_awaiting_pubrel)
            .unwrap_or(u16::MAX)
            .max(1),
        maximum_packet_size: u32::try_from(mqtt5::total_len(shared.config.max_packet_size))
            .unwrap_or(u32::MAX),
        topic_alias_maximum: v5.topic_alias_maximum,
        assigned_client_identifier: assigned_client_id,
        server_keep_alive,
    });
    wire.connack(reason::SUCCESS, session_present, announced.as_ref())
        .await;
    let metrics = &shared.core.metrics;
    Metrics::count(match wire.is_v5() {
        true => &metrics.connected_v5,
        false => &metrics.connected_v311,
    });
    let relay = Relay::new(shared, principal.clone(), peer_kind, expiry);
    // What a resumed persistent session must send again goes first, with the relay loop's
    // first flush.
    for packet in resend {
        relay.write_outbound(&mut wire, packet);
    }
    debug!(?principal, session_present, "connected");
    if let Peer::Device {
        org_slug,
        device_id,
        ..
    } = &relay.peer
    {
        shared.uplink.session(SessionEvent::Connected {
            org_slug: org_slug.clone(),
            device_id: *device_id,
            peer,
        });
    }
    let keep_alive = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    Some(Live {
        wire,
        relay,
        guard,
        will,
        keep_alive,
        downlink_rx,
        slot,
    })
}

/// After the relay loop: the peer closes, a held delivery finishes, `Disconnected` is
/// reported, an MQTT 5 client is told why (DISCONNECT with a reason code), the last will is
/// published (every end but a client DISCONNECT; MQTT 5 may delay it), the socket is shut
/// down, and the session's registration and slot are given back.
async fn finish(shared: &Shared, live: Live<'_>, close: Close) {
    let Live {
        mut wire,
        mut relay,
        guard,
        will,
        slot,
        ..
    } = live;
    let expiry = relay.expiry;
    match &mut relay.peer {
        Peer::Routed(routed) => {
            let router = &shared.core.router;
            match expiry {
                Expiry::WithConnection => routed.mailbox.end_with_connection(),
                expiry => routed.mailbox.set_expiry(expiry, &router.journal),
            }
            if let Some((after, attachments)) = router.close(&routed.mailbox) {
                shared
                    .core
                    .expire_later(Arc::clone(&routed.mailbox), after, attachments);
            }
        }
        device => device.close(&shared.core.downlinks, expiry.is_persistent()),
    }
    if let Some(held) = relay.held.take() {
        // Closed (kick, shutdown) while a delivery was in flight. Its effect may already
        // be under way; let it finish so that `Disconnected` is reported after it. It is
        // not acknowledged: the client sends it again.
        let _ = held.delivery.await;
    }
    if let Peer::Device {
        org_slug,
        device_id,
        ..
    } = &relay.peer
    {
        shared.uplink.session(SessionEvent::Disconnected {
            org_slug: org_slug.clone(),
            device_id: *device_id,
            reason: close.session_reason(guard.taken_over()).to_owned(),
        });
    }
    if let Some(code) = close
        .disconnect_reason(guard.taken_over())
        .filter(|_| wire.is_v5())
    {
        wire.queue_disconnect(code, &close.to_string());
        // Written, then what the client still sends is read and dropped until it closes:
        // closing with unread bytes (the rest of a packet too large) resets the connection,
        // and the client would lose the DISCONNECT.
        let _ = timeout(DISCONNECT_WRITE, async {
            if wire.flush().await.is_ok() {
                wire.drain_until_closed().await;
            }
        })
        .await;
    }

    // Every end but a client DISCONNECT publishes the will (MQTT 3.1.1 §3.1.2.5), after
    // everything the connection routed (a message whose PUBACK made the client drop the
    // connection). An MQTT 5 will delay holds it back until the delay or the session ends,
    // whichever is first, unless the session is connected again meanwhile.
    if let Some(will) = will.filter(|_| !matches!(close, Close::ClientDisconnect)) {
        let delay = match expiry {
            Expiry::WithConnection => 0,
            Expiry::After(seconds) => will.delay.min(seconds),
            Expiry::Never => will.delay,
        };
        if delay > 0 {
            let key = guard.key().to_owned();
            shared.core.publish_will_later(
                key,
                Box::new(move || will.message_now()),
                Duration::from_secs(u64::from(delay)),
            );
        } else if let Some(ticket) = shared.core.router.publish(will.message_now(), None) {
            let durable = shared.core.router.journal.durable(ticket);
            match timeout(shared.config.uplink_timeout, durable).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "last will not persisted"),
                Err(_) => warn!("last will not persisted in time"),
            }
        }
    }
    let _ = wire.stream.shutdown().await;
    drop(guard);
    drop(slot);
}

/// The will, kept for the connection's life, in bytes of its own: its topic and message are
/// views of the read buffer the CONNECT arrived in, which they would otherwise keep.
fn own_will(will: LastWill, properties: Option<&LastWillProperties>) -> Box<Will> {
    let carried = properties.map(|p| rumqttd::protocol::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    });
    Box::new(Will {
        message: Message {
            topic: Bytes::copy_from_slice(&will.topic),
            payload: Bytes::copy_from_slice(&will.message),
            qos: will.qos as u8,
            retain: will.retain,
            properties: mqtt5::message_properties(carried.as_ref()),
        },
        delay: properties.and_then(|p| p.delay_interval).unwrap_or(0),
        expiry: properties.and_then(|p| p.message_expiry_interval),
    })
}

/// The parts of a CONNECT the session needs; the packet itself is dropped here.
type ConnectParts = (
    Connect,
    Option<ConnectProperties>,
    Option<LastWill>,
    Option<LastWillProperties>,
    Option<rumqttd::protocol::Login>,
);

fn connect_parts(packet: Packet) -> Option<ConnectParts> {
    match packet {
        Packet::Connect(connect, properties, will, will_properties, login) => {
            Some((connect, properties, will, will_properties, login))
        }
        _ => None,
    }
}

/// Whether the authenticator still accepts a registered session as it was accepted.
async fn still_allowed(shared: &Shared, guard: &SessionGuard<'_>) -> bool {
    let credentials = guard.credentials();
    let answer = timeout(
        shared.config.connect_timeout,
        shared.auth.authenticate(credentials.login.clone()),
    )
    .await;
    matches!(answer, Ok(Ok(principal)) if principal == credentials.principal)
}
