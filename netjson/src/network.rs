//! `interfaces`, `routes` and `ip_rules` → the `network` package.
//!
//! A port of netjsonconfig's OpenWrt `Interfaces`, `Routes` and `Rules` converters, step for step,
//! so that the sections, their names and their order come out the same. With `dsa` (OpenWrt ≥ 21)
//! bridges and layer-2 options become `config device` sections; without it (OpenWISP 1.x) the
//! bridge is an interface of `type 'bridge'`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

use crate::uci::{Packages, Section, merge_sections};
use crate::{Invalid, pointer_join};

type Obj = Map<String, Value>;

const STP_OPTIONS: &[&str] = &[
    "stp",
    "forward_delay",
    "hello_time",
    "priority",
    "ageing_time",
    "max_age",
];
const IGMP_OPTIONS: &[&str] = &[
    "igmp_snooping",
    "multicast_querier",
    "query_interval",
    "query_response_interval",
    "last_member_interval",
    "hash_max",
    "robustness",
];
const ALL_BRIDGE_OPTIONS: &[&str] = &["vlan_filtering", "macaddr", "mtu"];
const L2_OPTIONS: &[&str] = &[
    "rpfilter",
    "txqueuelen",
    "neighreachabletime",
    "neighgcstaletime",
    "neighlocktime",
    "igmpversion",
    "mldversion",
    "promisc",
    "acceptlocal",
    "sendredirects",
    "multicast",
    "mtu",
    "mtu6",
    "dadtransmits",
];
const DSA_TYPES: &[&str] = &[
    "loopback", "ethernet", "bridge", "wireless", "8021q", "8021ad",
];

/// A UCI section name: OpenWrt allows neither '.' nor '-'.
pub(crate) fn uci_name(name: &str) -> String {
    name.replace(['.', '-'], "_")
}

fn s<'a>(map: &'a Obj, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `interfaces` → `config interface` / `config device` / `config bridge-vlan` sections.
pub(crate) fn interfaces(config: &Obj, dsa: bool, packages: &mut Packages) -> Result<(), Invalid> {
    let Some(Value::Array(list)) = config.get("interfaces") else {
        return Ok(());
    };
    let mut state = InterfaceState {
        dsa,
        bridge_vlan_devices: Vec::new(),
        dns_servers: config.get("dns_servers").cloned(),
        dns_search: config.get("dns_search").cloned(),
    };
    let mut network: Vec<Section> = Vec::new();
    for (index, block) in list.iter().enumerate() {
        let Value::Object(block) = block else {
            continue;
        };
        let pointer = format!("/interfaces/{index}");
        state.interface(block.clone(), &pointer, &mut network)?;
    }
    packages.add("network", network);
    Ok(())
}

struct InterfaceState {
    dsa: bool,
    bridge_vlan_devices: Vec<String>,
    dns_servers: Option<Value>,
    dns_search: Option<Value>,
}

