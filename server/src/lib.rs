//! The fleetmq server: opens the store, starts the embedded broker with the bridge's
//! authenticator, and serves the REST API — all stopped by one cancellation token.
//!
//! Every task the server spawns goes through one [`TaskTracker`], and the bridge's
//! long-running tasks are awaited through their handles, so [`Server::shutdown`] returns only
//! once none of them still holds a store handle: the redb file is released and the same data
//! directory can be opened again at once (a restart in the same process). Tasks the bridge
//! and the broker detach inside themselves are theirs to track.
//!
//! `main.rs` is the thin CLI around [`Server`]; the integration tests start [`Server`]
//! directly on free ports.
//!
//! # Layout
//! - [`config`] — [`Config`]: where to listen and keep data.
//! - [`bootstrap`] — the first start: the `admin` superuser and its token.
//! - [`http`] — the HTTP listener: connection caps and timeouts.
//! - [`leadership`] — which node runs the device plane when several share a PostgreSQL store.
//! - [`forwarding`] — device calls a standby node forwards to the device-plane node.

pub mod bootstrap;
pub mod config;
pub mod forwarding;
pub mod http;
pub mod leadership;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use fleetmq_api::{AppState, DeviceCallError, DeviceCallFuture, Hooks};
use fleetmq_bridge::auth::StoreAuthenticator;
use fleetmq_bridge::external::{self, ExternalBroker, ExternalPlane};
use fleetmq_bridge::{
    Bridge, BridgeConfig, BrokerState, CallError, Metrics, Mqtt, MqttPlane, TelemetryIngest,
};
use fleetmq_broker::{Broker, BrokerConfig, TlsIdentity, TlsListener};
use fleetmq_protocol::Call;
use fleetmq_store::Store;
use fleetmq_store::{Command, DeviceId, StartedUpgrades, UpgradeOperation};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bootstrap::FirstStart;
pub use config::Config;
use leadership::{Held, Leadership};

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    mqtts_addr: Option<SocketAddr>,
    mqtt_ws_addr: Option<SocketAddr>,
    mqtt_wss_addr: Option<SocketAddr>,
    first_start: Option<FirstStart>,
    shutdown: CancellationToken,
    /// The broker, the HTTP server and the bridge's own tasks: they run until the token is
    /// cancelled; awaited one by one so a panic among them is logged.
    services: Vec<JoinHandle<()>>,
    /// The REST plane's threads; dropped last.
    http_runtime: http::HttpRuntime,
    /// Everything the server spawns, including the short tasks the API's hooks start; closed
    /// and waited for on shutdown.
    tasks: TaskTracker,
    /// Why the server stopped on its own (it lost the device-plane lease), if it did.
    stopped_because: Arc<OnceLock<String>>,
}

impl Server {
    /// Opens the store, creates the first admin if the store is new, binds both listeners and
    /// starts serving. Returns once everything accepts connections.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let (data_dir, options) = (config.data_dir.clone(), config.store.clone());
        let store = tokio::task::spawn_blocking(move || Store::open_with(&data_dir, &options))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        let first_start = bootstrap::ensure_admin(&store, config.admin_password.clone()).await?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        // Served on the REST plane's own threads (registered there by `http::serve`).
        let listener = listener.into_std()?;
        let http_runtime =
            http::HttpRuntime::start(config.http.workers).context("starting the HTTP runtime")?;

        let mut bridge_config = config.bridge.clone();
        if bridge_config.rollout.public_url.is_empty() {
            // Devices download firmware from the API; a wildcard bind is reached on loopback.
            let mut addr = http_addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            bridge_config.rollout.public_url = format!("http://{addr}");
        }
        bridge_config.presence_from_messages = config.external_broker.is_some();

