//! VXLAN over WireGuard: a WireGuard server whose config also names the VXLAN interface and VNI
//! (netjsonconfig's `VxlanWireguard`), the `vxlan.json` peer list OpenWISP adds to it, and the
//! client (the OpenWrt backend's `vxlan_wireguard_auto_client`: the WireGuard client plus a
//! `vxlan` interface over it).

use serde_json::{Map, Value, json};

use super::wireguard::{self, WireGuardClient, interface_name};
use crate::schema::{Check, Kind, array, kind, object};
use crate::{File, Invalid, pointer_join};

type Obj = Map<String, Value>;

/// The UDP port VXLAN uses (IANA), as netjsonconfig's client sets it.
pub const VXLAN_PORT: u16 = 4789;
/// The largest VNI netjsonconfig's schema allows.
const MAX_VNI: i64 = 16_777_216;

/// The WireGuard checks, plus the `vxlan` list: a name and a VNI (`""` for one per tunnel, or
/// 0 to 16777216).
pub(crate) fn validate_list(config: &Obj) -> Check {
    wireguard::validate_list(config)?;
    let Some(list) = config.get("vxlan") else {
        return Ok(());
    };
    for (i, vxlan) in array(list, "/vxlan")?.iter().enumerate() {
        let at = format!("/vxlan/{i}");
        let vxlan = object(vxlan, &at)?;
        if let Some(name) = vxlan.get("name") {
            interface_name(name, &pointer_join(&at, "name"))?;
        }
        if let Some(vni) = vxlan.get("vni") {
            let at = pointer_join(&at, "vni");
            let ok = vni.as_str() == Some("")
                || vni.as_i64().is_some_and(|v| (0..=MAX_VNI).contains(&v));
            if !ok {
                kind(vni, &at, Kind::Integer)?;
                return Err(Invalid::at(
                    at,
                    format!("{vni} is not \"\" (automatic) or between 0 and {MAX_VNI}"),
                ));
            }
        }
    }
    Ok(())
}

/// Renders a VXLAN-over-WireGuard server: the WireGuard files (the `vxlan` list only configures
/// the clients and the peer file).
pub(crate) fn render(config: &Obj) -> Result<Vec<File>, Invalid> {
    validate_list(config)?;
    wireguard::render(config)
}

/// One VXLAN peer of the server: a client's VNI and tunnel address (openwisp-controller's
/// `_get_vxlan_peers` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPeer {
    /// The tunnel's VNI (the client's own, or the VPN's fixed one).
    pub vni: u32,
    /// The client's WireGuard tunnel address.
    pub remote: std::net::IpAddr,
}

/// The `vxlan.json` file OpenWISP adds to a VXLAN server's config: the peers as JSON (4-space
/// indent, sorted keys, as Python's `json.dumps(indent=4, sort_keys=True)`), each with the server's
/// VXLAN interface name if it has one. A device-side script creates the VXLAN peers from it.
pub fn peers_file(interface: Option<&str>, peers: &[VxlanPeer]) -> Value {
    let list: Vec<Value> = peers
        .iter()
        .map(|p| {
            let mut peer = json!({"vni": p.vni, "remote": p.remote.to_string()});
            if let Some(name) = interface.filter(|n| !n.is_empty()) {
                peer["interface"] = json!(name);
            }
            peer
        })
        .collect();
    // serde_json's pretty printer indents by two spaces (its Map keeps keys sorted, as sort_keys
    // does); JSON text has no raw newlines inside strings, so doubling each line's leading spaces
    // gives Python's four.
    let pretty = serde_json::to_string_pretty(&Value::Array(list)).unwrap_or_default();
    let contents = pretty
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start_matches(' ').len();
            format!("{}{}", " ".repeat(indent * 2), &line[indent..])
        })
        .collect::<Vec<_>>()
        .join("\n");
    json!({"mode": "0644", "path": "vxlan.json", "contents": contents})
}

/// What a VXLAN-over-WireGuard client template is derived from: the WireGuard client, plus the
/// VXLAN side (OpenWISP passes `{{ vni_<pk> }}` and `{{ server_ip_address_<pk> }}`).
#[derive(Debug, Clone, PartialEq)]
pub struct VxlanClient {
    /// The WireGuard tunnel underneath.
    pub wireguard: WireGuardClient,
    /// The VNI: a number, or the variable that will hold it (a string that parses as a number is
    /// written as one, as netjsonconfig gets it from OpenWISP).
    pub vni: String,
    /// The server's tunnel address: the VXLAN endpoint (`vtep`).
    pub server_ip_address: String,
    /// The server's first `vxlan` entry, whose `name` names the client's VXLAN interface
    /// (default `vxlan`).
    pub vxlan: Option<Value>,
}

/// The client NetJSON for the OpenWrt backend: the WireGuard client plus a `vxlan` interface
/// tunnelled through it, with netjsonconfig's defaults (port 4789, MTU 1280, TTL 64, checksums on).
pub fn auto_client(input: &VxlanClient) -> Value {
    let mut config = wireguard::auto_client(&input.wireguard);
    let name = input
        .vxlan
        .as_ref()
        .and_then(|v| v.get("name"))
        .cloned()
        .unwrap_or_else(|| json!("vxlan"));
    let vni = match input.vni.parse::<u32>() {
        Ok(n) => json!(n),
        Err(_) => json!(input.vni),
    };
    let tunlink = config["interfaces"][0]["name"].clone();
    let vxlan = json!({
        "name": name,
        "type": "vxlan",
        "vtep": input.server_ip_address,
        "port": VXLAN_PORT,
        "vni": vni,
        "tunlink": tunlink,
        "rxcsum": true,
        "txcsum": true,
        "mtu": 1280,
        "ttl": 64,
        "mac": "",
        "disabled": false,
        "network": "",
    });
    if let Some(Value::Array(interfaces)) = config.get_mut("interfaces") {
        interfaces.push(vxlan);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_file_is_python_json_with_four_space_indent() {
        let file = peers_file(
            Some("vxlan1"),
            &[VxlanPeer {
                vni: 7,
                remote: "10.0.0.2".parse().expect("ip"),
            }],
        );
        assert_eq!(
            file["contents"],
            "[\n    {\n        \"interface\": \"vxlan1\",\n        \"remote\": \"10.0.0.2\",\n        \"vni\": 7\n    }\n]"
        );
        assert_eq!(peers_file(None, &[])["contents"], "[]");
    }

    #[test]
    fn a_vni_out_of_range_is_refused() {
        let config = json!({"wireguard": [{"name": "wg0", "port": 51820, "private_key": "k",
            "address": "10.0.0.1/24"}], "vxlan": [{"name": "vxlan1", "vni": 16777217}]});
        let err = validate_list(config.as_object().expect("object")).unwrap_err();
        assert_eq!(err.pointer, "/vxlan/0/vni");
    }
}
