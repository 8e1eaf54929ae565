//! fleetmq's embedded MQTT broker: our own network front end and router, with rumqttd 0.20's
//! MQTT v4 codec on the wire.
//!
//! This crate accepts TCP, TLS and WebSocket connections, decodes MQTT 3.1.1, authenticates
//! through an [`Authenticator`] (the server plugs the store in), answers CONNACK with the
//! right return code, checks every PUBLISH and SUBSCRIBE against [`fleetmq_protocol::acl`],
//! hands every device `up/` message to an [`Uplink`] *before* it is routed and acknowledged,
//! keeps last wills, and routes messages to subscribers through bounded per-session queues,
//! checking each subscriber's read access per message. Retained messages and persistent
//! sessions survive a restart through a [`Persistence`]. docs/mqtt.md lists the rules.
//!
//! ```text
//!  devices ──TCP── accept loop ── connection task ── Router::publish ──▶ mailboxes ──▶ subscribers' tasks
//!                                   │  auth, ACL, will        │ retained, persistent sessions
//!                  Uplink::deliver ◀┘  PUBACK once taken      └▶ journal ──▶ Persistence
//!  bridge / API ── BrokerHandle ── publish / link / disconnect_device
//!                       └─ down/ messages ──▶ the device's connection task (not the router)
//! ```
//!
//! # Layout
//! - [`config`]: the settings, [`BrokerConfig`] and [`Limits`].
//! - `admission`: the pre-CONNECT budget (in all and per source address).
//! - `metrics`: counters of what was refused, and sampled log lines.
//! - `backoff`: failed-login backoff per source address and per identity.
//! - [`auth`]: the [`Authenticator`] boundary, [`Login`] and [`Refusal`].
//! - [`error`]: the crate's error type, [`BrokerError`].
//! - [`uplink`]: the [`Uplink`] sink for device messages and [`SessionEvent`]s.
//! - [`persistence`]: the [`Persistence`] boundary for retained messages and persistent
//!   sessions.
//! - [`tls`]: [`TlsIdentity`], the TLS listener's certificate (from files or generated).
//! - `client_certificate`: the TLS listener asks clients for a certificate and checks they
//!   hold its key; the [`Authenticator`] judges the chain.
//! - `listener`: binding, accept loops, TLS and WebSocket handshakes (in the connection's
//!   task).
//! - `websocket`: MQTT over WebSocket, `ws://` and `wss://` (`/mqtt`, subprotocol `mqtt`), as a
//!   byte stream.
//! - `router`: subscriptions, sessions' bounded queues, retained messages, the journal.
//! - `session`: live sessions by client id (takeover ordering, kicking devices).
//! - `connection`: the per-connection task.
//! - `downlink`: server-to-device messages, delivered by the front end (device id → live
//!   connection), not through the router.
//! - [`handle`]: [`BrokerHandle`], in-process publish and subscribe ([`LocalLink`]).

mod admission;
pub mod auth;
mod backoff;
mod client_certificate;
pub mod config;
mod connection;
mod descriptors;
mod downlink;
pub mod error;
pub mod handle;
mod listener;
mod metrics;
pub mod persistence;
pub mod revocation;
mod router;
mod session;
pub mod tls;
pub mod uplink;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AuthFuture, Authenticator, Login, Refusal};
pub use config::{BrokerConfig, Limits, TlsListener};
pub use error::BrokerError;
pub use handle::{BrokerHandle, LocalLink, Message};
pub use persistence::{Persistence, PersistenceFuture, StateChange, StoredState};
pub use revocation::Affected;
pub use tls::TlsIdentity;
/// The DER certificate type of [`Login::client_certificates`], so that authenticators need
/// no TLS crate of their own to name it.
pub use tokio_rustls::rustls::pki_types::CertificateDer;
pub use uplink::{Delivered, SessionEvent, Uplink, UplinkFuture, UplinkMessage, UplinkRefusal};

use connection::Shared;
use handle::Core;

/// The most sessions the broker's maps have room for from the start (beyond it they grow).
const PRESIZED_SESSIONS: usize = 1 << 16;