impl InterfaceState {
    fn interface(
        &mut self,
        mut block: Obj,
        pointer: &str,
        network: &mut Vec<Section>,
    ) -> Result<(), Invalid> {
        let base_name = match block.get("network") {
            Some(n) if truthy(Some(n)) => n.as_str().unwrap_or_default().to_string(),
            _ => s(&block, "name").unwrap_or_default().to_string(),
        };
        let name = uci_name(&base_name);
        let addresses = self.addresses(&mut block, pointer)?;
        let mut interface = self.interface_options(block, &name);
        let dsa_interface = self.dsa
            && s(&interface, "proto") != Some("ppp")
            && s(&interface, "type").is_some_and(|t| DSA_TYPES.contains(&t))
            && !interface
                .get("ifname")
                .or_else(|| interface.get("device"))
                .and_then(Value::as_str)
                .is_some_and(|d| self.bridge_vlan_devices.iter().any(|x| x == d));
        if dsa_interface {
            let vlans = match interface.remove("vlan_filtering") {
                Some(Value::Array(v)) => v,
                _ => Vec::new(),
            };
            if !vlans.is_empty() {
                interface.insert("vlan_filtering".into(), Value::Bool(true));
            }
            if let Some(device) = self.device(&mut interface) {
                network.push(device);
            }
            let mut vlan_interfaces = Vec::new();
            for vlan in &vlans {
                let Value::Object(vlan) = vlan else { continue };
                let (bridge_vlan, vlan_interface) = self.bridge_vlan(&name, &interface, vlan);
                network.push(bridge_vlan);
                vlan_interfaces.push(vlan_interface);
            }
            network.extend(vlan_interfaces);
        }
        for (i, address) in addresses.into_iter().enumerate() {
            let i = i + 1;
            let mut uci = interface.clone();
            let section_name = if i > 1 {
                format!("{name}_{i}")
            } else {
                interface_name(&uci)
            };
            let mut address = address;
            let address_proto = s(&address, "proto").unwrap_or_default().to_string();
            let dns = if let Some(dns) = uci.get("dns") {
                dns.clone()
            } else if ["dhcp", "dhcpv6", "none"].contains(&address_proto.as_str()) {
                Value::Null
            } else {
                joined(self.dns_servers.as_ref())
            };
            let dns_search = if let Some(search) = uci.get("dns_search") {
                search.clone()
            } else if address_proto == "none" {
                Value::Null
            } else {
                joined(self.dns_search.as_ref())
            };
            let proto = match uci.remove("proto") {
                Some(p) => {
                    address.remove("proto");
                    p
                }
                None => address
                    .remove("proto")
                    .unwrap_or_else(|| Value::String("static".into())),
            };
            uci.insert("dns".into(), dns);
            uci.insert("dns_search".into(), dns_search);
            uci.insert("proto".into(), proto);
            self.bridge(&mut uci, i, dsa_interface);
            for (k, v) in address {
                uci.insert(k, v);
            }
            uci.remove(".name");
            let section = Section::sorted("interface", section_name, uci);
            let merged = merge_sections(std::mem::take(network), vec![section]);
            *network = merged;
        }
        Ok(())
    }

