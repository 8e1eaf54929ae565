//! One run of the simulator: where its devices come from (the `id,key` CSV, reused `sim-…`
//! devices, new registrations), their [`DeviceConfig`]s, and the fleet run that keeps them
//! connected for `--duration` and ends in a [`RunSummary`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::fleet::source_ip_for;
use crate::progress::bar;
use crate::registration::{self, ApiClient, Credentials};
use crate::report::{RunSummary, memory_kib};
use crate::software::SoftwareConfig;
use crate::tls::{ClientCertificate, DeviceTls, TrustedServer};
use crate::{DeviceConfig, FaultMix, Fleet, FleetOptions, SimError};

/// Everything a run is told from the outside (the `fleetmq-sim` flags before any
/// subcommand): where the API and the broker are, which devices, and the load's shape.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Base URL of the fleetmq REST API (for registration and the demo's firmware calls).
    pub api: String,
    /// API token; needed unless the CSV already has enough devices.
    pub token: Option<String>,
    /// Slug of the organization the devices belong to.
    pub org: String,
    /// Number of devices to run.
    pub devices: usize,
    /// Broker address.
    pub mqtt: SocketAddr,
    /// `id,key` CSV devices are read from and newly registered ones are added to.
    pub csv: Option<PathBuf>,
    /// Reuse devices named `sim-…` already registered in the organization first.
    pub reuse: bool,
    /// Telemetry period per device (zero disables).
    pub telemetry_interval: Duration,
    /// Coordinates period per device (zero disables).
    pub coordinates_interval: Duration,
    /// How long the fleet runs once the connect phase is over.
    pub duration: Duration,
    /// New connections per second.
    pub connect_rate: f64,
    /// Handshakes in flight at once.
    pub max_pending_connects: usize,
    /// Per-attempt deadline for TCP connect plus CONNACK.
    pub mqtt_connect_timeout: Duration,
    /// How long to wait for every device to connect.
    pub connect_timeout: Duration,
    /// MQTT keep-alive of each device.
    pub keep_alive: Duration,
    /// Concurrent registration requests.
    pub register_concurrency: usize,
    /// How long an update runs on a device between `update/start` and its reboot.
    pub install_time: Duration,
    /// The share of devices given each fault.
    pub faults: FaultMix,
    /// The share of devices that speak MQTT 5 (the others MQTT 3.1.1).
    pub mqtt5_fraction: f64,
    /// MQTT over TLS to the broker's TLS listener at `mqtt`; `None` is plain TCP.
    pub tls: Option<TlsOptions>,
    /// The applications every device runs and how they answer offers and deliveries.
    pub software: SoftwareConfig,
}

/// How a run's devices speak TLS (`--mqtt-ca` and the client certificate flags).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM certificate(s) to trust: the server's (e.g. `<data-dir>/tls/mqtt-cert.pem`) or its CA.
    pub ca: PathBuf,
    /// The name the server certificate is checked against; default: the broker's IP address.
    pub server_name: Option<String>,
    /// One device's certificate and key (`--client-cert`, `--client-key`); runs one device.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `<device_id>.pem` and `<device_id>.key` per device (`--client-cert-dir`); devices
    /// without files there log in with their key.
    pub client_cert_dir: Option<PathBuf>,
}

impl TlsOptions {
    /// One [`DeviceTls`] per device id, in order: certificate login where the options give
    /// the device a certificate, key login over TLS otherwise (one shared configuration).
    pub fn for_devices(
        &self,
        mqtt: SocketAddr,
        device_ids: &[String],
    ) -> Result<Vec<DeviceTls>, SimError> {
        let name = match &self.server_name {
            Some(name) => TrustedServer::parse_name(name)?,
            None => TrustedServer::name_of(mqtt.ip()),
        };
        let server = TrustedServer::from_file(&self.ca, name)?;
        let with_key = DeviceTls::with_key(&server)?;
        if let Some((cert, key)) = &self.client_cert {
            if device_ids.len() != 1 {
                return Err(SimError::Tls(format!(
                    "--client-cert is one device's certificate, but {} devices run;                      use --client-cert-dir for a fleet",
                    device_ids.len()
                )));
            }
            let certificate = ClientCertificate::from_files(cert, key)?;
            return Ok(vec![DeviceTls::with_certificate(&server, certificate)?]);
        }
        device_ids
            .iter()
            .map(|id| {
                let certificate = match &self.client_cert_dir {
                    Some(dir) => ClientCertificate::from_dir(dir, id)?,
                    None => None,
                };
                match certificate {
                    Some(certificate) => DeviceTls::with_certificate(&server, certificate),
                    None => Ok(with_key.clone()),
                }
            })
            .collect()
    }
}

