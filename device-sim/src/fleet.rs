//! Many devices in one process, started at a paced rate and counted together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::device::{DeviceConfig, SimHandle, spawn_device};
use crate::stats::{Stats, StatsSnapshot};
use crate::update::{Fault, splitmix64};

/// Connections per source address before the next loopback address is used. Linux hands
/// out ~28k ephemeral ports per source address (32768–60999); stay below it.
pub const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;

/// How a fleet connects.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// First connection attempts per second: the i-th device starts `i / rate` seconds after
    /// the fleet. `None` starts all at once.
    pub connect_rate: Option<f64>,
    /// Handshakes (TCP connect to SUBACK) in flight at once across the fleet. A broker slows
    /// down as it fills; without a cap, handshakes beyond what it answers within the connect
    /// timeout are abandoned and retried, and the retries add to its load.
    pub max_pending_connects: Option<usize>,
    /// Which devices misbehave; see [`FaultMix::assign`]. Devices whose config already has
    /// a fault keep it.
    pub faults: FaultMix,
    /// Fraction (0–1) of the devices that speak MQTT 5, spread evenly over the fleet by
    /// index (see [`speaks_mqtt5`]); the others keep their config's version.
    pub mqtt5_fraction: f64,
}

/// Whether the `index`-th device of a fleet speaks MQTT 5 when `fraction` of them do:
/// spread evenly (every other device at 0.5), the same devices on every run.
pub fn speaks_mqtt5(index: usize, fraction: f64) -> bool {
    let fraction = fraction.clamp(0.0, 1.0);
    ((index + 1) as f64 * fraction).floor() > (index as f64 * fraction).floor()
}

/// Seed of the fleet's fault shuffle: fixed, so that a run is reproducible.
const FAULT_SEED: u64 = 0x0066_6c65_6574_6d71; // "fleetmq"

/// Fractions (0–1) of a fleet given each [`Fault`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultMix {
    /// [`Fault::ChecksumMismatch`].
    pub checksum_mismatch: f64,
    /// [`Fault::DownloadError`] with `download_failures` failures.
    pub download_error: f64,
    /// How many fetches fail on a [`Fault::DownloadError`] device.
    pub download_failures: u32,
    /// [`Fault::FailedGraceful`].
    pub failed_graceful: f64,
    /// [`Fault::FailedCritical`].
    pub failed_critical: f64,
    /// [`Fault::Hang`].
    pub hang: f64,
    /// [`Fault::Offline`] for `offline_for`.
    pub offline: f64,
    /// How long a [`Fault::Offline`] device stays away.
    pub offline_for: Duration,
}

impl Default for FaultMix {
    /// No faults (one download failure, 60 s offline, should a fraction be set).
    fn default() -> Self {
        FaultMix {
            checksum_mismatch: 0.0,
            download_error: 0.0,
            download_failures: 1,
            failed_graceful: 0.0,
            failed_critical: 0.0,
            hang: 0.0,
            offline: 0.0,
            offline_for: Duration::from_secs(60),
        }
    }
}

impl FaultMix {
    /// The fault of each of `n` devices, by device index. Deterministic: the indices are
    /// shuffled with a fixed seed (ordered by SplitMix64 of seed ^ index), then the first
    /// ⌈n·checksum_mismatch⌉ get [`Fault::ChecksumMismatch`], the next ⌈n·download_error⌉
    /// [`Fault::DownloadError`], then failed_graceful, failed_critical, hang and offline in
    /// that order; each device gets at most one fault, and when the fractions add up to
    /// more than 1 the later faults get what is left. The same `n` and mix always give the
    /// same devices the same faults, and faulty devices are spread over the fleet (and so
    /// over a rollout's waves) rather than bunched at its start.
    pub fn assign(&self, n: usize) -> Vec<Option<Fault>> {
        let mut faults = vec![None; n];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| splitmix64(FAULT_SEED ^ i as u64));
        let plan = [
            (self.checksum_mismatch, Fault::ChecksumMismatch),
            (
                self.download_error,
                Fault::DownloadError {
                    failures: self.download_failures,
                },
            ),
            (self.failed_graceful, Fault::FailedGraceful),
            (self.failed_critical, Fault::FailedCritical),
            (self.hang, Fault::Hang),
            (
                self.offline,
                Fault::Offline {
                    for_: self.offline_for,
                },
            ),
        ];
        let mut next = order.into_iter();
        for (fraction, fault) in plan {
            let fraction = if fraction.is_finite() {
                fraction.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let count = (n as f64 * fraction).ceil() as usize;
            for i in next.by_ref().take(count) {
                faults[i] = Some(fault);
            }
        }
        faults
    }

    /// Whether any fraction is set.
    pub fn is_empty(&self) -> bool {
        [
            self.checksum_mismatch,
            self.download_error,
            self.failed_graceful,
            self.failed_critical,
            self.hang,
            self.offline,
        ]
        .iter()
        .all(|f| f.is_nan() || *f <= 0.0)
    }
}

/// A running set of simulated devices sharing one [`Stats`]. Devices have no event streams
/// (that would cost memory per device); follow them through [`Fleet::stats`].
pub struct Fleet {
    devices: Vec<SimHandle>,
    stats: Arc<Stats>,
}