        // On PostgreSQL several nodes may share the store: the device plane runs on the one
        // holding its lease (`leadership`).
        let leadership = config.store.postgres.is_some().then(|| {
            Leadership::new(
                store.clone(),
                config.lease_lifetime,
                Some(bridge_config.rollout.public_url.clone()),
            )
        });
        let running: Arc<OnceLock<DevicePlane>> = Arc::new(OnceLock::new());
        let stopped_because: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let mut services = Vec::new();
        // This node's share of the telemetry, standby or not.
        let shared_uplink = match &config.external_broker {
            Some(external) if external.shared_uplink => {
                let (shared, tasks) =
                    SharedUplink::start(external, &store, &bridge_config, &shutdown)?;
                services.extend(tasks);
                Some(shared)
            }
            _ => None,
        };
        let starter = PlaneStarter {
            store: store.clone(),
            telemetry: shared_uplink.as_ref().map(|shared| shared.ingest.clone()),
            bridge_config,
            mosquitto_files: config.mosquitto_files.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        };
        let addrs = match (&leadership, &config.external_broker) {
            // Hot standby: the REST API serves at once; the device plane starts once this node
            // holds the lease.
            (Some(leadership), Some(external)) => {
                let plane = Plane::external(external).await?;
                let addrs = plane.addrs();
                let (leadership, running, stopped_because) = (
                    leadership.clone(),
                    Arc::clone(&running),
                    Arc::clone(&stopped_because),
                );
                services.push(tasks.spawn(async move {
                    let shutdown = starter.shutdown.clone();
                    let Some(lease) = leadership.acquire(&shutdown).await else {
                        return;
                    };
                    let (device_plane, plane_services) = match starter.start(plane).await {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = stopped_because.set(format!("{e:#}"));
                            tracing::error!(error = %format!("{e:#}"), "cannot start the device plane");
                            shutdown.cancel();
                            return;
                        }
                    };
                    let _ = running.set(device_plane);
                    // Only the API's hooks keep the bridge: its tasks end once they drop it,
                    // and this task waits for them.
                    drop(running);
                    run_device_plane(&leadership, lease, plane_services, &shutdown, &stopped_because)
                        .await;
                }));
                addrs
            }
            // The embedded broker's clients connect to this node's own port: it waits for
            // the lease before it binds MQTT or serves HTTP (a cold standby; its HTTP port is
            // bound, and connections wait there).
            (Some(leadership), None) => {
                let Some(lease) = leadership.acquire(&shutdown).await else {
                    anyhow::bail!("stopped while waiting for the device-plane lease");
                };
                let plane = Plane::embedded(&config, &store).await?;
                let addrs = plane.addrs();
                let (device_plane, plane_services) = starter.start(plane).await?;
                let _ = running.set(device_plane);
                let (leadership, stop, stopped_because) = (
                    leadership.clone(),
                    shutdown.clone(),
                    Arc::clone(&stopped_because),
                );
                services.push(tasks.spawn(async move {
                    run_device_plane(&leadership, lease, plane_services, &stop, &stopped_because)
                        .await;
                }));
                addrs
            }
            (None, external) => {
                let plane = match external {
                    Some(external) => Plane::external(external).await?,
                    None => Plane::embedded(&config, &store).await?,
                };
                let addrs = plane.addrs();
                let (device_plane, plane_services) = starter.start(plane).await?;
                let _ = running.set(device_plane);
                services.extend(plane_services);
                addrs
            }
        };
        // A standby forwards device calls to the device-plane node, which takes them here.
        let forwarded = leadership.is_some().then(|| {
            forwarding::router(
                Arc::clone(&running),
                store.clone(),
                usize::try_from(config.api.firmware_upload_limit.saturating_mul(2))
                    .unwrap_or(usize::MAX),
            )
        });
        let hooks = ServerHooks {
            running,
            shared_uplink,
            leadership,
            store: store.clone(),
            call_wait: config.bridge.device_call_timeout + Duration::from_secs(5),
            tasks: tasks.clone(),
        };
        let state = AppState::new(store, config.api.clone(), Arc::new(hooks));
        // Live event streams end with the server (the HTTP server waits for open responses).
        let api_stopping = state.stopping();
        let server_stopping = shutdown.clone();
        tasks.spawn(async move {
            server_stopping.cancelled().await;
            api_stopping.cancel();
        });
        let mut app =
            fleetmq_api::router(state).merge(fleetmq_console::router(config.console.clone()));
        if let Some(forwarded) = forwarded {
            app = app.merge(forwarded);
        }
        let Addrs {
            mqtt_addr,
            mqtts_addr,
            mqtt_ws_addr,
            mqtt_wss_addr,
        } = addrs;

        let stop = shutdown.clone();
        let limits = config.http;
        let serve = http::serve(listener, app, limits, stop);
        services.push(tasks.spawn_on(serve, http_runtime.handle()));
        tracing::info!(%http_addr, %mqtt_addr, ?mqtts_addr, ?mqtt_ws_addr, ?mqtt_wss_addr, "fleetmq is serving");
        Ok(Server {
            http_addr,
            mqtt_addr,
            mqtts_addr,
            mqtt_ws_addr,
            mqtt_wss_addr,
            first_start,
            shutdown,
            services,
            http_runtime,
            tasks,
            stopped_because,
        })
    }

    /// Where the REST API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the MQTT broker listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Where MQTT over TLS listens, if enabled.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtts_addr
    }

    /// Where MQTT over WebSocket listens (path `/mqtt`), if enabled.
    pub fn mqtt_ws_addr(&self) -> Option<SocketAddr> {
        self.mqtt_ws_addr
    }

    /// Where MQTT over secure WebSocket listens (`wss://`, path `/mqtt`), if enabled.
    pub fn mqtt_wss_addr(&self) -> Option<SocketAddr> {
        self.mqtt_wss_addr
    }

    /// The admin credentials created on this start, if the store was new.
    pub fn first_start(&self) -> Option<&FirstStart> {
        self.first_start.as_ref()
    }

    /// Why the server stopped by itself rather than being asked to (it could not keep the
    /// device-plane lease, or could not start the device plane once it had it).
    /// Readable after [`Server::wait`] too.
    pub fn failure(&self) -> Failure {
        Failure(Arc::clone(&self.stopped_because))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, drains HTTP requests in flight, closes MQTT sessions, and waits until
    /// the store is released (every write was already committed durably).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server has stopped (after the shutdown token is cancelled): every task
    /// it spawned has ended and dropped what it held, so the store is released.
    pub async fn wait(self) {
        for task in self.services {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "server task failed");
            }
        }
        // The HTTP server has drained, so no hook can spawn any more; the tasks hooks
        // spawned before may still be running (a command being sent holds the store).
        self.tasks.close();
        self.tasks.wait().await;
        drop(self.http_runtime);
    }
}

