//! Tunnel addresses: the lowest free host address of a VPN's subnet, as OpenWISP's IPAM
//! (`Subnet.request_ip`) hands them to WireGuard and VXLAN clients.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The lowest host address of `subnet` (CIDR, IPv4 or IPv6, host bits must be zero) that is not in
/// `taken`, or `None` when the subnet is full or not a network. Host addresses are those Python's
/// `ip_network(subnet).hosts()` yields: IPv4 without the network and broadcast addresses (a /31 or
/// /32 has no such reservation), IPv6 without the subnet-router anycast address (the network
/// address). The server's own address must be in `taken`.
pub fn allocate(subnet: &str, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let (network, prefix) = subnet.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    let network: IpAddr = network.parse().ok()?;
    let (first, last) = match network {
        IpAddr::V4(v4) => {
            if prefix > 32 {
                return None;
            }
            let base = u32::from(v4);
            let hosts = u32::MAX.checked_shr(prefix).unwrap_or(0);
            if base & hosts != 0 {
                return None;
            }
            let (first, last) = if prefix >= 31 {
                (base, base | hosts)
            } else {
                (base + 1, (base | hosts) - 1)
            };
            (u128::from(first), u128::from(last))
        }
        IpAddr::V6(v6) => {
            if prefix > 128 {
                return None;
            }
            let base = u128::from(v6);
            let hosts = u128::MAX.checked_shr(prefix).unwrap_or(0);
            if base & hosts != 0 {
                return None;
            }
            let first = if prefix >= 127 { base } else { base + 1 };
            (first, base | hosts)
        }
    };
    let to_ip = |n: u128| -> IpAddr {
        match network {
            // `n` is within an IPv4 range here.
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    };
    // At most taken.len() + 1 candidates are looked at, however large the subnet.
    let mut candidate = first;
    loop {
        if candidate > last {
            return None;
        }
        let ip = to_ip(candidate);
        if !taken.contains(&ip) {
            return Some(ip);
        }
        candidate = candidate.checked_add(1)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_and_never_twice() {
        let mut taken = BTreeSet::from([ip("10.0.0.1")]);
        let mut given = Vec::new();
        while let Some(next) = allocate("10.0.0.0/29", &taken) {
            assert!(taken.insert(next), "{next} handed out twice");
            given.push(next.to_string());
        }
        assert_eq!(
            given,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn network_and_broadcast_are_skipped_and_a_full_slash_30_gives_none() {
        let mut taken = BTreeSet::new();
        assert_eq!(allocate("192.168.5.0/30", &taken), Some(ip("192.168.5.1")));
        taken.insert(ip("192.168.5.1"));
        assert_eq!(allocate("192.168.5.0/30", &taken), Some(ip("192.168.5.2")));
        taken.insert(ip("192.168.5.2"));
        assert_eq!(allocate("192.168.5.0/30", &taken), None);
    }

    #[test]
    fn gaps_left_by_removed_clients_are_reused_first() {
        let taken = BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.3")]);
        assert_eq!(allocate("10.0.0.0/24", &taken), Some(ip("10.0.0.2")));
    }

    #[test]
    fn ipv6_subnets_skip_only_the_network_address() {
        let taken = BTreeSet::from([ip("fd00::1")]);
        assert_eq!(allocate("fd00::/64", &taken), Some(ip("fd00::2")));
        let full = BTreeSet::from([ip("fd00::1"), ip("fd00::2"), ip("fd00::3")]);
        assert_eq!(allocate("fd00::/126", &full), None);
    }

    #[test]
    fn a_subnet_with_host_bits_or_garbage_gives_none() {
        assert_eq!(allocate("10.0.0.1/24", &BTreeSet::new()), None);
        assert_eq!(allocate("10.0.0.0", &BTreeSet::new()), None);
        assert_eq!(allocate("10.0.0.0/33", &BTreeSet::new()), None);
    }
}
