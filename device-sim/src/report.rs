//! What a run prints when it ends: the fleet run's [`RunSummary`], the upgrade demo's
//! [`DemoSummary`] with its [`Timing`]s and JSON report, and the simulator's own memory.

use std::time::{Duration, Instant};

use crate::StatsSnapshot;
use crate::demo::DemoOptions;
use crate::error::connack_meaning;
use crate::firmware::BatchDetail;
use crate::stats::{DurationSummary, UpgradeSnapshot};

/// What the fleet run's summary table shows.
pub struct RunSummary {
    pub(crate) devices: usize,
    pub(crate) peak_connected: u64,
    pub(crate) connect_phase: Duration,
    pub(crate) all_connected: bool,
    pub(crate) ran_for: Duration,
    pub(crate) stats: StatsSnapshot,
    pub(crate) memory: Option<(u64, u64)>,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let rate = self.peak_connected as f64 / self.connect_phase.as_secs_f64().max(1e-3);
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<24} {value}")
        };
        writeln!(f, "\nfleetmq-sim summary")?;
        row(f, "devices", self.devices.to_string())?;
        row(
            f,
            "connected (peak)",
            format!(
                "{}{}",
                self.peak_connected,
                if self.all_connected {
                    ""
                } else {
                    "  (not all connected)"
                }
            ),
        )?;
        row(
            f,
            "connect phase",
            format!(
                "{:.1} s ({rate:.0} devices/s)",
                self.connect_phase.as_secs_f64()
            ),
        )?;
        row(f, "ran for", format!("{:.1} s", self.ran_for.as_secs_f64()))?;
        row(
            f,
            "messages published",
            format!("{} (acked {})", s.published, s.acked),
        )?;
        row(f, "commands handled", s.commands.to_string())?;
        row(f, "reboots", s.reboots.to_string())?;
        row(
            f,
            "software installs",
            format!("{} (failed {})", s.software_installs, s.software_failures),
        )?;
        row(f, "reconnects", s.reconnects.to_string())?;
        row(f, "connections lost", s.connections_lost.to_string())?;
        let mut errors = s.connect_errors.to_string();
        let refusals: Vec<String> = (1..6)
            .chain([0])
            .filter(|&code| s.refused[code] > 0)
            .map(|code| {
                let name = match code {
                    0 => "other CONNACK codes".to_owned(),
                    code => format!("CONNACK {code:#04x} {}", connack_meaning(code as u8)),
                };
                format!("{} {name}", s.refused[code])
            })
            .chain((s.connect_timeouts > 0).then(|| format!("{} timeouts", s.connect_timeouts)))
            .collect();
        if !refusals.is_empty() {
            errors.push_str(&format!(" ({})", refusals.join(", ")));
        }
        row(f, "connect errors", errors)?;
        row(f, "ignored down messages", s.ignored.to_string())?;
        if let Some((rss, peak)) = self.memory {
            let per_device = rss as f64 / self.devices as f64;
            row(
                f,
                "resident memory",
                format!(
                    "{} MiB (peak {} MiB, {per_device:.1} KiB per device incl. runtime)",
                    rss / 1024,
                    peak / 1024
                ),
            )?;
        }
        Ok(())
    }
}

/// The upgrade's timings, all from the moment the batch POST returned (the batch exists).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// POST `build/{id}/upgrade/` sent → its answer.
    pub(crate) post_latency: Duration,
    /// Batch created → the last device received its first `images/fetch` request.
    pub(crate) dispatch: Option<Duration>,
    /// Devices that received one.
    pub(crate) fetched: u64,
    /// Batch created → the batch detail showed an end (to the poll interval).
    pub(crate) batch_completion: Option<Duration>,
    /// Batch created → the last device connected again on the new firmware.
    pub(crate) devices_completion: Option<Duration>,
    /// Devices that did.
    pub(crate) installed: u64,
    /// Per device: first fetch → connected on the new firmware.
    pub(crate) per_device: DurationSummary,
}