/// The TLS listener's certificate: the configured files, or the one generated on the first
/// start (kept in `<data_dir>/tls/`, valid for localhost and the TLS and secure WebSocket
/// listen addresses).
async fn tls_identity(config: &Config, addr: SocketAddr) -> anyhow::Result<TlsIdentity> {
    let files = config.mqtt_tls_files.clone();
    let dir = config.data_dir.join("tls");
    let wss_ip = config.mqtt_wss_addr.map(|wss| wss.ip());
    tokio::task::spawn_blocking(move || match files {
        Some((cert, key)) => TlsIdentity::from_files(&cert, &key),
        None => {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            // The secure WebSocket listener presents the same certificate.
            for ip in std::iter::once(addr.ip()).chain(wss_ip) {
                if !ip.is_unspecified() && !ip.is_loopback() && !names.contains(&ip.to_string()) {
                    names.push(ip.to_string());
                }
            }
            TlsIdentity::load_or_generate(&dir, &names)
        }
    })
    .await
    .context("loading the TLS certificate")?
    .context("loading the TLS certificate")
}

/// Where MQTT clients connect.
struct Addrs {
    mqtt_addr: SocketAddr,
    mqtts_addr: Option<SocketAddr>,
    mqtt_ws_addr: Option<SocketAddr>,
    mqtt_wss_addr: Option<SocketAddr>,
}