    /// NetJSON addresses → one static "address" (all static addresses together) and one per DHCP
    /// address; `[{"proto": "none"}]` when there are none (except for wireless).
    fn addresses(&self, interface: &mut Obj, pointer: &str) -> Result<Vec<Obj>, Invalid> {
        if s(interface, "type") == Some("wireguard") {
            let list = match interface.remove("addresses") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            let addresses: Vec<Value> = list
                .iter()
                .filter_map(Value::as_object)
                .map(|a| {
                    let address = a
                        .get("address")
                        .map(crate::uci::python_str)
                        .unwrap_or_default();
                    match a.get("mask") {
                        Some(mask) => {
                            Value::String(format!("{address}/{}", crate::uci::python_str(mask)))
                        }
                        None => Value::String(address),
                    }
                })
                .collect();
            let mut wg = Obj::new();
            wg.insert("addresses".into(), Value::Array(addresses));
            wg.insert("proto".into(), json!("wireguard"));
            return Ok(vec![wg]);
        }
        let list = match interface.get("addresses") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            _ => {
                if s(interface, "type") == Some("wireless") {
                    return Ok(Vec::new());
                }
                let mut none = Obj::new();
                none.insert("proto".into(), json!("none"));
                return Ok(vec![none]);
            }
        };
        let mut statics = Obj::new();
        let mut dhcp = Vec::new();
        for (index, address) in list.iter().enumerate() {
            let Value::Object(address) = address else {
                continue;
            };
            let mut address = address.clone();
            let ipv4 = s(&address, "family") == Some("ipv4");
            if s(&address, "proto") == Some("dhcp") {
                address.insert("proto".into(), json!(if ipv4 { "dhcp" } else { "dhcpv6" }));
                strip_address_keys(&mut address);
                dhcp.push(address);
                continue;
            }
            if let Some(gateway) = address.get("gateway") {
                interface.insert(
                    if ipv4 { "gateway" } else { "ip6gw" }.into(),
                    gateway.clone(),
                );
            }
            let key = if ipv4 { "ipaddr" } else { "ip6addr" };
            let text = format!(
                "{}/{}",
                address
                    .get("address")
                    .map(crate::uci::python_str)
                    .unwrap_or_default(),
                address
                    .get("mask")
                    .map(crate::uci::python_str)
                    .unwrap_or_default()
            );
            if let Some(Value::Array(v)) = statics.get_mut(key) {
                v.push(Value::String(text));
            } else {
                statics.insert(key.into(), json!([text]));
            }
            strip_address_keys(&mut address);
            for (k, v) in address {
                statics.insert(k, v);
            }
            let _ = index;
        }
        let mut result = Vec::new();
        if !statics.is_empty() {
            if let Some(Value::Array(v4)) = statics.get("ipaddr")
                && v4.len() == 1
            {
                let cidr = v4[0].as_str().unwrap_or_default().to_string();
                let (ip, netmask) = ipv4_with_netmask(&cidr).ok_or_else(|| {
                    Invalid::at(
                        pointer_join(pointer, "addresses"),
                        format!("'{cidr}' does not appear to be an IPv4 interface"),
                    )
                })?;
                statics.insert("ipaddr".into(), Value::String(ip));
                statics.insert("netmask".into(), Value::String(netmask));
            }
            if let Some(Value::Array(v6)) = statics.get("ip6addr")
                && v6.len() == 1
            {
                let single = v6[0].clone();
                statics.insert("ip6addr".into(), single);
            }
            result.push(statics);
        }
        result.extend(dhcp);
        Ok(result)
    }

    /// The NetJSON interface renamed into UCI terms (`name` → `ifname`, `mac` → `macaddr`, ...).
    fn interface_options(&self, mut interface: Obj, name: &str) -> Obj {
        interface.insert(".name".into(), Value::String(name.to_string()));
        let ifname = interface.remove("name").unwrap_or(Value::Null);
        interface.insert("ifname".into(), ifname);
        if let Some(mac) = interface.remove("mac")
            && s(&interface, "type") != Some("wireless")
        {
            interface.insert("macaddr".into(), mac);
        }
        if let Some(autostart) = interface.remove("autostart") {
            interface.insert("auto".into(), autostart);
        }
        if let Some(disabled) = interface.remove("disabled") {
            interface.insert("enabled".into(), Value::Bool(!truthy(Some(&disabled))));
        }
        interface.remove("wireless");
        interface.remove("addresses");
        match s(&interface, "type").map(uci_name).as_deref() {
            Some("modem_manager") => {
                interface.insert("proto".into(), json!("modemmanager"));
                let pin = interface.remove("pin").unwrap_or(Value::Null);
                interface.insert("pincode".into(), pin);
            }
            Some("wireguard") => {
                interface.insert("proto".into(), json!("wireguard"));
                let port = interface.remove("port").unwrap_or(Value::Null);
                interface.insert("listen_port".into(), port);
                interface.remove("ifname");
            }
            Some("vxlan") => {
                interface.insert("proto".into(), json!("vxlan"));
                let vtep = interface.remove("vtep").unwrap_or(Value::Null);
                interface.insert("peeraddr".into(), vtep);
                let vni = interface.remove("vni").unwrap_or(Value::Null);
                interface.insert("vid".into(), vni);
            }
            Some("8021q" | "8021ad") => {
                let ifname = interface
                    .get("ifname")
                    .map(crate::uci::python_str)
                    .unwrap_or_default();
                let vid = interface
                    .get("vid")
                    .map(crate::uci::python_str)
                    .unwrap_or_default();
                interface.insert("name".into(), Value::String(format!("{ifname}.{vid}")));
                let section = match interface.get("network") {
                    Some(n) if truthy(Some(n)) => crate::uci::python_str(n),
                    _ => format!("vlan_{name}_{vid}"),
                };
                interface.insert(".name".into(), Value::String(section));
            }
            _ => {}
        }
        if self.dsa
            && let Some(ifname) = s(&interface, "ifname").map(str::to_string)
            && ifname.contains('.')
            && self.bridge_vlan_devices.contains(&ifname)
        {
            let mut discard = Obj::new();
            move_l2_options(&mut discard, &mut interface);
            let ifname = interface.remove("ifname").unwrap_or(Value::Null);
            interface.insert("device".into(), ifname);
        }
        interface.remove("network");
        interface
    }

    /// The `config device` section for a DSA interface (bridges, VLANs, layer-2 options).
    fn device(&self, interface: &mut Obj) -> Option<Section> {
        let mut device = Obj::new();
        move_l2_options(&mut device, interface);
        let name = interface_name(interface);
        let mut device_name = format!("device_{name}");
        let ifname = interface.get("ifname").cloned().unwrap_or(Value::Null);
        device.insert("name".into(), ifname.clone());
        let mut base = Obj::new();
        base.insert("name".into(), ifname);
        if !truthy(interface.get("device")) {
            interface.insert("device".into(), device["name"].clone());
        }
        let kind = s(interface, "type").unwrap_or_default().to_string();
        if kind.starts_with("8021") {
            device.insert("type".into(), Value::String(kind.clone()));
            device.insert("vid".into(), interface.remove("vid").unwrap_or(Value::Null));
            device.insert(
                "name".into(),
                interface.remove("name").unwrap_or(Value::Null),
            );
            device_name = format!(
                "device_{}",
                name.trim_start_matches(['v', 'l', 'a', 'n', '_'])
            );
            device.insert(
                "ifname".into(),
                interface.remove("ifname").unwrap_or(Value::Null),
            );
            for key in ["ingress_qos_mapping", "egress_qos_mapping"] {
                device.insert(
                    key.into(),
                    interface.remove(key).unwrap_or_else(|| json!([])),
                );
            }
            interface.insert("device".into(), device["name"].clone());
        }
        if kind != "bridge" {
            if device == base {
                return None;
            }
            return Some(Section::sorted("device", device_name, device));
        }
        device.insert("type".into(), json!("bridge"));
        let ifname = s(interface, "ifname").unwrap_or_default().to_string();
        if !ifname.starts_with("br-") {
            interface.insert("ifname".into(), Value::String(format!("br-{ifname}")));
        }
        device.insert("name".into(), interface["ifname"].clone());
        interface.insert("device".into(), interface["ifname"].clone());
        for (flag, options) in [("stp", STP_OPTIONS), ("igmp_snooping", IGMP_OPTIONS)] {
            if truthy(interface.get(flag)) {
                device.insert(flag.into(), Value::Bool(true));
                for option in options {
                    if truthy(interface.get(*option)) {
                        device.insert((*option).into(), interface[*option].clone());
                    }
                }
            }
        }
        for option in ALL_BRIDGE_OPTIONS
            .iter()
            .chain(STP_OPTIONS)
            .chain(IGMP_OPTIONS)
        {
            if let Some(value) = interface.remove(*option) {
                device.insert((*option).into(), value);
            }
        }
        match interface.get("bridge_members") {
            Some(Value::Array(ports)) if !ports.is_empty() => {
                device.insert("ports".into(), Value::Array(ports.clone()));
            }
            _ => {
                device.insert("bridge_empty".into(), Value::Bool(true));
            }
        }
        Some(Section::sorted("device", device_name, device))
    }

    /// One `vlan_filtering` entry → `config bridge-vlan` and its `config interface`.
    fn bridge_vlan(&mut self, name: &str, interface: &Obj, vlan: &Obj) -> (Section, Section) {
        let vid = vlan
            .get("vlan")
            .map(crate::uci::python_str)
            .unwrap_or_default();
        let ifname = s(interface, "ifname").unwrap_or_default().to_string();
        let mut uci_vlan = Obj::new();
        uci_vlan.insert(
            "vlan".into(),
            vlan.get("vlan").cloned().unwrap_or(Value::Null),
        );
        uci_vlan.insert("device".into(), Value::String(ifname.clone()));
        if let Some(Value::Array(ports)) = vlan.get("ports") {
            let ports: Vec<Value> = ports
                .iter()
                .filter_map(Value::as_object)
                .map(|port| {
                    let tagging = match s(port, "tagging") {
                        Some(t) if !t.is_empty() => format!(":{t}"),
                        _ => String::new(),
                    };
                    let pvid = if truthy(port.get("primary_vid")) {
                        "*"
                    } else {
                        ""
                    };
                    Value::String(format!(
                        "{}{tagging}{pvid}",
                        port.get("ifname")
                            .map(crate::uci::python_str)
                            .unwrap_or_default()
                    ))
                })
                .collect();
            uci_vlan.insert("ports".into(), Value::Array(ports));
        }
        let device = format!("{ifname}.{vid}");
        let mut vlan_interface = Obj::new();
        vlan_interface.insert("device".into(), Value::String(device.clone()));
        vlan_interface.insert("proto".into(), json!("none"));
        self.bridge_vlan_devices.push(device);
        (
            Section::sorted("bridge-vlan", format!("vlan_{name}_{vid}"), uci_vlan),
            Section::sorted("interface", format!("{name}_{vid}"), vlan_interface),
        )
    }

    /// Bridge-specific options of the `i`-th (1-based) logical interface of a NetJSON interface.
    fn bridge(&self, uci: &mut Obj, i: usize, dsa_interface: bool) {
        let is_bridge = s(uci, "type") == Some("bridge");
        if is_bridge && i < 2 {
            let members: Vec<String> = match uci.remove("bridge_members") {
                Some(Value::Array(m)) => m.iter().map(crate::uci::python_str).collect(),
                _ => Vec::new(),
            };
            let members = members.join(" ");
            if dsa_interface {
                let ifname = uci.get("ifname").cloned().unwrap_or(Value::Null);
                uci.insert("device".into(), ifname);
            } else if !members.is_empty() {
                uci.insert("ifname".into(), Value::String(members));
            } else {
                uci.insert("bridge_empty".into(), Value::Bool(true));
                uci.remove("ifname");
            }
        } else if is_bridge {
            let ifname = uci
                .get("ifname")
                .map(crate::uci::python_str)
                .unwrap_or_default();
            if !ifname.contains("br-") {
                uci.insert("ifname".into(), Value::String(format!("br-{ifname}")));
            }
            for attr in ["type", "bridge_members", "gateway"]
                .iter()
                .chain(STP_OPTIONS)
                .chain(IGMP_OPTIONS)
            {
                uci.remove(*attr);
            }
        } else {
            uci.remove("type");
        }
        if dsa_interface {
            for attr in ["ifname", "type", "bridge_members"]
                .iter()
                .chain(STP_OPTIONS)
                .chain(IGMP_OPTIONS)
                .chain(ALL_BRIDGE_OPTIONS)
            {
                uci.remove(*attr);
            }
        }
    }
}