impl Timing {
    /// `epoch` is the instant the fleet's [`UpgradeSnapshot`] offsets count from.
    pub(crate) fn new(
        epoch: Instant,
        posted: Instant,
        created: Instant,
        finished_at: Option<Instant>,
        upgrades: UpgradeSnapshot,
    ) -> Timing {
        // Device instants are offsets from the epoch; so is the batch's creation.
        let created_offset = created.saturating_duration_since(epoch);
        let since_created =
            |offset: Option<Duration>| offset.map(|offset| offset.saturating_sub(created_offset));
        Timing {
            post_latency: created.saturating_duration_since(posted),
            dispatch: since_created(upgrades.last_first_fetch),
            fetched: upgrades.first_fetches,
            batch_completion: finished_at.map(|at| at.saturating_duration_since(created)),
            devices_completion: since_created(upgrades.last_installed),
            installed: upgrades.installed,
            per_device: upgrades.durations,
        }
    }
}

/// Milliseconds with microsecond precision, for the JSON report.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `12.3 s`, `456 ms` or `—`.
pub(crate) fn human(d: Option<Duration>) -> String {
    match d {
        None => "—".to_owned(),
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2} s", d.as_secs_f64()),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
    }
}

/// What the demo's summary table shows.
pub struct DemoSummary {
    pub(crate) version: String,
    pub(crate) devices: usize,
    pub(crate) connected: u64,
    pub(crate) connect_phase: Duration,
    pub(crate) detail: BatchDetail,
    pub(crate) rollout_time: Duration,
    pub(crate) total_time: Duration,
    pub(crate) reboots: u64,
    pub(crate) timing: Timing,
    /// This process's resident and peak resident memory, KiB.
    pub(crate) memory: Option<(u64, u64)>,
}