/// This node's member of the telemetry share group (`--mqtt-shared-uplink`): its client of
/// the external broker and the ingest storing what the broker hands it.
struct SharedUplink {
    plane: Arc<ExternalPlane>,
    ingest: TelemetryIngest,
}

impl SharedUplink {
    /// Connects and serves the member until `shutdown`; returns it with its tasks.
    fn start(
        external: &ExternalBroker,
        store: &Store,
        bridge: &BridgeConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(SharedUplink, Vec<JoinHandle<()>>)> {
        let (plane, connection) =
            external::connect_shared(external).map_err(|e| anyhow::anyhow!("{e}"))?;
        let plane = Arc::new(plane);
        let (ingest, writer) = TelemetryIngest::start(
            store.clone(),
            Mqtt::new(Arc::clone(&plane) as Arc<dyn MqttPlane>),
            bridge.history_bounds(),
            bridge.telemetry_limits,
            Metrics::default(),
        )
        .context("starting the telemetry writer")?;
        let served = external::run(
            connection,
            Arc::new(ingest.clone()),
            store.clone(),
            shutdown.clone(),
        );
        Ok((SharedUplink { plane, ingest }, vec![served, writer]))
    }
}

/// The MQTT plane before the bridge is plugged in.
enum Plane {
    /// The embedded broker, bound, not yet running.
    Embedded(Box<Broker>),
    /// An external broker: the bridge's client of it, not yet connected.
    External {
        plane: Arc<ExternalPlane>,
        connection: Box<external::Connection>,
        addr: SocketAddr,
    },
}

impl Plane {
    /// Binds the embedded broker's listeners (with the store's authenticator).
    async fn embedded(config: &Config, store: &Store) -> anyhow::Result<Plane> {
        let tls = match config.mqtts_addr {
            Some(addr) => Some(TlsListener {
                addr,
                identity: tls_identity(config, addr).await?,
            }),
            None => None,
        };
        let broker_config = BrokerConfig {
            mqtt_addr: config.mqtt_addr,
            tls,
            ws_addr: config.mqtt_ws_addr,
            wss_addr: config.mqtt_wss_addr,
            anonymous_sandbox: config.mqtt_anonymous_sandbox,
            max_connections: config.mqtt_max_connections,
            limits: config.mqtt_limits.clone(),
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(
            broker_config,
            Arc::new(StoreAuthenticator::new(store.clone())),
        )
        .await
        .context("binding the MQTT listeners")?;
        Ok(Plane::Embedded(Box::new(broker)))
    }

    /// The client of the external broker (it connects once the bridge runs).
    async fn external(external: &ExternalBroker) -> anyhow::Result<Plane> {
        let (plane, connection) =
            external::connect(external).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_, host, port) = external::parse_url(&external.url)
            .with_context(|| format!("--mqtt-broker {}", external.url))?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .with_context(|| format!("--mqtt-broker {}: cannot resolve {host}", external.url))?;
        Ok(Plane::External {
            plane: Arc::new(plane),
            connection: Box::new(connection),
            addr,
        })
    }

    fn addrs(&self) -> Addrs {
        match self {
            Plane::Embedded(broker) => Addrs {
                mqtt_addr: broker.local_addr(),
                mqtts_addr: broker.tls_addr(),
                mqtt_ws_addr: broker.ws_addr(),
                mqtt_wss_addr: broker.wss_addr(),
            },
            Plane::External { addr, .. } => Addrs {
                mqtt_addr: *addr,
                mqtts_addr: None,
                mqtt_ws_addr: None,
                mqtt_wss_addr: None,
            },
        }
    }

