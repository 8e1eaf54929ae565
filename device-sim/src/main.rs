//! `fleetmq-sim`: registers N simulated devices through the REST API (or reads them from a
//! CSV), connects them to the broker at a paced rate, keeps them publishing for a while and
//! prints a summary. See the crate docs of `fleetmq_sim` for the device behaviour.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetmq_sim::error::connack_meaning;
use fleetmq_sim::fleet::source_ip_for;
use fleetmq_sim::registration::{self, ApiClient, Credentials};
use fleetmq_sim::{DeviceConfig, Fleet, FleetOptions, StatsSnapshot};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

/// Simulated fleetmq devices: a demo and a load generator.
#[derive(Debug, Parser)]
#[command(name = "fleetmq-sim", version)]
struct Cli {
    /// Base URL of the fleetmq REST API (for registration).
    #[arg(long, env = "FLEETMQ_API", default_value = "http://127.0.0.1:8000")]
    api: String,
    /// API token (`Authorization: Bearer`); needed unless the CSV already has enough devices.
    #[arg(long, env = "FLEETMQ_TOKEN")]
    token: Option<String>,
    /// Slug of the organization the devices belong to.
    #[arg(long)]
    org: String,
    /// Number of devices to run.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Broker address.
    #[arg(long, env = "FLEETMQ_MQTT", default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// `id,key` CSV: devices are read from it; devices registered by this run are added to it.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Reuse devices named `sim-…` already registered in the organization before registering
    /// new ones.
    #[arg(long)]
    reuse: bool,
    /// Telemetry period per device (`0` disables), e.g. `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    telemetry_interval: Duration,
    /// Coordinates period per device (`0` disables).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    coordinates_interval: Duration,
    /// How long to keep the fleet running once the connect phase is over.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// New connections per second.
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Handshakes (TCP connect to SUBACK) in flight at once; caps the load a slowing broker
    /// sees instead of letting handshakes time out and retry.
    #[arg(long, default_value_t = 500)]
    max_pending_connects: usize,
    /// Per-attempt deadline for TCP connect plus CONNACK.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    mqtt_connect_timeout: Duration,
    /// Give up waiting for every device to connect after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// MQTT keep-alive of each device.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    keep_alive: Duration,
    /// Concurrent registration requests.
    #[arg(long, default_value_t = 16)]
    register_concurrency: usize,
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 2m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.devices == 0 {
        bail!("--devices must be at least 1");
    }
    raise_open_files_limit(cli.devices);

    let bars = MultiProgress::new();
    let credentials = credentials(&cli, &bars).await?;
    let configs = device_configs(&cli, &credentials);
    let summary = run_fleet(&cli, configs, &bars).await;
    print!("{summary}");
    Ok(())
}

/// Each device holds one socket; the default soft limit (often 1024) stops a load test
/// early. Raise it to the hard limit (no unsafe code: the `rlimit` crate wraps setrlimit).
fn raise_open_files_limit(devices: usize) {
    let wanted = devices as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => eprintln!(
            "warning: open files limit is {limit}, below the {wanted} this run needs; \
             raise the hard limit (ulimit -Hn / limits.conf)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not raise the open files limit: {e}"),
    }
}