fn interface_name(interface: &Obj) -> String {
    s(interface, ".name").unwrap_or_default().to_string()
}

fn move_l2_options(device: &mut Obj, interface: &mut Obj) {
    for option in L2_OPTIONS {
        if let Some(value) = interface.remove(*option) {
            device.insert((*option).into(), value);
        }
    }
    if truthy(interface.get("macaddr")) {
        let mac = interface.remove("macaddr").unwrap_or(Value::Null);
        device.insert("macaddr".into(), mac);
    }
}

fn strip_address_keys(address: &mut Obj) {
    for key in ["address", "mask", "family", "gateway"] {
        address.remove(key);
    }
}

/// `" ".join(list)` when the list is non-empty, else nothing.
fn joined(list: Option<&Value>) -> Value {
    match list {
        Some(Value::Array(items)) if !items.is_empty() => Value::String(
            items
                .iter()
                .map(crate::uci::python_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => Value::Null,
    }
}

/// "192.168.1.1/24" → ("192.168.1.1", "255.255.255.0").
fn ipv4_with_netmask(cidr: &str) -> Option<(String, String)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((ip.to_string(), Ipv4Addr::from(mask).to_string()))
}

/// An address with an optional prefix length ("10.0.0.0/8", "fd00::1").
pub(crate) fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    (prefix <= max).then_some((ip, prefix))
}

