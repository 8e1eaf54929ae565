//! fleetmq's embedded MQTT broker: our own network front end over rumqttd 0.20's router.
//!
//! rumqttd's router does the hard part (retained messages, QoS 1/2 state, persistent
//! sessions, fan-out). Its stock network layer can only say yes or no to a username, so we
//! replace it: this crate accepts TCP connections, decodes MQTT 3.1.1 with rumqttd's v4 codec,
//! authenticates through an [`Authenticator`] (the server plugs the store in), answers
//! CONNACK with the right return code, checks every PUBLISH and SUBSCRIBE against
//! [`fleetmq_protocol::acl`], hands every device `up/` message to an [`Uplink`] *before* it is
//! routed and acknowledged, keeps last wills itself, and relays the rest to the router.
//! docs/mqtt.md lists the rules and the rumqttd gaps worked around.
//!
//! ```text
//!  devices ──TCP── accept loop ── connection task ──(feeder thread)──▶ rumqttd Router
//!                                   │ ▲  auth, ACL, will       ◀── notifications ──┘
//!                  Uplink::deliver ◀┘ └ PUBACK once delivered and routed
//!  bridge / API ── BrokerHandle ── publish / link / disconnect_device
//!                       └─ down/ messages ──▶ the device's connection task (not the router)
//! ```
//!
//! # Layout
//! - [`config`]: the settings, [`BrokerConfig`], [`Limits`] and [`RouterSizing`].
//! - `admission`: the pre-CONNECT budget (in all and per source address).
//! - `metrics`: counters of what was refused, and sampled log lines.
//! - `backoff`: failed-login backoff per source address and per identity.
//! - [`auth`]: the [`Authenticator`] boundary, [`Login`] and [`Refusal`].
//! - [`error`]: the crate's error type, [`BrokerError`].
//! - [`uplink`]: the [`Uplink`] sink for device messages and [`SessionEvent`]s.
//! - [`tls`]: [`TlsIdentity`], the TLS listener's certificate (from files or generated).
//! - `client_certificate`: the TLS listener asks clients for a certificate and checks they
//!   hold its key; the [`Authenticator`] judges the chain.
//! - `listener`: binding, accept loops, TLS and WebSocket handshakes (in the connection's
//!   task).
//! - `websocket`: MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`) as a byte stream.
//! - `router`: starting the router, building links, the feeder thread.
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
use std::sync::{Arc, Mutex};

use rumqttd::Notification;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AuthFuture, Authenticator, Login, Refusal};
pub use config::{BrokerConfig, Limits, RouterSizing, TlsListener};
pub use error::BrokerError;
pub use handle::{BrokerHandle, LocalLink, Message};
pub use persistence::{Persistence, PersistenceFuture, StateChange, StoredState};
pub use revocation::Affected;
pub use tls::TlsIdentity;
/// The DER certificate type of [`Login::client_certificates`], so that authenticators need
/// no TLS crate of their own to name it.
pub use tokio_rustls::rustls::pki_types::CertificateDer;
pub use uplink::{SessionEvent, Uplink, UplinkFuture, UplinkMessage};

use connection::Shared;
use handle::Core;
use session::internal_client_id;

/// Packets that may wait for the feeder thread before connection tasks feel back-pressure.
const FEEDER_QUEUE: usize = 4096;

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
    persistence: Arc<dyn Persistence>,
    core: Arc<Core>,
}

impl Broker {
    /// Binds the MQTT listeners (plain TCP, and TLS and WebSocket if configured) and starts rumqttd's
    /// router (a dedicated thread) with the configured log sizing. Must be called inside a
    /// tokio runtime.
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
        if limits.max_pending_connections == 0 || limits.max_pending_per_address == 0 {
            return Err(BrokerError::Config(
                "the pre-CONNECT budget must admit at least one socket",
            ));
        }
        // Bind first: a busy port must not leave a router thread behind (it cannot be stopped).
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
        let links = router::spawn_router(config.max_connections, &config.router)?;
        let (tx, mut rx, _) =
            router::build_link(&links, internal_client_id("publisher"), true).await?;
        // The publisher link never subscribes, but answer the router anyway so that it
        // cannot stall on us.
        tokio::spawn(async move {
            while let Ok(notification) = rx.next().await {
                let woken = match notification {
                    Some(Notification::Unschedule) => rx.wake().await,
                    _ => Ok(()),
                };
                if woken.is_err() {
                    break;
                }
            }
        });
        let core = Arc::new(Core {
            links,
            feeder: router::Feeder::spawn(FEEDER_QUEUE),
            sessions: session::Sessions::default(),
            publisher: Arc::new(Mutex::new(tx)),
            downlinks: downlink::Downlinks::default(),
            auth: Arc::clone(&auth),
            metrics: metrics::Metrics::default(),
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
            persistence: Arc::new(persistence::InMemory),
            core,
        })
    }

    /// Sends every device `up/` message and session event to `uplink`, which must take each
    /// message before the device's PUBACK/PUBREC (see [`Uplink`]). Without one, device
    /// messages are only routed (acknowledged once in the router's memory) and session events
    /// are dropped.
    ///
    /// Set after [`bind`](Self::bind) because the sink (the bridge) usually needs the
    /// broker's [`handle`](Self::handle) to exist first.
    pub fn with_uplink(mut self, uplink: Arc<dyn Uplink>) -> Broker {
        self.uplink = uplink;
        self
    }

    /// Keeps retained messages and persistent sessions in `persistence`, so that they
    /// survive a restart; what it holds is loaded when [`run`](Self::run) starts. Without
    /// one, they live in memory only.
    pub fn with_persistence(mut self, persistence: Arc<dyn Persistence>) -> Broker {
        self.persistence = persistence;
        self
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
        tasks.close();
        tasks.wait().await;
        tracing::info!("MQTT listener stopped");
    }
}
