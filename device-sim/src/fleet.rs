//! Many devices in one process, started at a paced rate and counted together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::device::{DeviceConfig, SimHandle, spawn_device};
use crate::stats::{Stats, StatsSnapshot};

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
}

/// A running set of simulated devices sharing one [`Stats`]. Devices have no event streams
/// (that would cost memory per device); follow them through [`Fleet::stats`].
pub struct Fleet {
    devices: Vec<SimHandle>,
    stats: Arc<Stats>,
}

impl Fleet {
    /// Starts every device now, paced and limited by `options`. Must be called inside a
    /// tokio runtime.
    pub fn spawn(devices: impl IntoIterator<Item = DeviceConfig>, options: FleetOptions) -> Fleet {
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