/// Whether `text` is a network with no host bits set (Python's strict `ip_network`).
pub(crate) fn is_strict_network(text: &str) -> Option<IpAddr> {
    let (ip, prefix) = parse_cidr(text)?;
    let ok = match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            prefix == 32 || bits & (u32::MAX >> prefix) == 0
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            prefix == 128 || bits & (u128::MAX >> prefix) == 0
        }
    };
    ok.then_some(ip)
}

/// `wireguard_peers` → `config wireguard_<interface> 'wgpeer_<interface>[_<n>]'` sections in the
/// `network` package (netjsonconfig's OpenWrt `WireguardPeers` converter: OpenWrt's section type
/// names the interface the peer belongs to).
pub(crate) fn wireguard_peers(config: &Obj, packages: &mut Packages) {
    let Some(Value::Array(list)) = config.get("wireguard_peers") else {
        return;
    };
    let mut sections = Vec::new();
    for (index, peer) in list.iter().enumerate() {
        let Value::Object(peer) = peer else { continue };
        let mut peer = peer.clone();
        let interface = peer
            .remove("interface")
            .map(|i| crate::uci::python_str(&i))
            .unwrap_or_default()
            .replace('-', "_");
        let mut name = format!("wgpeer_{interface}");
        if index > 0 {
            name = format!("{name}_{}", index + 1);
        }
        if !truthy(peer.get("endpoint_host")) {
            peer.remove("endpoint_port");
        }
        sections.push(Section::sorted(
            format!("wireguard_{interface}"),
            name,
            peer,
        ));
    }
    packages.add("network", sections);
}

