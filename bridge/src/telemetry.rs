//! Devices' telemetry into the store: [`TelemetryIngest`] checks each sample and hands it to
//! the writer, one thread with one transaction per batch (group commit).
//!
//! Devices' samples arrive from many connection tasks at once; committing each on its own would
//! cost one fsync per message. The writer takes everything queued, commits it in one
//! transaction, then tells every sender its sample is durable.
//!
//! The ingest is the bridge's telemetry path, and on an external broker with
//! `--mqtt-shared-uplink` it is also a node's whole share of the devices' telemetry
//! ([`crate::external`]): it needs the store and a way to answer on `down/error`, not the
//! device plane.

use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::{SessionEvent, Uplink, UplinkFuture, UplinkMessage};
use fleetmq_protocol::{TelemetryLimits, Uplink as DeviceMessage};
use fleetmq_store::{DeviceId, Store, StoreError, TelemetrySample, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::mqtt::Mqtt;
use crate::uplink::{self, UplinkError};

/// Checks devices' samples and stores them through the writer; cheap to clone.
#[derive(Clone)]
pub struct TelemetryIngest {
    inner: Arc<Ingest>,
}

struct Ingest {
    writer: TelemetryWriter,
    limits: TelemetryLimits,
    metrics: Metrics,
    /// Where refused samples are answered (`down/error`).
    broker: Mqtt,
}

impl TelemetryIngest {
    /// Starts the writer (see [`TelemetryWriter::start`]); the returned task ends once every
    /// clone of the ingest is dropped and what was queued is committed.
    pub fn start(
        store: Store,
        broker: Mqtt,
        bounds: HistoryBounds,
        limits: TelemetryLimits,
        metrics: Metrics,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (writer, task) = TelemetryWriter::start(store, bounds, metrics.clone())?;
        let ingest = Ingest {
            writer,
            limits,
            metrics,
            broker,
        };
        Ok((
            Self {
                inner: Arc::new(ingest),
            },
            task,
        ))
    }

    /// The counters the ingest adds to (the bridge's, when the bridge runs on it).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn limits(&self) -> &TelemetryLimits {
        &self.inner.limits
    }

    /// Stores one parsed sample of `device`; resolves once it is durable. A sample stamped
    /// too far ahead of the server's clock is refused.
    pub(crate) async fn sample(
        &self,
        device: DeviceId,
        telemetry: fleetmq_protocol::Telemetry,
    ) -> Result<(), UplinkError> {
        self.inner
            .limits
            .check_timestamp(&telemetry.timestamp, time::OffsetDateTime::now_utc())
            .map_err(UplinkError::Refused)?;
        let measured = telemetry.timestamp.to_datetime();
        let sample = TelemetrySample {
            device,
            timestamp: Timestamp::from_micros((measured.unix_timestamp_nanos() / 1_000) as i64),
            received: Timestamp::now(),
            metrics: telemetry.metrics,
        };
        self.inner
            .writer
            .write(sample)
            .await
            .map_err(|e| UplinkError::Store(StoreError::Task(e)))
    }
}

/// A node's share of the devices' uplink: telemetry only (what [`crate::external`]
/// subscribes it to); any other channel is dropped with a warning.
impl Uplink for TelemetryIngest {
    fn deliver(&self, message: UplinkMessage) -> UplinkFuture<'_> {
        Box::pin(async move {
            let ingest = &self.inner;
            let (device, topic) = (message.device_id, message.topic.as_str());
            let taken = uplink::parse_and_apply(
                &message,
                &ingest.limits,
                &ingest.metrics,
                &ingest.broker,
                |parsed| async move {
                    match parsed {
                        DeviceMessage::Telemetry(telemetry) => self.sample(device, telemetry).await,
                        _ => {
                            tracing::warn!(%topic, "not telemetry: this node's share of the uplink is telemetry only; dropped");
                            Ok(())
                        }
                    }
                },
            )
            .await;
            uplink::broker_result(taken)
        })
    }

    fn session(&self, _event: SessionEvent) {}
}

/// How much history each device keeps; applied in the writer's transaction, so bounding it
/// costs no extra commit.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Samples measured longer ago than this go.
    pub retention: Duration,
    /// Stored bytes per device at most; past it the oldest samples go.
    pub max_bytes: u64,
}

/// Samples taken into one transaction at most.
const MAX_BATCH: usize = 4096;
/// Samples waiting for the writer at most; past it senders wait (backpressure).
const QUEUE: usize = 16 * 1024;

type Job = (TelemetrySample, oneshot::Sender<Result<(), String>>);

/// Hands samples to the writer thread.
#[derive(Clone)]
pub struct TelemetryWriter {
    tx: mpsc::Sender<Job>,
}

impl TelemetryWriter {
    /// Starts the writer on a thread of its own (not one of the runtime's few blocking
    /// threads, which it would hold for good); it ends (and the returned task with it) when
    /// every `TelemetryWriter` clone is dropped, after committing what was queued.
    pub fn start(
        store: Store,
        bounds: HistoryBounds,
        metrics: Metrics,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ended, end) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fleetmq-telemetry".to_owned())
            .spawn(move || {
                write_loop(store, bounds, rx, metrics);
                let _ = ended.send(());
            })?;
        let task = tokio::spawn(async move {
            let _ = end.await;
        });
        Ok((Self { tx }, task))
    }

    /// Queues a sample and resolves once it is committed.
    pub async fn write(&self, sample: TelemetrySample) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        // A full queue makes the sender wait: backpressure up to the device's PUBACK.
        self.tx
            .send((sample, done))
            .await
            .map_err(|_| "telemetry writer stopped".to_owned())?;
        wait.await
            .map_err(|_| "telemetry writer stopped".to_owned())?
    }
}

fn write_loop(store: Store, bounds: HistoryBounds, mut rx: mpsc::Receiver<Job>, metrics: Metrics) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (samples, waiters): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let count = samples.len() as u64;
        let keep_after = Timestamp::from_micros(
            Timestamp::now().as_micros()
                - i64::try_from(bounds.retention.as_micros()).unwrap_or(i64::MAX),
        );
        let result = store
            .blocking()
            .append_telemetry(samples, keep_after, bounds.max_bytes)
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => metrics.telemetry_committed(count),
            Err(e) => tracing::error!(error = %e, samples = count, "telemetry batch failed"),
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
