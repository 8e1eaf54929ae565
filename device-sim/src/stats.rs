//! Counters shared by every device of a run, read by the progress bars and the summary.
//!
//! Per-event channels would cost memory per device at 19,000 devices; a handful of atomics
//! shared by the whole fleet cost nothing, and a [`Notify`] lets a caller await "N devices
//! connected" without polling.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Live counters. Devices only ever add; readers take a [`StatsSnapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connected_now: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) refused: [AtomicU64; 6],
    pub(crate) connect_timeouts: AtomicU64,
    pub(crate) connections_lost: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) reboots: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) changed: Notify,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Devices connected right now (CONNACK accepted and `down/#` subscribed).
    pub connected_now: u64,
    /// Successful connections, first ones and reconnections.
    pub connects: u64,
    /// Connections re-established after the broker or the network dropped one (a reboot's
    /// reconnection is counted in `reboots`, not here).
    pub reconnects: u64,
    /// Connection attempts that failed: TCP error, timeout, or CONNACK refusal.
    pub connect_errors: u64,
    /// Of those, CONNACK refusals by return code (index 1–5; index 0 counts codes above 5).
    /// 0x03 is the broker at its connection cap, 0x04 a wrong key, 0x05 a deactivated device.
    pub refused: [u64; 6],
    /// Of those, attempts that hit the connect timeout (TCP or CONNACK too slow).
    pub connect_timeouts: u64,
    /// Established connections that ended without the device asking (EOF, I/O or protocol
    /// error, keep-alive timeout).
    pub connections_lost: u64,
    /// PUBLISH packets sent (presence, telemetry, coordinates, command results).
    pub published: u64,
    /// PUBACKs received for them.
    pub acked: u64,
    /// Command requests answered.
    pub commands: u64,
    /// Reboots performed on command.
    pub reboots: u64,
    /// Messages on down topics the device could not use (garbage, unknown channel).
    pub ignored: u64,
}

impl Stats {
    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connected_now: get(&self.connected_now),
            connects: get(&self.connects),
            reconnects: get(&self.reconnects),
            connect_errors: get(&self.connect_errors),
            refused: std::array::from_fn(|i| get(&self.refused[i])),
            connect_timeouts: get(&self.connect_timeouts),
            connections_lost: get(&self.connections_lost),
            published: get(&self.published),
            acked: get(&self.acked),
            commands: get(&self.commands),
            reboots: get(&self.reboots),
            ignored: get(&self.ignored),
        }
    }

    /// Waits until `done` holds for a snapshot. Checks after every connect/disconnect and
    /// command, so it suits "all N connected" or "N commands handled".
    pub async fn wait_until(&self, mut done: impl FnMut(&StatsSnapshot) -> bool) -> StatsSnapshot {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let snapshot = self.snapshot();
            if done(&snapshot) {
                return snapshot;
            }
            changed.await;
        }
    }

    pub(crate) fn add(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        if connected {
            self.connected_now.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connected_now.fetch_sub(1, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }
}