/// `routes` → `config route` / `config route6`.
pub(crate) fn routes(config: &Obj, packages: &mut Packages) -> Result<(), Invalid> {
    let Some(Value::Array(list)) = config.get("routes") else {
        return Ok(());
    };
    let mut sections = Vec::new();
    for (index, route) in list.iter().enumerate() {
        let Value::Object(route) = route else {
            continue;
        };
        let mut route = route.clone();
        let pointer = format!("/routes/{index}/destination");
        let destination = s(&route, "destination").unwrap_or_default().to_string();
        let (ip, prefix) = parse_cidr(&destination).ok_or_else(|| {
            Invalid::at(
                pointer.clone(),
                format!("'{destination}' does not appear to be an IPv4 or IPv6 interface"),
            )
        })?;
        route.remove("destination");
        let name = match route.remove("name") {
            Some(n) if truthy(Some(&n)) => crate::uci::python_str(&n),
            _ => format!("route{}", index + 1),
        };
        let interface = route.remove("device").unwrap_or(Value::Null);
        route.insert("interface".into(), interface);
        let gateway = route.remove("next").unwrap_or(Value::Null);
        route.insert("gateway".into(), gateway);
        let metric = route.remove("cost").unwrap_or(Value::Null);
        route.insert("metric".into(), metric);
        let kind = match ip {
            IpAddr::V4(v4) => {
                route.insert("target".into(), Value::String(v4.to_string()));
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                route.insert(
                    "netmask".into(),
                    Value::String(Ipv4Addr::from(mask).to_string()),
                );
                "route"
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let masked = if prefix == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - prefix))
                };
                route.insert(
                    "target".into(),
                    Value::String(format!("{}/{prefix}", Ipv6Addr::from(masked))),
                );
                "route6"
            }
        };
        sections.push(Section::sorted(kind, name, route));
    }
    packages.add("network", sections);
    Ok(())
}

/// `ip_rules` → `config rule` / `config rule6`.
pub(crate) fn rules(config: &Obj, packages: &mut Packages) -> Result<(), Invalid> {
    let Some(Value::Array(list)) = config.get("ip_rules") else {
        return Ok(());
    };
    let mut sections = Vec::new();
    for (index, rule) in list.iter().enumerate() {
        let Value::Object(rule) = rule else { continue };
        let mut rule = rule.clone();
        let mut family_v6 = None;
        for key in ["dest", "src"] {
            if let Some(text) = s(&rule, key) {
                let ip = is_strict_network(text).ok_or_else(|| {
                    Invalid::at(
                        format!("/ip_rules/{index}/{key}"),
                        format!("'{text}' is not a 'cidr'"),
                    )
                })?;
                if family_v6.is_none() {
                    family_v6 = Some(ip.is_ipv6());
                }
            }
        }
        let name = match rule.remove("name") {
            Some(n) if truthy(Some(&n)) => crate::uci::python_str(&n),
            _ => format!("rule{}", index + 1),
        };
        let kind = if family_v6 == Some(true) {
            "rule6"
        } else {
            "rule"
        };
        sections.push(Section::sorted(kind, name, rule));
    }
    packages.add("network", sections);
    Ok(())
}
