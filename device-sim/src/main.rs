//! `fleetmq-sim`: registers N simulated devices through the REST API (or reads them from a
//! CSV), connects them to the broker at a paced rate, keeps them publishing for a while and
//! prints a summary. See the crate docs of `fleetmq_sim` for the device behaviour.
//!
//! `fleetmq-sim … upgrade-demo` does the same, then uploads a firmware build through the
//! firmware-upgrader REST API, upgrades the whole fleet in one batch and shows it live.
//! The fault flags (`--fault-*`) make a deterministic share of the devices misbehave (see
//! `FaultMix::assign`), so a rollout's failure handling can be watched.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fleetmq_sim::error::connack_meaning;
use fleetmq_sim::firmware::{BatchDetail, IMAGE_TYPE, Rollout, StatusCounts};
use fleetmq_sim::fleet::source_ip_for;
use fleetmq_sim::registration::{self, ApiClient, Credentials};
use fleetmq_sim::stats::{DurationSummary, UpgradeSnapshot};
use fleetmq_sim::update::firmware_image;
use fleetmq_sim::{DeviceConfig, FaultMix, Fleet, FleetOptions, StatsSnapshot};
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
    /// How long an update runs on a device between `update/start` and the reboot into the
    /// new firmware.
    #[arg(long, global = true, default_value = "0", value_parser = parse_duration)]
    install_time: Duration,
    /// Fraction (0–1) of devices whose images get a wrong checksum.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_checksum: f64,
    /// Fraction of devices whose first `--download-failures` fetches fail.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_download: f64,
    /// Fetches that fail on a `--fault-download` device before one works.
    #[arg(long, global = true, default_value_t = 1)]
    download_failures: u32,
    /// Fraction of devices whose update ends FAILED_GRACEFUL (old firmware kept).
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_graceful: f64,
    /// Fraction of devices whose update ends FAILED_CRITICAL.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_critical: f64,
    /// Fraction of devices that never answer update requests.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_hang: f64,
    /// Fraction of devices that stay offline for `--offline-for` after starting.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    fault_offline: f64,
    /// How long a `--fault-offline` device stays offline.
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    offline_for: Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    fn faults(&self) -> FaultMix {
        FaultMix {
            checksum_mismatch: self.fault_checksum,
            download_error: self.fault_download,
            download_failures: self.download_failures,
            failed_graceful: self.fault_graceful,
            failed_critical: self.fault_critical,
            hang: self.fault_hang,
            offline: self.fault_offline,
            offline_for: self.offline_for,
        }
    }
}

/// Without a subcommand the fleet just runs for `--duration`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Registers and starts the fleet (model "sim-board"), uploads a firmware build through
    /// the firmware-upgrader API, upgrades every device in one batch and shows it live.
    /// The fleet flags go before the subcommand; the fault flags and `--install-time` go
    /// on either side.
    UpgradeDemo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Size of the firmware image: bytes, or with a k/KiB or m/MiB suffix.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    image_size: usize,
    /// Version of the new build (default `2.0.<unix time>`).
    #[arg(long)]
    build_version: Option<String>,
    /// Name of the firmware category to create (a unique suffix is added).
    #[arg(long, default_value = "fleetmq-sim")]
    category: String,
    /// Devices upgrading at the same time.
    #[arg(long)]
    max_parallel: Option<u32>,
    /// Upgrades started per minute.
    #[arg(long)]
    rate_per_minute: Option<u32>,
    /// Cumulative percentages of the fleet per wave, e.g. `1,10,100`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100))]
    waves: Option<Vec<u32>>,
    /// Abort the batch when this fraction (0–1) of finished upgrades failed…
    #[arg(long, value_parser = parse_fraction)]
    abort_failure_rate: Option<f64>,
    /// …among at least this many finished upgrades (default 20).
    #[arg(long, requires = "abort_failure_rate")]
    abort_min_sample: Option<u32>,
    /// Stop watching the batch after this long.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    watch_timeout: Duration,
    /// How often the batch detail is read (the batch's completion time is measured to this
    /// resolution).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Write the timings (dispatch, completion, per-device durations) and the batch's end
    /// state as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

impl DemoArgs {
    fn rollout(&self) -> Rollout {
        Rollout {
            max_parallel: self.max_parallel,
            rate_per_minute: self.rate_per_minute,
            waves: self.waves.clone(),
            abort_failure_rate: self.abort_failure_rate,
            abort_min_sample: self.abort_min_sample,
        }
    }
}

/// Parses a fraction in `[0, 1]`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

/// Parses `65536`, `64k`, `64KiB`, `1m`, `1MiB`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 65536, 64KiB or 1MiB"))?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` (use k/KiB or m/MiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
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
    if let Some(Command::UpgradeDemo(demo)) = &cli.command {
        return upgrade_demo(&cli, demo, &bars).await;
    }
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
            config.install_time = cli.install_time;
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
        faults: cli.faults(),
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