/// A bound, not yet running broker. `bind` then `run`; take a [`BrokerHandle`] and plug in
/// the [`Uplink`] in between.
pub struct Broker {
    listeners: Vec<(TcpListener, listener::Kind)>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    config: BrokerConfig,
    auth: Arc<dyn Authenticator>,
    uplink: Arc<dyn Uplink>,
    /// The journal writer, once a persistence is plugged in, and what stops it.
    writer: Option<tokio::task::JoinHandle<()>>,
    writer_stop: CancellationToken,
    core: Arc<Core>,
}

impl Broker {
    /// Binds the MQTT listeners (plain TCP, and TLS and WebSocket if configured). Must be
    /// called inside a tokio runtime.
    pub async fn bind(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
    ) -> Result<Broker, BrokerError> {
        let limits = &config.limits;
        if limits.login_failures_per_address == 0 || limits.login_failures_per_identity == 0 {
            return Err(BrokerError::Config(
                "the login backoff must allow at least one failed login",
            ));
        }
        if limits.max_queued_messages == 0
            || limits.max_queued_bytes == 0
            || limits.max_inflight_messages == 0
        {
            return Err(BrokerError::Config(
                "a session must be able to queue and send at least one message",
            ));
        }
        if config.max_connections == 0 {
            return Err(BrokerError::Config("max_connections must be at least 1"));
        }
        if limits.max_pending_connections == 0 || limits.max_pending_per_address == 0 {
            return Err(BrokerError::Config(
                "the pre-CONNECT budget must admit at least one socket",
            ));
        }
        let (plain, local_addr) = listener::bind(config.mqtt_addr).await?;
        let mut listeners = vec![(plain, listener::Kind::Plain)];
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let acceptor = tls.identity.acceptor()?;
            let (bound, addr) = listener::bind(tls.addr).await?;
            listeners.push((bound, listener::Kind::Tls(acceptor)));
            tls_addr = Some(addr);
        }
        let mut ws_addr = None;
        if let Some(addr) = config.ws_addr {
            let (bound, addr) = listener::bind(addr).await?;
            listeners.push((bound, listener::Kind::WebSocket));
            ws_addr = Some(addr);
        }
        let mut wss_addr = None;
        if let Some(addr) = config.wss_addr {
            let Some(tls) = &config.tls else {
                return Err(BrokerError::Config(
                    "MQTT over secure WebSocket uses the TLS listener's certificate: configure `tls` too",
                ));
            };
            let acceptor = tls.identity.acceptor()?;
            let (bound, addr) = listener::bind(addr).await?;
            listeners.push((bound, listener::Kind::SecureWebSocket(acceptor)));
            wss_addr = Some(addr);
        }
        // The session maps are sized for the connection limit (at most PRESIZED_SESSIONS):
        // growing one rehashes every client id under its lock while connects wait.
        let presized = config.max_connections.min(PRESIZED_SESSIONS);
        // And the descriptor table for the connection limit: growing it stalls accepts.
        descriptors::reserve(&listeners[0].0, config.max_connections);
        let router = router::Router::new(
            router::RouterLimits {
                queue: router::QueueLimits {
                    messages: limits.max_queued_messages,
                    bytes: limits.max_queued_bytes,
                    inflight: limits.max_inflight_messages,
                },
                retained: limits.max_retained_messages,
                persistent_sessions: limits.max_persistent_sessions,
            },
            presized,
        );
        let core = Arc::new(Core {
            router,
            sessions: session::Sessions::with_capacity(presized),
            downlinks: downlink::Downlinks::with_capacity(presized),
            auth: Arc::clone(&auth),
            metrics: metrics::Metrics::default(),
            delayed_wills: Default::default(),
        });
        tracing::info!(addr = %local_addr, tls = ?tls_addr, websocket = ?ws_addr, secure_websocket = ?wss_addr, "MQTT listeners bound");
        Ok(Broker {
            listeners,
            local_addr,
            tls_addr,
            ws_addr,
            wss_addr,
            config,
            auth,
            uplink: Arc::new(uplink::NoUplink),
            writer: None,
            writer_stop: CancellationToken::new(),
            core,
        })
    }

    /// Sends every device `up/` message and session event to `uplink`, which must take each
    /// message before the device's PUBACK/PUBREC (see [`Uplink`]). Without one, device
    /// messages are only routed and session events are dropped.
    ///
    /// Set after [`bind`](Self::bind) because the sink (the bridge) usually needs the
    /// broker's [`handle`](Self::handle) to exist first.
    pub fn with_uplink(mut self, uplink: Arc<dyn Uplink>) -> Broker {
        self.uplink = uplink;
        self
    }

    /// Keeps retained messages and persistent sessions in `persistence`, so that they
    /// survive a restart: loads what it holds now, and from now on writes every change to it
    /// (group-committed; a QoS 1/2 message queued for a persistent session is acknowledged
    /// once written). Without one, they live in memory only. Call before
    /// [`run`](Self::run), which stops the writer once every connection is closed.
    pub async fn with_persistence(
        mut self,
        persistence: Arc<dyn Persistence>,
    ) -> Result<Broker, BrokerError> {
        let state = persistence.load().await?;
        tracing::info!(
            retained = state.retained.len(),
            sessions = state.sessions.len(),
            queued = state.queued.len(),
            "MQTT state restored"
        );
        self.core.router.restore(state);
        for (mailbox, after, attachments) in self.core.router.detached_expiring() {
            self.core.expire_later(mailbox, after, attachments);
        }
        let journal = Arc::clone(&self.core.router.journal);
        journal.enable();
        let writer =
            tokio::spawn(journal.write(Arc::clone(&persistence), self.writer_stop.clone()));
        self.writer = Some(writer);
        Ok(self)
    }

    /// The address the plain MQTT listener is bound to (the real port when configured with
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the MQTT-over-TLS listener, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The address of the MQTT-over-WebSocket listener (path `/mqtt`), if configured.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The address of the MQTT-over-secure-WebSocket listener (`wss://`, path `/mqtt`), if
    /// configured.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// A handle for in-process publishing, subscribing and kicking devices. Stays usable
    /// after [`run`](Self::run) returns (the router outlives the listener).
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            core: Arc::clone(&self.core),
        }
    }

    /// Accepts connections until `shutdown` is cancelled, then stops accepting, closes every
    /// connection (publishing their last wills) and returns once they are gone.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Arc::new(Shared {
            core: Arc::clone(&self.core),
            auth: self.auth,
            uplink: self.uplink,
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            // One session limit and one pre-CONNECT budget across all listeners.
            slots: Arc::new(Semaphore::new(self.config.max_connections)),
            pending: Arc::new(admission::PendingBudget::new(
                self.config.limits.max_pending_connections,
                self.config.limits.max_pending_per_address,
            )),
            pending_log: metrics::Sampled::default(),
            backoff: backoff::LoginBackoff::new(backoff::Policy {
                failures_per_address: self.config.limits.login_failures_per_address,
                failures_per_minute: self.config.limits.login_failures_per_minute,
                failures_per_identity: self.config.limits.login_failures_per_identity,
                max_backoff: self.config.limits.login_backoff_max,
            }),
            refusal_log: metrics::Sampled::default(),
            throttle_log: metrics::Sampled::default(),
        });
        let tasks = TaskTracker::new();
        let accept_loops: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(bound, kind)| {
                tokio::spawn(listener::accept_loop(
                    bound,
                    kind,
                    Arc::clone(&shared),
                    tasks.clone(),
                ))
            })
            .collect();
        for accept_loop in accept_loops {
            if let Err(e) = accept_loop.await {
                tracing::error!(error = %e, "MQTT accept loop failed");
            }
        }
        // Sessions wait on their own kick only (not on the shutdown token): tell them.
        self.core.sessions.stop_all();
        tasks.close();
        tasks.wait().await;
        // Every connection is closed and its will routed: write what is left.
        self.writer_stop.cancel();
        if let Some(writer) = self.writer
            && let Err(e) = writer.await
        {
            tracing::error!(error = %e, "MQTT state writer failed");
        }
        tracing::info!("MQTT listener stopped");
    }
}
