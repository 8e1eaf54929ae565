//! The telemetry writer: one thread, one transaction per batch (group commit).
//!
//! Devices' samples arrive from many connection tasks at once; committing each on its own would
//! cost one fsync per message. The writer takes everything queued, commits it in one
//! transaction, then tells every sender its sample is durable.

use std::time::Duration;

use fleetmq_store::{Store, TelemetrySample, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

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