    fn mqtt(&self) -> Mqtt {
        match self {
            Plane::Embedded(broker) => broker.handle().into(),
            Plane::External { plane, .. } => Mqtt::new(Arc::clone(plane) as Arc<dyn MqttPlane>),
        }
    }
}

/// Why a server stopped by itself, if it did ([`Server::failure`]).
#[derive(Clone)]
pub struct Failure(Arc<OnceLock<String>>);

impl Failure {
    /// The reason, once the server stopped by itself.
    pub fn reason(&self) -> Option<String> {
        self.0.get().cloned()
    }
}

/// What the device plane needs to start, on whichever node and whenever it starts.
struct PlaneStarter {
    store: Store,
    /// This node's shared telemetry ingest, which the bridge takes over, if nodes share it.
    telemetry: Option<TelemetryIngest>,
    bridge_config: fleetmq_bridge::BridgeConfig,
    mosquitto_files: Option<fleetmq_bridge::mosquitto_files::MosquittoFiles>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The running device plane, as the API's hooks see it.
struct DevicePlane {
    broker: Mqtt,
    bridge: Bridge,
    broker_up: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl PlaneStarter {
    /// Starts the bridge on `plane` and runs the plane; returns its tasks.
    async fn start(self, plane: Plane) -> anyhow::Result<(DevicePlane, Vec<JoinHandle<()>>)> {
        let PlaneStarter {
            store,
            telemetry,
            bridge_config,
            mosquitto_files,
            shutdown,
            tasks,
        } = self;
        let mqtt = plane.mqtt();
        let (bridge, bridge_tasks) = Bridge::start(
            store.clone(),
            mqtt.clone(),
            bridge_config,
            telemetry,
            shutdown.clone(),
        )
        .await
        .context("starting the bridge")?;
        let mut services = bridge_tasks;
        if let Some(files) = mosquitto_files {
            services.push(tasks.spawn(fleetmq_bridge::mosquitto_files::follow(
                &store,
                files,
                shutdown.clone(),
            )));
        }
        let broker_up: Arc<dyn Fn() -> bool + Send + Sync> = match plane {
            Plane::Embedded(broker) => {
                // Device messages are acknowledged only once the bridge has stored them;
                // retained messages and persistent sessions are kept in the store across
                // restarts.
                let broker = (*broker)
                    .with_uplink(Arc::new(bridge.clone()))
                    .with_persistence(Arc::new(BrokerState::new(store.clone())))
                    .await
                    .context("restoring retained messages and persistent MQTT sessions")?;
                let up = Arc::new(AtomicBool::new(true));
                let running = Arc::clone(&up);
                let stop = shutdown.clone();
                services.push(tasks.spawn(async move {
                    broker.run(stop).await;
                    running.store(false, Ordering::Relaxed);
                }));
                Arc::new(move || up.load(Ordering::Relaxed))
            }
            Plane::External {
                plane, connection, ..
            } => {
                services.push(external::run(
                    *connection,
                    Arc::new(bridge.clone()),
                    store.clone(),
                    shutdown.clone(),
                ));
                Arc::new(move || plane.is_connected())
            }
        };
        Ok((
            DevicePlane {
                broker: mqtt,
                bridge,
                broker_up,
            },
            services,
        ))
    }
}

/// Keeps the device-plane lease while the device plane runs: stops the server if the lease
/// is lost; on shutdown, gives the lease up only once every device-plane task has ended, so
/// the next holder never overlaps with this one.
async fn run_device_plane(
    leadership: &Leadership,
    lease: fleetmq_store::Lease,
    plane_services: Vec<JoinHandle<()>>,
    shutdown: &CancellationToken,
    stopped_because: &OnceLock<String>,
) {
    let held = leadership.hold(lease, shutdown).await;
    if let Held::Lost(why) = &held {
        tracing::error!(reason = %why, "lost the device-plane lease: stopping this node");
        let _ = stopped_because.set(format!("lost the device-plane lease: {why}"));
        shutdown.cancel();
    }
    for task in plane_services {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "device-plane task failed");
        }
    }
    if held == Held::ShuttingDown {
        leadership.release().await;
    }
}

/// The API's view of the broker and the bridge: the device plane once it runs on this node.
/// On a standby node (another holds the device-plane lease) a change the API stored reaches
/// the device plane through the store.
struct ServerHooks {
    running: Arc<OnceLock<DevicePlane>>,
    /// This node's share of the telemetry, if nodes share it.
    shared_uplink: Option<SharedUplink>,
    leadership: Option<Leadership>,
    store: Store,
    /// How long a forwarded device call may take in all.
    call_wait: Duration,
    /// The server's tracker: a hook's work outlives the request, not the server.
    tasks: TaskTracker,
}

impl Hooks for ServerHooks {
    fn device_deactivated(&self, device: DeviceId) {
        let Some(plane) = self.running.get() else {
            return;
        };
        plane.bridge.device_deactivated(device);
        let broker = plane.broker.clone();
        self.tasks.spawn(async move {
            broker.disconnect_device(device).await;
        });
    }

