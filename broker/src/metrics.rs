//! The broker's counters (exported on the server's `/metrics`) and sampled log lines: a flood
//! is counted, and logged once per period rather than once per socket or login.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a sampled line may be written.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// Counters of what the front end refused.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Sockets closed at accept: pre-CONNECT budget (total or per address) full.
    pub(crate) pending_refused: AtomicU64,
    /// Authenticated clients refused with 0x03 because `max_connections` sessions run.
    pub(crate) sessions_refused: AtomicU64,
    /// Logins the authenticator refused (bad credentials, not authorized).
    pub(crate) login_failures: AtomicU64,
    /// Logins refused by the failed-login backoff, before authentication.
    pub(crate) logins_throttled: AtomicU64,
    /// Sessions accepted (CONNACK 0x00), by protocol version.
    pub(crate) connected_v311: AtomicU64,
    pub(crate) connected_v5: AtomicU64,
}

impl Metrics {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its Prometheus name and help text.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        const CONNECTED: &str = "MQTT sessions accepted (CONNACK success), by protocol version.";
        vec![
            (
                "fleetmq_mqtt_pending_refused_total",
                "MQTT sockets closed before CONNECT: pre-CONNECT budget (total or per address) full.",
                get(&self.pending_refused),
            ),
            (
                "fleetmq_mqtt_sessions_refused_total",
                "Authenticated MQTT clients refused with CONNACK 0x03: session limit reached.",
                get(&self.sessions_refused),
            ),
            (
                "fleetmq_mqtt_login_failures_total",
                "MQTT logins refused by the authenticator (CONNACK 0x04 or 0x05).",
                get(&self.login_failures),
            ),
            (
                "fleetmq_mqtt_logins_throttled_total",
                "MQTT logins refused by the failed-login backoff before authentication.",
                get(&self.logins_throttled),
            ),
            (
                "fleetmq_mqtt_connections_accepted_total{protocol=\"3.1.1\"}",
                CONNECTED,
                get(&self.connected_v311),
            ),
            (
                "fleetmq_mqtt_connections_accepted_total{protocol=\"5\"}",
                CONNECTED,
                get(&self.connected_v5),
            ),
        ]
    }
}

/// A log line written at most once per [`LOG_PERIOD`], saying how many events it stands for.
#[derive(Default)]
pub(crate) struct Sampled {
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

impl Sampled {
    /// Records one event; `Some(n)` when a line is due now, `n` the events since the last one.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.since.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < LOG_PERIOD) {
            return None;
        }
        *last = Some(now);
        Some(self.since.swap(0, Ordering::Relaxed))
    }
}
