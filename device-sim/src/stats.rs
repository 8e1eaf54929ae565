//! Counters shared by every device of a run, read by the progress bars and the summary.
//!
//! Per-event channels would cost memory per device at 19,000 devices; a handful of atomics
//! shared by the whole fleet cost nothing, and a [`Notify`] lets a caller await "N devices
//! connected" without polling.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
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
    pub(crate) software_installs: AtomicU64,
    pub(crate) software_failures: AtomicU64,
    pub(crate) changed: Notify,
    pub(crate) upgrades: UpgradeTimes,
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
    /// Application software deliveries installed (repeats and deliveries of the version
    /// already running not counted).
    pub software_installs: u64,
    /// Application software deliveries answered `failed`.
    pub software_failures: u64,
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
            software_installs: get(&self.software_installs),
            software_failures: get(&self.software_failures),
        }
    }

    /// Waits until `done` holds for a snapshot. Checks after every connect/disconnect,
    /// command and software installation or failure, so it suits "all N connected" or
    /// "N commands handled".
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

    /// When upgrades reached the devices and how long they took, as the devices saw it.
    pub fn upgrades(&self) -> &UpgradeTimes {
        &self.upgrades
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

/// Upgrade timings as the devices see them, shared by the whole fleet: two "last instant"
/// maxima and counters (atomics), and one histogram of per-device durations behind a mutex
/// that each device locks once per upgrade. Instants are microseconds since [`epoch`]
/// (when the counters were created), so they fit in an `AtomicU64`.
///
/// A device's upgrade starts with the first `images/fetch` request it receives and ends when
/// it is connected again after the reboot that installs the new firmware.
///
/// [`epoch`]: UpgradeTimes::epoch
#[derive(Debug)]
pub struct UpgradeTimes {
    epoch: Instant,
    first_fetches: AtomicU64,
    /// Latest first fetch, µs since the epoch, plus one (0: none yet).
    last_first_fetch: AtomicU64,
    installed: AtomicU64,
    /// Latest reconnection on new firmware, µs since the epoch, plus one (0: none yet).
    last_installed: AtomicU64,
    /// First fetch → connected on the new firmware, per device, in µs.
    durations: Mutex<Histogram<u64>>,
}

impl Default for UpgradeTimes {
    fn default() -> Self {
        UpgradeTimes {
            epoch: Instant::now(),
            first_fetches: AtomicU64::new(0),
            last_first_fetch: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            last_installed: AtomicU64::new(0),
            // Auto-resizing, 3 significant digits: a few KiB for the whole fleet.
            durations: Mutex::new(Histogram::new(3).expect("3 significant digits are valid")),
        }
    }
}

/// A copy of [`UpgradeTimes`] at one instant. Instants are offsets from the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeSnapshot {
    /// Devices that received at least one `images/fetch` request.
    pub first_fetches: u64,
    /// When the last of them received its first one.
    pub last_first_fetch: Option<Duration>,
    /// Devices connected again on new firmware after an installation.
    pub installed: u64,
    /// When the last of them reconnected.
    pub last_installed: Option<Duration>,
    /// Per-device durations (first fetch → reconnected on the new firmware).
    pub durations: DurationSummary,
}

/// Percentiles of the per-device upgrade durations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DurationSummary {
    /// Devices measured.
    pub count: u64,
    /// Shortest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl DurationSummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let micros = Duration::from_micros;
        DurationSummary {
            count: histogram.len(),
            min: micros(histogram.min()),
            p50: micros(histogram.value_at_quantile(0.50)),
            p90: micros(histogram.value_at_quantile(0.90)),
            p99: micros(histogram.value_at_quantile(0.99)),
            max: micros(histogram.max()),
            mean: Duration::from_secs_f64(histogram.mean() / 1e6),
        }
    }
}

impl UpgradeTimes {
    /// The instant the offsets count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// A device received its first `images/fetch` request at `at`.
    pub(crate) fn first_fetch(&self, at: Instant) {
        self.first_fetches.fetch_add(1, Ordering::Relaxed);
        self.last_first_fetch
            .fetch_max(self.offset(at), Ordering::Relaxed);
    }

    /// A device whose first fetch was at `fetched` is connected on its new firmware at `at`.
    pub(crate) fn installed(&self, fetched: Instant, at: Instant) {
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.last_installed
            .fetch_max(self.offset(at), Ordering::Relaxed);
        let micros =
            u64::try_from(at.saturating_duration_since(fetched).as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means another device panicked mid-record; the data is fine.
        let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        // Auto-resizing histograms accept any value.
        let _ = durations.record(micros.max(1));
    }

    /// A copy of everything measured so far.
    pub fn snapshot(&self) -> UpgradeSnapshot {
        let instant = |c: &AtomicU64| match c.load(Ordering::Relaxed) {
            0 => None,
            plus_one => Some(Duration::from_micros(plus_one - 1)),
        };
        let durations = {
            let histogram = self.durations.lock().unwrap_or_else(|e| e.into_inner());
            DurationSummary::of(&histogram)
        };
        UpgradeSnapshot {
            first_fetches: self.first_fetches.load(Ordering::Relaxed),
            last_first_fetch: instant(&self.last_first_fetch),
            installed: self.installed.load(Ordering::Relaxed),
            last_installed: instant(&self.last_installed),
            durations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_times_keep_the_latest_instants_and_percentiles() {
        let times = UpgradeTimes::default();
        assert_eq!(times.snapshot(), UpgradeSnapshot::default());
        let epoch = times.epoch();
        let ms = Duration::from_millis;
        for i in 1..=100u64 {
            let fetched = epoch + ms(i);
            times.first_fetch(fetched);
            times.installed(fetched, fetched + ms(10 * i));
        }
        let s = times.snapshot();
        assert_eq!(s.first_fetches, 100);
        assert_eq!(s.last_first_fetch, Some(ms(100)));
        assert_eq!(s.installed, 100);
        assert_eq!(s.last_installed, Some(ms(1100)));
        let d = s.durations;
        assert_eq!(d.count, 100);
        let close = |a: Duration, b: Duration| a.abs_diff(b) <= b / 500 + Duration::from_micros(1);
        assert!(close(d.min, ms(10)), "{d:?}");
        assert!(close(d.p50, ms(500)), "{d:?}");
        assert!(close(d.p90, ms(900)), "{d:?}");
        assert!(close(d.p99, ms(990)), "{d:?}");
        assert!(close(d.max, ms(1000)), "{d:?}");
        assert!(close(d.mean, ms(505)), "{d:?}");
    }
}
