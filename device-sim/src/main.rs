//! `fleetmq-sim`: registers N simulated devices through the REST API (or reads them from a
//! CSV), connects them to the broker at a paced rate, keeps them publishing for a while and
//! prints a summary. See the crate docs of `fleetmq_sim` for the device behaviour.
//!
//! `fleetmq-sim … upgrade-demo` does the same, then uploads a firmware build through the
//! firmware-upgrader REST API, upgrades the whole fleet in one batch and shows it live.
//! The fault flags (`--fault-*`) make a deterministic share of the devices misbehave (see
//! `FaultMix::assign`), so a rollout's failure handling can be watched.
//!
//! This file is only the command line: the flags, their parsers, and `main` handing them
//! to the library as `fleetmq_sim::run::RunOptions` and `fleetmq_sim::demo::DemoOptions`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};
use fleetmq_protocol::software::{
    APP_NAME_MAX_CHARS, APPLICATIONS_MAX, SOFTWARE_VERSION_MAX_CHARS,
};
use fleetmq_sim::demo::{self, DemoOptions};
use fleetmq_sim::firmware::Rollout;
use fleetmq_sim::run::{self, RunOptions, TlsOptions};
use fleetmq_sim::{Consent, FaultMix, SoftwareConfig};
use indicatif::MultiProgress;

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
    /// MQTT over TLS: trust this PEM certificate (the server's, e.g.
    /// `<data-dir>/tls/mqtt-cert.pem`, or its CA); `--mqtt` is then the TLS listener
    /// (default port 8883).
    #[arg(long, env = "FLEETMQ_MQTT_CA")]
    mqtt_ca: Option<PathBuf>,
    /// The name the server certificate must carry (default: the `--mqtt` IP address).
    #[arg(long, requires = "mqtt_ca")]
    mqtt_server_name: Option<String>,
    /// Log in with this PEM client certificate instead of the device key (one device; with
    /// --client-key and --mqtt-ca).
    #[arg(long, requires_all = ["client_key", "mqtt_ca"], conflicts_with = "client_cert_dir")]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// A fleet's client certificates: `<device_id>.pem` and `<device_id>.key` per device;
    /// devices without them log in with their key (with --mqtt-ca).
    #[arg(long, requires = "mqtt_ca")]
    client_cert_dir: Option<PathBuf>,
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
    /// Fraction of devices that speak MQTT 5 (answering requests where they are told, with
    /// their correlation data); the others speak MQTT 3.1.1.
    #[arg(long, global = true, default_value_t = 0.0, value_parser = parse_fraction)]
    mqtt5_fraction: f64,
    /// How long a `--fault-offline` device stays offline.
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    offline_for: Duration,
    // Application software (OTAO): the same for every device of the run.
    /// An application every device runs at start, `APP=VERSION` (repeat for more).
    #[arg(long = "software", value_name = "APP=VERSION", value_parser = parse_application)]
    software: Vec<(String, String)>,
    /// The answer to every software offer: `accept` or `reject`.
    #[arg(long, default_value = "accept", value_parser = parse_consent)]
    software_consent: Consent,
    /// Fraction (0–1) of software installations that fail, picked per device and operation
    /// (reproducible).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    software_fail_fraction: f64,
    /// How long a software installation takes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    software_install_ms: u64,
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

    /// The application software flags.
    fn software(&self) -> anyhow::Result<SoftwareConfig> {
        let applications: BTreeMap<String, String> = self.software.iter().cloned().collect();
        if applications.len() != self.software.len() {
            bail!("--software names an application twice");
        }
        if applications.len() > APPLICATIONS_MAX {
            bail!("--software: at most {APPLICATIONS_MAX} applications per device");
        }
        Ok(SoftwareConfig {
            applications,
            consent: self.software_consent,
            fail_fraction: self.software_fail_fraction,
            install_time: Duration::from_millis(self.software_install_ms),
        })
    }

    /// The fleet flags, for the library's run and demo.
    fn run_options(&self) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            api: self.api.clone(),
            token: self.token.clone(),
            org: self.org.clone(),
            devices: self.devices,
            mqtt: self.mqtt,
            csv: self.csv.clone(),
            reuse: self.reuse,
            telemetry_interval: self.telemetry_interval,
            coordinates_interval: self.coordinates_interval,
            duration: self.duration,
            connect_rate: self.connect_rate,
            max_pending_connects: self.max_pending_connects,
            mqtt_connect_timeout: self.mqtt_connect_timeout,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            register_concurrency: self.register_concurrency,
            install_time: self.install_time,
            faults: self.faults(),
            mqtt5_fraction: self.mqtt5_fraction,
            tls: self.mqtt_ca.clone().map(|ca| TlsOptions {
                ca,
                server_name: self.mqtt_server_name.clone(),
                client_cert: self.client_cert.clone().zip(self.client_key.clone()),
                client_cert_dir: self.client_cert_dir.clone(),
            }),
            software: self.software()?,
        })
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

    /// The demo flags, for [`demo::upgrade_demo`].
    fn demo_options(&self) -> DemoOptions {
        DemoOptions {
            image_size: self.image_size,
            build_version: self.build_version.clone(),
            category: self.category.clone(),
            rollout: self.rollout(),
            watch_timeout: self.watch_timeout,
            poll_interval: self.poll_interval,
            report: self.report.clone(),
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

/// Parses `APP=VERSION` (an application's name and version, within the protocol's bounds).
fn parse_application(text: &str) -> Result<(String, String), String> {
    let Some((name, version)) = text.split_once('=') else {
        return Err(format!("`{text}` is not APP=VERSION"));
    };
    let (name, version) = (name.trim(), version.trim());
    if name.is_empty() || name.chars().count() > APP_NAME_MAX_CHARS {
        return Err(format!(
            "application names have 1 to {APP_NAME_MAX_CHARS} characters"
        ));
    }
    if version.is_empty() || version.chars().count() > SOFTWARE_VERSION_MAX_CHARS {
        return Err(format!(
            "versions have 1 to {SOFTWARE_VERSION_MAX_CHARS} characters"
        ));
    }
    Ok((name.to_owned(), version.to_owned()))
}

/// Parses `accept` or `reject`.
fn parse_consent(text: &str) -> Result<Consent, String> {
    match text.trim() {
        "accept" => Ok(Consent::Accept),
        "reject" => Ok(Consent::Reject),
        _ => Err(format!("`{text}` is neither accept nor reject")),
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
    let options = cli.run_options()?;
    if let Some(Command::UpgradeDemo(args)) = &cli.command {
        return demo::upgrade_demo(&options, &args.demo_options(), &bars).await;
    }
    let credentials = run::credentials(&options, &bars).await?;
    let configs = run::device_configs(&options, &credentials)?;
    let summary = run::run_fleet(&options, configs, &bars).await;
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
    fn the_software_flags_parse_into_one_setting_for_every_device() {
        let cli = Cli::try_parse_from([
            "fleetmq-sim",
            "--org",
            "acme",
            "--software",
            "smart-kettle=1.0.2",
            "--software",
            "ui=2.0.0",
            "--software-consent",
            "reject",
            "--software-fail-fraction",
            "0.25",
            "--software-install-ms",
            "50",
        ])
        .unwrap();
        let software = cli.software().unwrap();
        assert_eq!(software.applications.len(), 2);
        assert_eq!(software.applications["smart-kettle"], "1.0.2");
        assert_eq!(software.consent, Consent::Reject);
        assert_eq!(software.fail_fraction, 0.25);
        assert_eq!(software.install_time, Duration::from_millis(50));

        let defaults = Cli::try_parse_from(["fleetmq-sim", "--org", "acme"])
            .unwrap()
            .software()
            .unwrap();
        assert_eq!(defaults, SoftwareConfig::default());

        for bad in [
            &["--software", "kettle"][..],
            &["--software", "=1.0"],
            &["--software", "kettle="],
            &["--software-consent", "maybe"],
            &["--software-fail-fraction", "2"],
        ] {
            let args = ["fleetmq-sim", "--org", "acme"].iter().chain(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        let twice = Cli::try_parse_from([
            "fleetmq-sim",
            "--org",
            "acme",
            "--software",
            "a=1",
            "--software",
            "a=2",
        ])
        .unwrap();
        assert!(twice.software().is_err());
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