impl Fleet {
    /// Starts every device now, paced and limited by `options`, faults assigned by index
    /// ([`FaultMix::assign`]). Must be called inside a tokio runtime.
    pub fn spawn(devices: impl IntoIterator<Item = DeviceConfig>, options: FleetOptions) -> Fleet {
        let mut devices: Vec<DeviceConfig> = devices.into_iter().collect();
        if !options.faults.is_empty() {
            let faults = options.faults.assign(devices.len());
            for (config, fault) in devices.iter_mut().zip(faults) {
                if config.fault.is_none() {
                    config.fault = fault;
                }
            }
        }
        for (i, config) in devices.iter_mut().enumerate() {
            if speaks_mqtt5(i, options.mqtt5_fraction) {
                config.mqtt_version = crate::mqtt::Version::V5;
            }
        }
        let stats = Arc::new(Stats::default());
        let start = Instant::now();
        let rate = options.connect_rate.filter(|r| r.is_finite() && *r > 0.0);
        let handshakes = options
            .max_pending_connects
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        let devices = devices
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                let start_at = rate.map(|r| start + Duration::from_secs_f64(i as f64 / r));
                spawn_device(
                    config,
                    Arc::clone(&stats),
                    false,
                    start_at,
                    handshakes.clone(),
                )
            })
            .collect();
        Fleet { devices, stats }
    }

    /// The shared counters; [`Stats::wait_until`] awaits a condition on them.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A copy of the shared counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The devices, e.g. to ask one of them for telemetry now.
    pub fn devices(&self) -> &[SimHandle] {
        &self.devices
    }

    /// Waits until `n` devices are connected at the same time.
    pub async fn wait_connected(&self, n: usize) -> StatsSnapshot {
        let n = n as u64;
        self.stats.wait_until(|s| s.connected_now >= n).await
    }

    /// Stops every device (offline presence, DISCONNECT) concurrently and waits for all.
    pub async fn stop(self) {
        for device in &self.devices {
            device.request_stop();
        }
        for device in self.devices {
            device.join().await;
        }
    }
}

/// The source address for the `index`-th device of a fleet: the kernel's choice for the
/// first [`CONNECTIONS_PER_SOURCE_IP`] devices, then 127.0.0.2, 127.0.0.3, … — only when the
/// broker is on IPv4 loopback, the one case where any 127.x source reaches it.
pub fn source_ip_for(index: usize, broker: SocketAddr) -> Option<IpAddr> {
    let block = index / CONNECTIONS_PER_SOURCE_IP;
    match broker.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && block > 0 => {
            let host = u8::try_from(1 + block).ok()?;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_assigned_deterministically_by_fraction() {
        let mix = FaultMix {
            checksum_mismatch: 0.1,
            hang: 0.05,
            offline: 0.01,
            ..FaultMix::default()
        };
        let faults = mix.assign(100);
        assert_eq!(faults, mix.assign(100), "reproducible");
        let count = |f: Fault| faults.iter().filter(|x| **x == Some(f)).count();
        assert_eq!(count(Fault::ChecksumMismatch), 10);
        assert_eq!(count(Fault::Hang), 5);
        assert_eq!(
            count(Fault::Offline {
                for_: Duration::from_secs(60)
            }),
            1
        );
        assert_eq!(faults.iter().filter(|f| f.is_none()).count(), 84);
        // Spread over the fleet, not the first ten devices.
        assert!(faults[..10].iter().any(Option::is_none));
        // A tiny fraction still hits one device; fractions past 1 get what is left.
        let one = FaultMix {
            hang: 0.001,
            ..FaultMix::default()
        };
        assert_eq!(one.assign(3).iter().filter(|f| f.is_some()).count(), 1);
        let greedy = FaultMix {
            failed_graceful: 0.8,
            failed_critical: 0.8,
            ..FaultMix::default()
        };
        let faults = greedy.assign(10);
        assert_eq!(count_of(&faults, Fault::FailedGraceful), 8);
        assert_eq!(count_of(&faults, Fault::FailedCritical), 2);
        assert!(
            FaultMix::default().is_empty()
                && FaultMix::default().assign(5).iter().all(Option::is_none)
        );
    }

    #[test]
    fn the_mqtt5_fraction_is_spread_evenly_and_exactly() {
        for (fraction, n, expected) in [(0.0, 10, 0), (0.5, 10, 5), (0.3, 100, 30), (1.0, 7, 7)] {
            let v5: Vec<usize> = (0..n).filter(|i| speaks_mqtt5(*i, fraction)).collect();
            assert_eq!(v5.len(), expected, "{fraction} of {n}");
        }
        let half: Vec<bool> = (0..4).map(|i| speaks_mqtt5(i, 0.5)).collect();
        assert_eq!(half, [false, true, false, true], "every other device");
    }

    fn count_of(faults: &[Option<Fault>], fault: Fault) -> usize {
        faults.iter().filter(|f| **f == Some(fault)).count()
    }

    #[test]
    fn source_addresses_spread_over_loopback_past_the_per_address_budget() {
        let local: SocketAddr = "127.0.0.1:1883".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(source_ip_for(0, local), None);
        assert_eq!(source_ip_for(CONNECTIONS_PER_SOURCE_IP - 1, local), None);
        assert_eq!(
            source_ip_for(CONNECTIONS_PER_SOURCE_IP, local),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_ip_for(3 * CONNECTIONS_PER_SOURCE_IP + 5, local),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))
        );
        let remote: SocketAddr = "192.0.2.1:1883".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(source_ip_for(CONNECTIONS_PER_SOURCE_IP * 2, remote), None);
    }
}
