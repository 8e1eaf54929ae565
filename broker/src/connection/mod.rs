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
//! - `framing`: the socket's MQTT v4 read and write buffers.
//! - `handshake`: reading CONNECT, client id rules, authentication, return codes.
//! - `inflight`: the client's QoS 1/2 packet ids in flight (resends are not new messages).
//! - `peer`: device or routed client, and the subscription state kept for each.
//! - `relay`: the session loop between socket, uplink, router and downlink.

mod framing;
mod handshake;
mod inflight;
mod peer;
mod relay;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmq_protocol::Principal;
use rumqttd::protocol::{Connect, ConnectReturnCode, LastWill, Packet};
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
use crate::router::Message;
use crate::session::{Credentials, SessionGuard, router_client_id};
use crate::uplink::{SessionEvent, Uplink};
use crate::{BrokerConfig, Refusal};
use framing::Wire;
use handshake::{ConnectFailure, authenticate, read_connect, return_code};
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
    Eof,
    Io(io::Error),
    Protocol(String),
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
            Close::Eof => f.write_str("client closed the socket"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::Protocol(reason) => write!(f, "protocol violation: {reason}"),
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
            Close::ClientDisconnect => "clean",
            Close::Eof | Close::Io(_) => "connection lost",
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
    will: Option<Box<LastWill>>,
    /// Seconds, as the client asked (0: none).
    keep_alive: u16,
    clean_session: bool,
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
    will: Option<Box<LastWill>>,
    clean_session: bool,
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
            wire.connack(ConnectReturnCode::RefusedProtocolVersion, false)
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
    let (connect, will, login) = connect_parts(packet)?;

    let Some(client_id) = handshake::client_id(&connect) else {
        wire.connack(ConnectReturnCode::ClientIdentifierNotValid, false)
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
            wire.connack(ConnectReturnCode::NotAuthorized, false).await;
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
            wire.connack(return_code(code), false).await;
            return None;
        }
    };
    if let Some(will) = &will {
        let allowed = std::str::from_utf8(&will.topic).is_ok_and(|t| principal.may_publish(t));
        if !allowed {
            info!(%peer, client_id, "last will topic not authorized");
            wire.connack(ConnectReturnCode::NotAuthorized, false).await;
            return None;
        }
    }

    // Only an authenticated client competes for a session slot.
    let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        Metrics::count(&shared.core.metrics.sessions_refused);
        warn!(%peer, client_id, "connection limit reached");
        wire.connack(ConnectReturnCode::ServiceUnavailable, false)
            .await;
        return None;
    };
    drop(pending);

    let router_id = router_client_id(&principal, username.as_deref(), &client_id);
    Some(Box::new(Accepted {
        wire,
        login,
        principal,
        keep_alive: connect.keep_alive,
        clean_session: connect.clean_session,
        authenticated_at,
        router_id,
        slot,
        will: will.map(own_will),
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
        clean_session,
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
        wire.connack(ConnectReturnCode::NotAuthorized, false).await;
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
        wire.connack(ConnectReturnCode::NotAuthorized, false).await;
        return None;
    }
    // A device's subscriptions and downlink are served here, not by the router (see
    // `downlink`); everyone else gets a session in the router.
    let (peer_kind, downlink_rx, session_present, resend) = match &principal {
        Principal::Device {
            org_slug,
            device_id,
        } => {
            let (peer, rx, present) =
                Peer::device(&shared.core.downlinks, org_slug, *device_id, clean_session);
            (peer, Some(rx), present, Vec::new())
        }
        Principal::Operator { .. } | Principal::Anonymous => {
            let opened = shared
                .core
                .router
                .open(&router_id, principal.clone(), clean_session);
            let Ok((mailbox, present, resend)) = opened else {
                warn!("persistent session limit reached");
                wire.connack(ConnectReturnCode::ServiceUnavailable, false)
                    .await;
                return None;
            };
            (Peer::routed(mailbox), None, present, resend)
        }
    };
    wire.connack(ConnectReturnCode::Success, session_present)
        .await;
    // What a resumed persistent session must send again goes first, with the relay loop's
    // first flush.
    for packet in resend {
        relay::write_outbound(&mut wire, packet);
    }
    debug!(?principal, session_present, "connected");
    if let Peer::Device {
        org_slug,
        device_id,
        ..
    } = &peer_kind
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
        relay: Relay::new(shared, principal, peer_kind),
        guard,
        will,
        clean_session,
        keep_alive,
        downlink_rx,
        slot,
    })
}

/// After the relay loop: the peer closes, a held delivery finishes, `Disconnected` is
/// reported, the last will is published (every end but a client DISCONNECT), the socket is
/// shut down, and the session's registration and slot are given back.
async fn finish(shared: &Shared, live: Live<'_>, close: Close) {
    let Live {
        mut wire,
        mut relay,
        guard,
        will,
        clean_session,
        slot,
        ..
    } = live;
    match &mut relay.peer {
        Peer::Routed(routed) => shared.core.router.close(&routed.mailbox),
        device => device.close(&shared.core.downlinks, clean_session),
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

    // Every end but a client DISCONNECT publishes the will (MQTT 3.1.1 §3.1.2.5), after
    // everything the connection routed (a message whose PUBACK made the client drop the
    // connection).
    if let Some(will) = will.filter(|_| !matches!(close, Close::ClientDisconnect)) {
        let LastWill {
            topic,
            message,
            qos,
            retain,
        } = *will;
        let will = Message {
            topic,
            payload: message,
            qos: qos as u8,
            retain,
        };
        if let Some(ticket) = shared.core.router.publish(will) {
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
fn own_will(will: LastWill) -> Box<LastWill> {
    Box::new(LastWill {
        topic: Bytes::copy_from_slice(&will.topic),
        message: Bytes::copy_from_slice(&will.message),
        qos: will.qos,
        retain: will.retain,
    })
}

/// The parts of a CONNECT the session needs; the packet itself is dropped here.
fn connect_parts(
    packet: Packet,
) -> Option<(Connect, Option<LastWill>, Option<rumqttd::protocol::Login>)> {
    match packet {
        Packet::Connect(connect, _, will, _, login) => Some((connect, will, login)),
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
