//! The bridge between MQTT and the domain.
//!
//! It decides who a connecting client is (from the store), turns what devices publish under
//! their `up/` topics into stored state, and turns commands stored by the REST API into MQTT
//! requests on the devices' `down/` topics.
//!
//! ```text
//! broker ──Uplink::deliver (before the PUBACK)──▶ Bridge::uplink ──▶ store
//! broker ──Uplink::session (connect/disconnect)──▶ MQTT connection record, command resend
//! api ──(command stored)──▶ Bridge::command_created ──▶ broker (down/command/request)
//! store ──(config checksum changed)──▶ configuration ──▶ broker (down/config/notice)
//! store ──(login change committed)──▶ revocation ──▶ broker (reauthorize live sessions)
//! store ──(another node committed)──▶ other_nodes ──▶ rollout engine, commands, software
//! ```
//!
//! The bridge is the broker's [`fleetmq_broker::Uplink`]: the broker acknowledges a device's
//! message only once [`Bridge::uplink`] has made its effect durable.
//!
//! # Layout
//! - [`auth`] — [`auth::StoreAuthenticator`]: device keys and operator tokens.
//! - [`broker_state`] — [`BrokerState`], the broker's persistence (retained messages,
//!   persistent sessions) over the store.
//! - [`uplink`] — what each `up/` channel and each session event does to the store.
//! - [`telemetry`] — devices' telemetry: checked, then stored by the group-commit writer.
//! - [`commands`] — sending, resending and timing out commands.
//! - [`configuration`] — config notices when a device's rendered configuration changes, and
//!   the devices' reports of applying it.
//! - [`rollout`] — the rollout engine: upgrade operations over npm.system_update, and
//!   software installations (OTAO).
//! - [`software`] — the OTAO decision source: which installations devices should get, and
//!   when to decide again.
//! - [`device_calls`] — REST clients' calls of a device's npm.system_update API; who is online.
//! - [`external`] — the bridge on an external MQTT broker (rumqttc), instead of the
//!   embedded one.
//! - [`metrics`] — counters for `/metrics`.
//! - [`mosquitto_files`] — Mosquitto's password and ACL files kept from the store.
//! - [`mqtt`] — [`mqtt::Mqtt`], the broker the bridge publishes to (embedded or external).
//! - `revocation` — login changes in the store end the live sessions they revoke.
//! - `other_nodes` — upgrades, commands and software other nodes sharing the store wrote.
//! - `sessions` — the session recorder's queue: one merged entry per device, written in batches.

pub mod auth;
pub mod broker_state;
pub mod commands;
pub mod configuration;
pub mod device_calls;
pub mod external;
pub mod metrics;
pub mod mosquitto_files;
pub mod mqtt;
mod other_nodes;
mod revocation;
pub mod rollout;
mod sessions;
pub mod software;
pub mod telemetry;
pub mod uplink;

use std::sync::Arc;
use std::time::Duration;

use fleetmq_protocol::TelemetryLimits;
use fleetmq_store::{Command, DeviceId, StartedUpgrades, Store, Timestamp, UpgradeOperation};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use broker_state::BrokerState;
pub use commands::CommandTracker;
pub use configuration::{ConfigLinks, ConfigPush};
pub use device_calls::{CallError, DeviceCalls, OnlineDevices};
pub use metrics::Metrics;
pub use mqtt::{Mqtt, MqttError, MqttPlane};
pub use rollout::{RolloutConfig, Rollouts, UpgradePolicy};
pub use telemetry::{HistoryBounds, TelemetryIngest};

/// Tunables of the bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// How long telemetry history is kept.
    pub telemetry_retention: Duration,
    /// What a telemetry sample may be (size, timestamp skew); refused samples get a
    /// `down/error`.
    pub telemetry_limits: TelemetryLimits,
    /// Stored bytes of telemetry history kept per device; past it the oldest samples go.
    pub telemetry_history_max_bytes: u64,
    /// How long a command may wait for its answer (including time offline).
    pub command_timeout: Duration,
    /// How long a REST call of a device's npm.system_update API waits for the answer.
    pub device_call_timeout: Duration,
    /// The rollout engine's tunables.
    pub rollout: RolloutConfig,
    /// How long a config notice's download link lasts (its base URL is the rollout's
    /// `public_url`).
    pub config_link_lifetime: Duration,
    /// Who is online comes from devices' `up/presence` messages (an external broker, see
    /// [`external`]) instead of the embedded broker's session events.
    pub presence_from_messages: bool,
}

impl BridgeConfig {
    /// How much telemetry history each device keeps.
    pub fn history_bounds(&self) -> HistoryBounds {
        HistoryBounds {
            retention: self.telemetry_retention,
            max_bytes: self.telemetry_history_max_bytes,
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            telemetry_retention: Duration::from_secs(7 * 24 * 3600),
            telemetry_limits: TelemetryLimits::default(),
            telemetry_history_max_bytes: 8 * 1024 * 1024,
            command_timeout: Duration::from_secs(300),
            device_call_timeout: Duration::from_secs(10),
            rollout: RolloutConfig::default(),
            config_link_lifetime: ConfigLinks::default().lifetime,
            presence_from_messages: false,
        }
    }
}

/// The running bridge; cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    broker: Mqtt,
    telemetry: TelemetryIngest,
    commands: CommandTracker,
    rollouts: Rollouts,
    calls: DeviceCalls,
    online: OnlineDevices,
    configs: ConfigPush,
    metrics: Metrics,
    command_added: Notify,
    /// What the OTAO decision source must decide again.
    triggers: software::Triggers,
    /// Group commit of devices' software inventories.
    inventories: software::Inventories,
    /// Session events and presence, merged per device, recorded by one task.
    sessions: Arc<sessions::SessionQueue>,
    /// See [`BridgeConfig::presence_from_messages`].
    presence_from_messages: bool,
}

