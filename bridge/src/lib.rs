//! The bridge between MQTT and the domain.
//!
//! It decides who a connecting client is (from the store), turns what devices publish under
//! their `up/` topics into stored state, and turns commands stored by the REST API into MQTT
//! requests on the devices' `down/` topics.
//!
//! ```text
//! broker ──(device up/ messages)──▶ Bridge::uplink ──▶ store
//! api ──(command stored)──▶ Bridge::command_created ──▶ broker (down/command/request)
//! ```
//!
//! # Layout
//! - [`auth`] — [`auth::StoreAuthenticator`]: device keys and operator tokens.
//! - [`uplink`] — what each `up/` channel does to the store.
//! - [`telemetry`] — the group-commit telemetry writer.
//! - [`commands`] — sending, resending and timing out commands.
//! - [`metrics`] — counters for `/metrics`.

pub mod auth;
pub mod commands;
pub mod metrics;
pub mod telemetry;
pub mod uplink;

use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::BrokerHandle;
use fleetmq_store::{Command, Store, Timestamp};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use commands::CommandTracker;
pub use metrics::Metrics;
pub use telemetry::TelemetryWriter;

/// Tunables of the bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// How long telemetry history is kept.
    pub telemetry_retention: Duration,
    /// How long a command may wait for its answer (including time offline).
    pub command_timeout: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            telemetry_retention: Duration::from_secs(7 * 24 * 3600),
            command_timeout: Duration::from_secs(300),
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
    broker: BrokerHandle,
    telemetry: TelemetryWriter,
    commands: CommandTracker,
    metrics: Metrics,
    command_added: Notify,
}

impl Bridge {
    /// Starts the bridge: the telemetry writer, pending commands from before a restart, the
    /// command timer, and the in-process subscription to every device's `up/` topics.
    pub async fn start(
        store: Store,
        broker: BrokerHandle,
        config: BridgeConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<(Bridge, Vec<JoinHandle<()>>)> {
        let metrics = Metrics::default();
        let (telemetry, writer) =
            TelemetryWriter::start(store.clone(), config.telemetry_retention, metrics.clone());
        let commands = CommandTracker::new(
            store.clone(),
            broker.clone(),
            config.command_timeout,
            metrics.clone(),
        );
        let bridge = Bridge {
            inner: Arc::new(Inner {
                store,
                broker: broker.clone(),
                telemetry,
                commands,
                metrics,
                command_added: Notify::new(),
            }),
        };
        let link = broker
            .link("bridge", &[fleetmq_protocol::topic::ALL_UP_FILTER])
            .await
            .map_err(std::io::Error::other)?;
        if let Err(e) = bridge.inner.commands.resume().await {
            tracing::error!(error = %e, "cannot resume pending commands");
        }
        let tasks = vec![
            writer,
            tokio::spawn(uplink::consume(bridge.clone(), link, shutdown.clone())),
            tokio::spawn(bridge.clone().time_out_commands(shutdown)),
        ];
        Ok((bridge, tasks))
    }

    /// A command the API has stored: send it now (or when the device comes online).
    pub async fn command_created(&self, command: Command) {
        self.inner.commands.created(command).await;
        self.inner.command_added.notify_one();
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