    fn command_created(&self, command: Command) {
        let Some(plane) = self.running.get() else {
            return;
        };
        let bridge = plane.bridge.clone();
        self.tasks
            .spawn(async move { bridge.command_created(command).await });
    }

    fn upgrades_started(&self, started: StartedUpgrades) {
        if let Some(plane) = self.running.get() {
            plane.bridge.upgrades_started(started);
        }
    }

    fn upgrades_cancelled(&self, operations: Vec<UpgradeOperation>) {
        if let Some(plane) = self.running.get() {
            plane.bridge.upgrades_cancelled(operations);
        }
    }

    fn software_changed(&self, org: fleetmq_store::OrgId) {
        if let Some(plane) = self.running.get() {
            plane.bridge.software_changed(org);
        }
    }

    fn device_call(&self, device: DeviceId, call: Call) -> DeviceCallFuture {
        let Some(plane) = self.running.get() else {
            if self.leadership.is_none() {
                return Box::pin(async { Err(DeviceCallError::Unavailable) });
            }
            let (store, wait) = (self.store.clone(), self.call_wait);
            return Box::pin(async move { forwarding::forward(&store, device, call, wait).await });
        };
        let bridge = plane.bridge.clone();
        Box::pin(async move {
            bridge.device_call(device, call).await.map_err(|e| match e {
                CallError::Offline => DeviceCallError::Offline,
                CallError::Timeout(wait) => DeviceCallError::Timeout(wait.as_secs()),
                CallError::NotSent(_) => DeviceCallError::Unavailable,
            })
        })
    }

    fn broker_up(&self) -> bool {
        match (self.running.get(), &self.leadership) {
            (Some(plane), _) => (plane.broker_up)(),
            // A standby is healthy while some node runs the device plane.
            (None, Some(leadership)) => leadership.someone_holds(),
            (None, None) => false,
        }
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut metrics = match self.running.get() {
            Some(plane) => {
                let mut metrics = plane.bridge.metrics().snapshot();
                metrics.extend(plane.broker.metrics());
                metrics
            }
            // The ingest's counters are the bridge's once the bridge runs.
            None => match &self.shared_uplink {
                Some(shared) => shared.ingest.metrics().snapshot(),
                None => Vec::new(),
            },
        };
        if let Some(shared) = &self.shared_uplink {
            metrics.extend(shared.plane.metrics());
        }
        metrics.push((
            "fleetmq_device_plane_running",
            "1 while this node runs the device plane (it holds the device-plane lease, or the store is not shared).",
            u64::from(self.running.get().is_some()),
        ));
        metrics
    }
}