/// The `upgrade-demo` subcommand: fleet up, firmware build up, one batch upgrade watched
/// until it ends, a summary.
async fn upgrade_demo(cli: &Cli, demo: &DemoArgs, bars: &MultiProgress) -> anyhow::Result<()> {
    let started = Instant::now();
    let token = cli
        .token
        .as_deref()
        .context("upgrade-demo needs --token (or FLEETMQ_TOKEN)")?;
    let api = ApiClient::new(&cli.api, token);
    let org = api
        .organization_id(&cli.org)
        .await
        .context("looking up the organization")?;

    let credentials = credentials(cli, bars).await?;
    let configs = device_configs(cli, &credentials);
    let devices = configs.len();
    let faults = cli.faults();
    let offline = faults
        .assign(devices)
        .iter()
        .filter(|f| matches!(f, Some(fleetmq_sim::Fault::Offline { .. })))
        .count();
    let fleet = Fleet::spawn(
        configs,
        FleetOptions {
            connect_rate: Some(cli.connect_rate),
            max_pending_connects: Some(cli.max_pending_connects),
            faults,
        },
    );

    // The devices that are meant to be online, online (the --fault-offline ones join later,
    // during the rollout).
    let connect_started = Instant::now();
    let expected = (devices - offline) as u64;
    let connecting = bar(bars, expected, "connecting");
    let stats = Arc::clone(fleet.stats());
    let all = stats.wait_until(|s| s.connected_now >= expected);
    tokio::pin!(all);
    let deadline = tokio::time::sleep(cli.connect_timeout);
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut all => break,
            () = &mut deadline => {
                connecting.abandon_with_message("not all devices connected; upgrading anyway");
                break;
            }
            _ = refresh.tick() => connecting.set_position(stats.snapshot().connected_now),
        }
    }
    connecting.set_position(stats.snapshot().connected_now);
    connecting.finish();
    let connect_phase = connect_started.elapsed();
    let connected = stats.snapshot().connected_now;

    let run = time::OffsetDateTime::now_utc().unix_timestamp();
    let version = demo
        .build_version
        .clone()
        .unwrap_or_else(|| format!("2.0.{run}"));
    let result = async {
        let category = api
            .create_category(org, &format!("{} {run}", demo.category))
            .await
            .context("creating the firmware category")?;
        let build = api
            .create_build(
                &category,
                &version,
                "OpenWrt 23.05 fleetmq-sim",
                "Simulated firmware uploaded by fleetmq-sim upgrade-demo.",
            )
            .await
            .context("creating the build")?;
        let image = firmware_image(&version, demo.image_size, run as u64);
        api.upload_image(&build, IMAGE_TYPE, image)
            .await
            .context("uploading the image")?;
        let posted = Instant::now();
        let batch = api
            .start_batch(&build, &demo.rollout())
            .await
            .context("starting the batch upgrade")?;
        let created = Instant::now();
        eprintln!("build {version} ({build}), batch {batch}");
        let watched = watch_batch(
            &api,
            batch,
            devices as u64,
            demo.watch_timeout,
            demo.poll_interval,
            &stats,
            bars,
        )
        .await?;
        anyhow::Ok((batch, posted, created, watched))
    }
    .await;
    // Measured before stopping: stopping devices changes nothing here, but keep it exact.
    let upgrades = stats.upgrades().snapshot();
    let memory = memory_kib();

    let stopping = bars.add(ProgressBar::new_spinner());
    stopping.set_message(format!("stopping {devices} devices"));
    stopping.enable_steady_tick(Duration::from_millis(200));
    fleet.stop().await;
    stopping.finish_and_clear();

    let (batch, posted, created, watched) = result?;
    let timing = Timing::new(
        stats.upgrades().epoch(),
        posted,
        created,
        watched.finished_at,
        upgrades,
    );
    let summary = DemoSummary {
        version,
        devices,
        connected,
        connect_phase,
        detail: watched.detail,
        rollout_time: watched.watched_for,
        total_time: started.elapsed(),
        reboots: stats.snapshot().reboots,
        timing,
        memory,
    };
    print!("{summary}");
    if let Some(path) = &demo.report {
        let report = summary.report(batch, demo);
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// What `watch_batch` saw.
struct Watched {
    /// The last detail read.
    detail: BatchDetail,
    /// How long it watched.
    watched_for: Duration,
    /// When the answer that first showed the batch ended arrived (`None`: it did not end).
    finished_at: Option<Instant>,
}

/// The upgrade's timings, all from the moment the batch POST returned (the batch exists).
#[derive(Debug, Clone, PartialEq)]
struct Timing {
    /// POST `build/{id}/upgrade/` sent → its answer.
    post_latency: Duration,
    /// Batch created → the last device received its first `images/fetch` request.
    dispatch: Option<Duration>,
    /// Devices that received one.
    fetched: u64,
    /// Batch created → the batch detail showed an end (to the poll interval).
    batch_completion: Option<Duration>,
    /// Batch created → the last device connected again on the new firmware.
    devices_completion: Option<Duration>,
    /// Devices that did.
    installed: u64,
    /// Per device: first fetch → connected on the new firmware.
    per_device: DurationSummary,
}

impl Timing {
    /// `epoch` is the instant the fleet's [`UpgradeSnapshot`] offsets count from.
    fn new(
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
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `12.3 s`, `456 ms` or `—`.
fn human(d: Option<Duration>) -> String {
    match d {
        None => "—".to_owned(),
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2} s", d.as_secs_f64()),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
    }
}

/// Polls the batch every 500 ms, one bar per status plus the overall one, until it ends,
/// Ctrl-C, or `limit`. Returns the last detail and how long it was watched.
async fn watch_batch(
    api: &ApiClient,
    batch: uuid::Uuid,
    devices: u64,
    limit: Duration,
    every: Duration,
    stats: &fleetmq_sim::Stats,
    bars: &MultiProgress,
) -> anyhow::Result<Watched> {
    let started = Instant::now();
    let overall = bar(bars, devices, "overall");
    let status_bars: Vec<(&str, ProgressBar)> =
        ["success", "failed", "aborted", "cancelled", "in-progress"]
            .into_iter()
            .map(|status| {
                let b = bars.add(ProgressBar::new(devices));
                let style = ProgressStyle::with_template(&format!(
                    "{status:>12} {{wide_bar}} {{pos}}/{{len}} {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                b.set_style(style);
                (status, b)
            })
            .collect();
    let count = |counts: &StatusCounts, status: &str| match status {
        "success" => counts.success,
        "failed" => counts.failed,
        "aborted" => counts.aborted,
        "cancelled" => counts.cancelled,
        _ => counts.in_progress,
    };
    let mut poll = tokio::time::interval(every.max(Duration::from_millis(10)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut last: Option<BatchDetail> = None;
    let mut finished_at = None;
    let mut errors = 0;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = &mut ctrl_c => break,
            () = &mut deadline => break,
        }
        let detail = match api.batch(batch).await {
            Ok(detail) => {
                errors = 0;
                detail
            }
            // A few failed polls (a restarting server) are tolerated.
            Err(e) if errors < 10 => {
                errors += 1;
                overall.set_message(format!("poll failed: {e}"));
                continue;
            }
            Err(e) => return Err(e).context("polling the batch"),
        };
        let total = detail.total.max(1);
        overall.set_length(total);
        overall.set_position(detail.status_counts.finished());
        let upgrades = stats.upgrades().snapshot();
        overall.set_message(format!(
            "{} ({}) fetched {} back on new firmware {}",
            detail.status, detail.progress_report, upgrades.first_fetches, upgrades.installed
        ));
        for (status, b) in &status_bars {
            b.set_length(total);
            b.set_position(count(&detail.status_counts, status));
        }
        let finished = detail.is_finished();
        last = Some(detail);
        if finished {
            finished_at = Some(Instant::now());
            break;
        }
    }
    overall.finish();
    for (_, b) in &status_bars {
        b.finish();
    }
    let detail = last.context("the batch detail was never read")?;
    Ok(Watched {
        detail,
        watched_for: started.elapsed(),
        finished_at,
    })
}

/// What the demo's summary table shows.
struct DemoSummary {
    version: String,
    devices: usize,
    connected: u64,
    connect_phase: Duration,
    detail: BatchDetail,
    rollout_time: Duration,
    total_time: Duration,
    reboots: u64,
    timing: Timing,
    /// This process's resident and peak resident memory, KiB.
    memory: Option<(u64, u64)>,
}

impl DemoSummary {
    /// The JSON `--report`: times in milliseconds.
    fn report(&self, batch: uuid::Uuid, demo: &DemoArgs) -> serde_json::Value {
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
            "rollout": demo.rollout().body(),
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

    #[test]
    fn sizes_and_fractions_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
    }

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

    #[test]
    fn the_demo_and_fault_flags_parse() {
        let cli = Cli::try_parse_from([
            "fleetmq-sim",
            "--org",
            "acme",
            "--fault-hang",
            "0.1",
            "upgrade-demo",
            "--install-time",
            "5s",
            "--waves",
            "1,10,100",
            "--abort-failure-rate",
            "0.2",
            "--report",
            "r.json",
            "--poll-interval",
            "100ms",
        ])
        .unwrap();
        assert_eq!(cli.faults().hang, 0.1);
        assert_eq!(cli.install_time, Duration::from_secs(5));
        let Some(Command::UpgradeDemo(demo)) = &cli.command else {
            panic!("upgrade-demo");
        };
        assert_eq!(demo.image_size, 65536);
        assert_eq!(demo.report.as_deref(), Some(std::path::Path::new("r.json")));
        assert_eq!(demo.poll_interval, Duration::from_millis(100));
        assert_eq!(demo.rollout().waves, Some(vec![1, 10, 100]));
        assert!(
            Cli::try_parse_from(["fleetmq-sim", "--org", "a", "upgrade-demo", "--waves", "0"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["fleetmq-sim", "--org", "a"])
                .unwrap()
                .command
                .is_none()
        );
    }
}