impl DemoSummary {
    /// The JSON `--report`: times in milliseconds.
    pub fn report(&self, batch: uuid::Uuid, demo: &DemoOptions) -> serde_json::Value {
        let t = &self.timing;
        let d = &t.per_device;
        let c = &self.detail.status_counts;
        let opt_ms = |d: Option<Duration>| d.map(ms);
        serde_json::json!({
            "devices": self.devices,
            "connected_before_batch": self.connected,
            "connect_phase_ms": ms(self.connect_phase),
            "image_size": demo.image_size,
            "build": self.version,
            "batch": batch,
            "rollout": demo.rollout.body(),
            "poll_interval_ms": ms(demo.poll_interval),
            "batch_post_ms": ms(t.post_latency),
            "dispatch_ms": opt_ms(t.dispatch),
            "devices_fetched": t.fetched,
            "completion_batch_ms": opt_ms(t.batch_completion),
            "completion_devices_ms": opt_ms(t.devices_completion),
            "devices_on_new_firmware": t.installed,
            "per_device_ms": {
                "count": d.count,
                "min": ms(d.min),
                "p50": ms(d.p50),
                "p90": ms(d.p90),
                "p99": ms(d.p99),
                "max": ms(d.max),
                "mean": ms(d.mean),
            },
            "batch_status": self.detail.status,
            "progress_report": self.detail.progress_report,
            "total": self.detail.total,
            "status_counts": {
                "success": c.success,
                "failed": c.failed,
                "aborted": c.aborted,
                "cancelled": c.cancelled,
                "in-progress": c.in_progress,
            },
            "device_reboots": self.reboots,
            "watched_ms": ms(self.rollout_time),
            "total_ms": ms(self.total_time),
            "sim_rss_kib": self.memory.map(|(rss, _)| rss),
            "sim_peak_rss_kib": self.memory.map(|(_, peak)| peak),
        })
    }
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.detail;
        let c = &d.status_counts;
        let total = d.total.max(1) as f64;
        writeln!(f, "\nfleetmq-sim upgrade-demo summary")?;
        writeln!(f, "  {:<14} {}", "build", self.version)?;
        writeln!(
            f,
            "  {:<14} {} ({} connected in {:.1} s)",
            "devices",
            self.devices,
            self.connected,
            self.connect_phase.as_secs_f64()
        )?;
        writeln!(
            f,
            "  {:<14} {} ({})",
            "batch status", d.status, d.progress_report
        )?;
        writeln!(f, "  {:<14} {:>8} {:>8}", "status", "devices", "share")?;
        for (name, n, rate) in [
            ("success", c.success, d.success_rate),
            ("failed", c.failed, d.failed_rate),
            ("aborted", c.aborted, d.aborted_rate),
            ("cancelled", c.cancelled, d.cancelled_rate),
            ("in-progress", c.in_progress, None),
        ] {
            let share = rate.unwrap_or(n as f64 * 100.0 / total);
            writeln!(f, "  {name:<14} {n:>8} {share:>7.0}%")?;
        }
        writeln!(f, "  {:<14} {:>8}", "total", d.total)?;
        writeln!(f, "  {:<14} {}", "device reboots", self.reboots)?;
        writeln!(
            f,
            "  {:<14} {:.1} s",
            "rollout",
            self.rollout_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  {:<14} {:.1} s",
            "total time",
            self.total_time.as_secs_f64()
        )?;
        let t = &self.timing;
        let p = &t.per_device;
        writeln!(
            f,
            "  timings (from the batch POST's answer, as the devices saw them)"
        )?;
        writeln!(
            f,
            "    {:<26} {}",
            "batch POST answered in",
            human(Some(t.post_latency))
        )?;
        writeln!(
            f,
            "    {:<26} {} ({} devices fetched)",
            "dispatch (last 1st fetch)",
            human(t.dispatch),
            t.fetched
        )?;
        writeln!(
            f,
            "    {:<26} {}",
            "batch ended (detail)",
            human(t.batch_completion)
        )?;
        writeln!(
            f,
            "    {:<26} {} ({} devices)",
            "last device on new fw",
            human(t.devices_completion),
            t.installed
        )?;
        writeln!(
            f,
            "    {:<26} p50 {} p90 {} p99 {} max {} (n={})",
            "per device (fetch→online)",
            human(Some(p.p50)),
            human(Some(p.p90)),
            human(Some(p.p99)),
            human(Some(p.max)),
            p.count
        )?;
        if let Some((rss, peak)) = self.memory {
            writeln!(
                f,
                "  {:<14} {} MiB (peak {} MiB)",
                "simulator RSS",
                rss / 1024,
                peak / 1024
            )?;
        }
        Ok(())
    }
}

/// Resident and peak resident memory of this process in KiB (Linux `/proc/self/status`).
pub(crate) fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_count_from_the_batch_creation() {
        let epoch = Instant::now();
        let s = Duration::from_secs;
        let upgrades = UpgradeSnapshot {
            first_fetches: 10,
            last_first_fetch: Some(s(13)),
            installed: 9,
            last_installed: Some(s(30)),
            durations: DurationSummary::default(),
        };
        let t = Timing::new(
            epoch,
            epoch + s(9),
            epoch + s(10),
            Some(epoch + s(31)),
            upgrades,
        );
        assert_eq!(t.post_latency, s(1));
        assert_eq!(t.dispatch, Some(s(3)));
        assert_eq!(t.batch_completion, Some(s(21)));
        assert_eq!(t.devices_completion, Some(s(20)));
        assert_eq!((t.fetched, t.installed), (10, 9));
        let none = Timing::new(epoch, epoch, epoch, None, UpgradeSnapshot::default());
        assert_eq!((none.dispatch, none.batch_completion), (None, None));
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
        assert_eq!(human(Some(Duration::from_millis(1500))), "1.50 s");
        assert_eq!(human(None), "—");
    }
}
