//! The journal: changes to persisted broker state (retained messages, persistent sessions and
//! their queues), group-committed to the [`Persistence`] by one writer task.
//!
//! Recording a change is synchronous and cheap (a push under a lock) and returns a ticket;
//! whoever must not acknowledge before the change is durable waits for its ticket
//! ([`Journal::durable`]). Every change recorded while a write is under way goes into the
//! next write, so a burst costs few writes. Without a persistence the journal is off and
//! records nothing.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{BrokerError, Persistence, StateChange};

/// First pause after a failed write; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Pending {
    changes: Vec<StateChange>,
    /// Ticket of the last change recorded.
    last: u64,
}

/// See the module documentation.
pub(crate) struct Journal {
    enabled: AtomicBool,
    pending: Mutex<Pending>,
    wake: Notify,
    /// The ticket of the last change applied (`u64::MAX` once the writer has stopped).
    applied: watch::Sender<u64>,
    /// The writer stopped with changes it could not apply.
    unapplied: AtomicBool,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            enabled: AtomicBool::new(false),
            pending: Mutex::default(),
            wake: Notify::new(),
            applied: watch::Sender::new(0),
            unapplied: AtomicBool::new(false),
        }
    }
}

impl Journal {
    /// Whether changes are recorded (a persistence is plugged in and the writer runs).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records `change`; its ticket, or `None` when the journal is off.
    pub(crate) fn record(&self, change: StateChange) -> Option<u64> {
        if !self.is_enabled() {
            return None;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.changes.push(change);
        pending.last += 1;
        let ticket = pending.last;
        drop(pending);
        self.wake.notify_one();
        Some(ticket)
    }

    /// Resolves once the change of `ticket` (and every one before it) is durable.
    pub(crate) async fn durable(&self, ticket: u64) -> Result<(), BrokerError> {
        let mut applied = self.applied.subscribe();
        let stopped = || BrokerError::Persistence("journal writer stopped".into());
        let applied = *applied
            .wait_for(|applied| *applied >= ticket)
            .await
            .map_err(|_| stopped())?;
        if applied == u64::MAX && self.unapplied.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        Ok(())
    }

    /// Turns the journal on; call before [`write`](Self::write) runs.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// The writer: applies what was recorded until `stop` is cancelled, then applies what
    /// is left and turns the journal off (waiters are released).
    pub(crate) async fn write(
        self: Arc<Self>,
        persistence: Arc<dyn Persistence>,
        stop: CancellationToken,
    ) {
        loop {
            let stopping = tokio::select! {
                () = self.wake.notified() => false,
                () = stop.cancelled() => true,
            };
            if stopping {
                self.enabled.store(false, Ordering::Relaxed);
            }
            let flushed = self.flush(persistence.as_ref(), &stop).await;
            if stopping {
                self.unapplied.store(!flushed, Ordering::Relaxed);
                self.applied.send_replace(u64::MAX);
                return;
            }
        }
    }

    /// Applies every pending change, retrying a failed write (nothing is acknowledged until
    /// it succeeds) until it succeeds or the broker stops. Returns whether everything was
    /// applied.
    async fn flush(&self, persistence: &dyn Persistence, stop: &CancellationToken) -> bool {
        let (changes, last) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut pending.changes), pending.last)
        };
        if changes.is_empty() {
            return true;
        }
        let mut pause = FIRST_RETRY;
        loop {
            match persistence.apply(changes.clone()).await {
                Ok(()) => {
                    self.applied.send_replace(last);
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, changes = changes.len(), retry_in = ?pause, "cannot persist broker state");
                    if stop.is_cancelled() {
                        return false;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }
}