impl Bridge {
    /// Starts the bridge: the telemetry writer (unless `telemetry` is an ingest already
    /// running, whose counters the bridge then adds to), pending commands from before a
    /// restart, the command timer, and the recorder of session events. Plug it into the
    /// broker with [`fleetmq_broker::Broker::with_uplink`] before the broker runs.
    pub async fn start(
        store: Store,
        broker: Mqtt,
        config: BridgeConfig,
        telemetry: Option<TelemetryIngest>,
        shutdown: CancellationToken,
    ) -> std::io::Result<(Bridge, Vec<JoinHandle<()>>)> {
        let mut tasks = Vec::new();
        let telemetry = match telemetry {
            Some(ingest) => ingest,
            None => {
                let (ingest, writer) = TelemetryIngest::start(
                    store.clone(),
                    broker.clone(),
                    config.history_bounds(),
                    config.telemetry_limits,
                    Metrics::default(),
                )?;
                tasks.push(writer);
                ingest
            }
        };
        let metrics = telemetry.metrics().clone();
        let commands = CommandTracker::new(
            store.clone(),
            broker.clone(),
            config.command_timeout,
            metrics.clone(),
        );
        let sessions = Arc::new(sessions::SessionQueue::default());
        let online = OnlineDevices::default();
        let calls = DeviceCalls::new(broker.clone(), online.clone(), config.device_call_timeout);
        let triggers = software::Triggers::default();
        let (rollouts, engine) = Rollouts::start(
            store.clone(),
            broker.clone(),
            online.clone(),
            config.rollout.clone(),
            metrics.clone(),
            triggers.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(std::io::Error::other)?;
        let (inventories, inventory_writer) = software::Inventories::start(
            store.clone(),
            triggers.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        // Subscribed before anything can change, so no announcement is missed.
        let config_changes = store.blocking().config_changes();
        let remote_changes = store.blocking().remote_changes();
        let configs = ConfigPush::new(
            store.clone(),
            broker.clone(),
            online.clone(),
            ConfigLinks {
                public_url: config.rollout.public_url.clone(),
                lifetime: config.config_link_lifetime,
            },
            metrics.clone(),
        )
        .await
        .map_err(std::io::Error::other)?;
        let bridge = Bridge {
            inner: Arc::new(Inner {
                store,
                broker,
                telemetry,
                commands,
                rollouts,
                calls,
                online,
                configs: configs.clone(),
                metrics,
                command_added: Notify::new(),
                triggers: triggers.clone(),
                inventories,
                sessions: Arc::clone(&sessions),
                presence_from_messages: config.presence_from_messages,
            }),
        };
        if let Err(e) = bridge.inner.commands.resume().await {
            tracing::error!(error = %e, "cannot resume pending commands");
        }
        tasks.extend([
            engine,
            inventory_writer,
            tokio::spawn(uplink::record_sessions(
                bridge.clone(),
                sessions,
                shutdown.clone(),
            )),
            tokio::spawn(revocation::follow(
                &bridge.inner.store,
                bridge.inner.broker.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(configs.follow(config_changes, shutdown.clone())),
            tokio::spawn(software::decide(
                bridge.inner.store.clone(),
                bridge.inner.rollouts.clone(),
                triggers,
                shutdown.clone(),
            )),
            tokio::spawn(other_nodes::follow(
                bridge.clone(),
                remote_changes,
                shutdown.clone(),
            )),
            tokio::spawn(bridge.clone().time_out_commands(shutdown)),
        ]);
        Ok((bridge, tasks))
    }

    /// A command the API has stored: send it now (or when the device comes online).
    pub async fn command_created(&self, command: Command) {
        self.inner.commands.created(command).await;
        self.inner.command_added.notify_one();
    }

    /// Upgrade operations the API stored: drive them.
    pub fn upgrades_started(&self, started: StartedUpgrades) {
        self.inner.rollouts.started(started);
    }

    /// A device was deactivated: its upgrades were aborted in the store.
    pub fn device_deactivated(&self, device: DeviceId) {
        self.inner.rollouts.deactivated(device);
    }

    /// Application software of `org` changed (versions, filters, applications, devices'
    /// attributes or inventories set over REST): decide its installations again.
    pub fn software_changed(&self, org: fleetmq_store::OrgId) {
        self.inner.triggers.organization(org);
    }

    /// Upgrade operations the API cancelled: stop driving them.
    pub fn upgrades_cancelled(&self, operations: Vec<UpgradeOperation>) {
        self.inner.rollouts.cancelled(operations);
    }

    /// Calls a device's npm.system_update API and returns its answer.
    pub async fn device_call(
        &self,
        device: DeviceId,
        call: fleetmq_protocol::Call,
    ) -> Result<fleetmq_protocol::UpdateResponse, CallError> {
        self.inner.calls.call(device, call).await
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The broker the bridge publishes to.
    pub fn mqtt(&self) -> &Mqtt {
        &self.inner.broker
    }

    /// The bridge's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    async fn time_out_commands(self, shutdown: CancellationToken) {
        loop {
            let wait = self.inner.commands.next_deadline().map(|deadline| {
                let micros = deadline.as_micros() - Timestamp::now().as_micros();
                Duration::from_micros(u64::try_from(micros).unwrap_or(0))
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.command_added.notified() => {}
                () = async {
                    match wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            self.inner.commands.expire().await;
        }
    }
}