fn bar(bars: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template(&format!(
        "{what:>12} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {{per_sec}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The devices to run: from the CSV, then reused `sim-…` devices, then newly registered
/// ones (which are written back to the CSV).
async fn credentials(cli: &Cli, bars: &MultiProgress) -> anyhow::Result<Vec<Credentials>> {
    let mut devices = match &cli.csv {
        Some(path) if path.exists() => registration::read_csv(path)?,
        _ => Vec::new(),
    };
    let from_csv = devices.len();
    if devices.len() >= cli.devices {
        devices.truncate(cli.devices);
        return Ok(devices);
    }
    let token = cli.token.as_deref().context(
        "registering devices needs --token (or FLEETMQ_TOKEN), or a --csv with enough devices",
    )?;
    let api = ApiClient::new(&cli.api, token);
    if cli.reuse {
        for reused in api.devices_named(&cli.org, "sim-").await? {
            if devices.len() >= cli.devices {
                break;
            }
            if !devices.iter().any(|d| d.id == reused.id) {
                devices.push(reused);
            }
        }
    }
    let missing = cli.devices.saturating_sub(devices.len());
    if missing > 0 {
        let org = api.organization_id(&cli.org).await?;
        let bar = bar(bars, missing as u64, "registering");
        let run_tag: u16 = rand::random();
        let run = format!("{run_tag:04x}");
        let mut pending = JoinSet::new();
        let mut registered = Vec::with_capacity(missing);
        let mut next = 0;
        while registered.len() < missing {
            while next < missing && pending.len() < cli.register_concurrency.max(1) {
                let (api, run, i) = (api.clone(), run.clone(), next);
                pending.spawn(async move {
                    let name = registration::device_name(&run, i);
                    let mac = registration::device_mac(run_tag, i);
                    api.create_device(org, &name, &mac, "sim-board")
                        .await
                        .map(|c| (i, c))
                });
                next += 1;
            }
            let Some(done) = pending.join_next().await else {
                break;
            };
            registered.push(done.context("registration task failed")??);
            bar.inc(1);
        }
        bar.finish_with_message(format!("run {run}"));
        registered.sort_by_key(|(i, _)| *i);
        devices.extend(registered.into_iter().map(|(_, c)| c));
    }
    if let Some(path) = &cli.csv
        && devices.len() > from_csv
    {
        registration::write_csv(path, &devices)?;
    }
    Ok(devices)
}

fn device_configs(cli: &Cli, credentials: &[Credentials]) -> Vec<DeviceConfig> {
    let every = |d: Duration| (!d.is_zero()).then_some(d);
    credentials
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = c.id.to_string();
            let mut config = DeviceConfig::new(cli.mqtt, &cli.org, &id, &c.key);
            config.telemetry_interval = every(cli.telemetry_interval);
            config.coordinates_interval = every(cli.coordinates_interval);
            config.keep_alive = cli.keep_alive;
            config.connect_timeout = cli.mqtt_connect_timeout;
            config.source_ip = source_ip_for(i, cli.mqtt);
            // Spread the fleet over ~50 km around Rome.
            config.home = (
                12.4964 + rand::random_range(-0.25..0.25),
                41.9028 + rand::random_range(-0.25..0.25),
            );
            config
        })
        .collect()
}

/// What the summary table shows.
struct Summary {
    devices: usize,
    peak_connected: u64,
    connect_phase: Duration,
    all_connected: bool,
    ran_for: Duration,
    stats: StatsSnapshot,
    memory: Option<(u64, u64)>,
}

async fn run_fleet(cli: &Cli, configs: Vec<DeviceConfig>, bars: &MultiProgress) -> Summary {
    let devices = configs.len();
    let started = Instant::now();
    let options = FleetOptions {
        connect_rate: Some(cli.connect_rate),
        max_pending_connects: Some(cli.max_pending_connects),
    };
    let fleet = Fleet::spawn(configs, options);
    let stats = Arc::clone(fleet.stats());
    let mut peak = 0;
    let mut refresh = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;

    let connecting = bar(bars, devices as u64, "connecting");
    let all = stats.wait_until(|s| s.connected_now >= devices as u64);
    tokio::pin!(all);
    let deadline = tokio::time::sleep(cli.connect_timeout);
    tokio::pin!(deadline);
    let all_connected = loop {
        tokio::select! {
            _ = &mut all => break true,
            () = &mut deadline => break false,
            _ = &mut ctrl_c => { interrupted = true; break false }
            _ = refresh.tick() => {
                let s = stats.snapshot();
                peak = peak.max(s.connected_now);
                connecting.set_position(s.connected_now);
                connecting.set_message(format!("errors {}", s.connect_errors));
            }
        }
    };
    let connect_phase = started.elapsed();
    let s = stats.snapshot();
    peak = peak.max(s.connected_now);
    connecting.set_position(s.connected_now);
    connecting.finish_with_message(format!("in {:.1} s", connect_phase.as_secs_f64()));

    let running_since = Instant::now();
    if !interrupted {
        let running = bar(bars, cli.duration.as_secs().max(1), "running");
        running.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} s {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        running.set_prefix("running");
        let end = tokio::time::sleep(cli.duration);
        tokio::pin!(end);
        loop {
            tokio::select! {
                () = &mut end => break,
                _ = &mut ctrl_c => break,
                _ = refresh.tick() => {
                    let s = stats.snapshot();
                    peak = peak.max(s.connected_now);
                    running.set_position(running_since.elapsed().as_secs());
                    running.set_message(format!(
                        "online {} published {} acked {} commands {} reconnects {}",
                        s.connected_now, s.published, s.acked, s.commands, s.reconnects
                    ));
                }
            }
        }
        running.finish();
    }
    let ran_for = running_since.elapsed();
    let memory = memory_kib();

    let stopping = bars.add(ProgressBar::new_spinner());
    stopping.set_message(format!("stopping {devices} devices"));
    stopping.enable_steady_tick(Duration::from_millis(200));
    fleet.stop().await;
    stopping.finish_and_clear();

    Summary {
        devices,
        peak_connected: peak,
        connect_phase,
        all_connected,
        ran_for,
        stats: stats.snapshot(),
        memory,
    }
}

/// Resident and peak resident memory of this process in KiB (Linux `/proc/self/status`).
fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

impl std::fmt::Display for Summary {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