/// The devices to run: from the CSV, then reused `sim-…` devices, then newly registered
/// ones (which are written back to the CSV).
pub async fn credentials(
    options: &RunOptions,
    bars: &MultiProgress,
) -> anyhow::Result<Vec<Credentials>> {
    let mut devices = match &options.csv {
        Some(path) if path.exists() => registration::read_csv(path)?,
        _ => Vec::new(),
    };
    let from_csv = devices.len();
    if devices.len() >= options.devices {
        devices.truncate(options.devices);
        return Ok(devices);
    }
    let token = options.token.as_deref().context(
        "registering devices needs --token (or FLEETMQ_TOKEN), or a --csv with enough devices",
    )?;
    let api = ApiClient::new(&options.api, token);
    if options.reuse {
        for reused in api.devices_named(&options.org, "sim-").await? {
            if devices.len() >= options.devices {
                break;
            }
            if !devices.iter().any(|d| d.id == reused.id) {
                devices.push(reused);
            }
        }
    }
    let missing = options.devices.saturating_sub(devices.len());
    if missing > 0 {
        let org = api.organization_id(&options.org).await?;
        let bar = bar(bars, missing as u64, "registering");
        let run_tag: u16 = rand::random();
        let run = format!("{run_tag:04x}");
        let mut pending = JoinSet::new();
        let mut registered = Vec::with_capacity(missing);
        let mut next = 0;
        while registered.len() < missing {
            while next < missing && pending.len() < options.register_concurrency.max(1) {
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
    if let Some(path) = &options.csv
        && devices.len() > from_csv
    {
        registration::write_csv(path, &devices)?;
    }
    Ok(devices)
}

/// One [`DeviceConfig`] per device, spread over source addresses and around Rome, over TLS
/// (with their client certificates) when the options say so.
pub fn device_configs(
    options: &RunOptions,
    credentials: &[Credentials],
) -> Result<Vec<DeviceConfig>, SimError> {
    let every = |d: Duration| (!d.is_zero()).then_some(d);
    let ids: Vec<String> = credentials.iter().map(|c| c.id.to_string()).collect();
    let mut tls = match &options.tls {
        Some(tls) => tls
            .for_devices(options.mqtt, &ids)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; ids.len()],
    };
    let with_certificate = tls
        .iter()
        .flatten()
        .filter(|t| t.with_certificate_login())
        .count();
    if options.tls.is_some() {
        tracing::info!(
            devices = ids.len(),
            with_certificate,
            "devices connect over TLS"
        );
    }
    let configs = credentials
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (c, id))| {
            let mut config = DeviceConfig::new(options.mqtt, &options.org, &id, &c.key);
            config.telemetry_interval = every(options.telemetry_interval);
            config.coordinates_interval = every(options.coordinates_interval);
            config.keep_alive = options.keep_alive;
            config.connect_timeout = options.mqtt_connect_timeout;
            config.source_ip = source_ip_for(i, options.mqtt);
            config.install_time = options.install_time;
            config.software = options.software.clone();
            config.tls = tls.get_mut(i).and_then(Option::take);
            // Spread the fleet over ~50 km around Rome.
            config.home = (
                12.4964 + rand::random_range(-0.25..0.25),
                41.9028 + rand::random_range(-0.25..0.25),
            );
            config
        })
        .collect();
    Ok(configs)
}

/// Starts the fleet, waits for it to connect, keeps it running for `--duration` (or until
/// Ctrl-C) with live bars, stops it and returns what the summary shows.
pub async fn run_fleet(
    options: &RunOptions,
    configs: Vec<DeviceConfig>,
    bars: &MultiProgress,
) -> RunSummary {
    let devices = configs.len();
    let started = Instant::now();
    let fleet_options = FleetOptions {
        connect_rate: Some(options.connect_rate),
        max_pending_connects: Some(options.max_pending_connects),
        faults: options.faults,
        mqtt5_fraction: options.mqtt5_fraction,
    };
    let fleet = Fleet::spawn(configs, fleet_options);
    let stats = Arc::clone(fleet.stats());
    let mut peak = 0;
    let mut refresh = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;

    let connecting = bar(bars, devices as u64, "connecting");
    let all = stats.wait_until(|s| s.connected_now >= devices as u64);
    tokio::pin!(all);
    let deadline = tokio::time::sleep(options.connect_timeout);
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
        let running = bar(bars, options.duration.as_secs().max(1), "running");
        running.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} s {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        running.set_prefix("running");
        let end = tokio::time::sleep(options.duration);
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

    RunSummary {
        devices,
        peak_connected: peak,
        connect_phase,
        all_connected,
        ran_for,
        stats: stats.snapshot(),
        memory,
    }
}
