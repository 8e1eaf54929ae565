//! WireGuard: a VPN server's `wireguard` instances → one wg-quick `<name>.conf` each
//! (netjsonconfig's `Wireguard` backend), the peer list OpenWISP adds to the server from its
//! clients, and the client `auto_client` derives from a server (the OpenWrt backend's
//! `wireguard_auto_client`: a `wireguard` interface plus a `wireguard_peers` entry).

use serde_json::{Map, Value, json};

use crate::schema::{Check, Kind, array, kind, object, optional, required};
use crate::uci::python_str;
use crate::{File, Invalid, pointer_join};

type Obj = Map<String, Value>;

/// The port WireGuard listens on when nothing says otherwise (netjsonconfig's default for both
/// ends).
pub const DEFAULT_PORT: u16 = 51820;

/// NetJSON option → wg-quick key, for the `[Interface]` options netjsonconfig knows.
const INTERFACE_KEYS: &[(&str, &str)] = &[
    ("port", "ListenPort"),
    ("private_key", "PrivateKey"),
    ("address", "Address"),
    ("dns", "DNS"),
    ("mtu", "MTU"),
    ("save_config", "SaveConfig"),
    ("table", "Table"),
    ("pre_up", "PreUp"),
    ("post_up", "PostUp"),
    ("pre_down", "PreDown"),
    ("post_down", "PostDown"),
];

/// Checks the `wireguard` list as netjsonconfig's Wireguard schema does, plus `address`, without
/// which netjsonconfig's converter fails (OpenWISP always sets it).
pub(crate) fn validate_list(config: &Obj) -> Check {
    let Some(list) = config.get("wireguard") else {
        return Err(Invalid::at(
            "/wireguard",
            "'wireguard' is a required property",
        ));
    };
    for (i, wg) in array(list, "/wireguard")?.iter().enumerate() {
        let at = format!("/wireguard/{i}");
        let wg = object(wg, &at)?;
        let name = required(wg, "name", &at, Kind::String)?;
        interface_name(name, &pointer_join(&at, "name"))?;
        required(wg, "port", &at, Kind::Integer)?;
        port(wg, "port", &at)?;
        let key = required(wg, "private_key", &at, Kind::String)?;
        key_text(key, &pointer_join(&at, "private_key"), false)?;
        required(wg, "address", &at, Kind::String)?;
        if let Some(dns) = wg.get("dns") {
            let at = pointer_join(&at, "dns");
            for (i, server) in array(dns, &at)?.iter().enumerate() {
                kind(server, &pointer_join(&at, i), Kind::String)?;
            }
        }
        optional(wg, "mtu", &at, Kind::Integer)?;
        if wg
            .get("mtu")
            .and_then(Value::as_i64)
            .is_some_and(|m| m < 68)
        {
            return Err(Invalid::at(pointer_join(&at, "mtu"), "must be at least 68"));
        }
        for field in ["table", "pre_up", "post_up", "pre_down", "post_down"] {
            optional(wg, field, &at, Kind::String)?;
        }
        optional(wg, "save_config", &at, Kind::Boolean)?;
        if let Some(peers) = wg.get("peers") {
            let at = pointer_join(&at, "peers");
            for (i, peer) in array(peers, &at)?.iter().enumerate() {
                let at = pointer_join(&at, i);
                let peer = object(peer, &at)?;
                let key = required(peer, "public_key", &at, Kind::String)?;
                key_text(key, &pointer_join(&at, "public_key"), true)?;
                let allowed = required(peer, "allowed_ips", &at, Kind::String)?;
                if allowed.as_str() == Some("") {
                    return Err(Invalid::at(
                        pointer_join(&at, "allowed_ips"),
                        "must not be empty",
                    ));
                }
                optional(peer, "endpoint_host", &at, Kind::String)?;
                port(peer, "endpoint_port", &at)?;
                if let Some(key) = peer.get("preshared_key") {
                    key_text(key, &pointer_join(&at, "preshared_key"), false)?;
                }
                optional(peer, "persistent_keepalive", &at, Kind::Integer)?;
            }
        }
    }
    Ok(())
}

/// An interface name as Linux and netjsonconfig accept it: 2 to 15 characters, no spaces.
pub(crate) fn interface_name(name: &Value, at: &str) -> Check {
    let text = kind(name, at, Kind::String)?;
    if !(2..=15).contains(&text.chars().count()) || text.chars().any(char::is_whitespace) {
        return Err(Invalid::at(at, "must be 2 to 15 characters without spaces"));
    }
    Ok(())
}

/// An optional port: an integer from 1 to 65535.
pub(crate) fn port(map: &Obj, field: &str, at: &str) -> Check {
    let Some(value) = map.get(field) else {
        return Ok(());
    };
    let at = pointer_join(at, field);
    kind(value, &at, Kind::Integer)?;
    match value.as_i64() {
        Some(1..=65535) => Ok(()),
        _ => Err(Invalid::at(
            at,
            format!("{value} is not between 1 and 65535"),
        )),
    }
}

/// A key as the schema allows it: at most 44 characters (base64 of 32 bytes), no spaces.
pub(crate) fn key_text(value: &Value, at: &str, non_empty: bool) -> Check {
    let text = kind(value, at, Kind::String)?;
    if text.chars().count() > 44 || text.chars().any(char::is_whitespace) {
        return Err(Invalid::at(
            at,
            "must be a base64 key of at most 44 characters",
        ));
    }
    if non_empty && text.is_empty() {
        return Err(Invalid::at(at, "must not be empty"));
    }
    Ok(())
}

/// Python's truthiness of a JSON value.
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

/// Renders a WireGuard server's NetJSON to the files of its archive: `<name>.conf` per instance as
/// netjsonconfig writes it, then the config's `files`.
pub(crate) fn render(config: &Obj) -> Result<Vec<File>, Invalid> {
    validate_list(config)?;
    let mut files = Vec::new();
    for wg in config
        .get("wireguard")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Value::Object(wg) = wg else { continue };
        let name = wg.get("name").map(python_str).unwrap_or_default();
        files.push(File {
            path: format!("{name}.conf"),
            mode: 0o644,
            contents: conf_text(wg),
        });
    }
    files.extend(crate::render::extra_files(config.get("files")));
    Ok(files)
}

/// One instance's wg-quick file: `[Interface]` with its keys in sorted order, then one `[Peer]`
/// per peer, sections separated by a blank line.
fn conf_text(wg: &Obj) -> String {
    let mut interface = wg.clone();
    for (option, key) in INTERFACE_KEYS {
        let Some(value) = interface.remove(*option) else {
            continue;
        };
        let required = matches!(*option, "port" | "private_key" | "address");
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !required && empty {
            continue;
        }
        let value = match (*option, value) {
            ("dns", Value::Array(servers)) => {
                Value::String(servers.iter().map(python_str).collect::<Vec<_>>().join(","))
            }
            ("save_config", flag) => json!(if truthy(Some(&flag)) { "true" } else { "false" }),
            (_, value) => value,
        };
        interface.insert((*key).into(), value);
    }
    let peers = interface.remove("peers");
    interface.remove("name");
    let mut sections = vec![section("[Interface]", &interface, false)];
    for peer in peers
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Value::Object(peer) = peer else { continue };
        sections.push(section("[Peer]", &peer_keys(peer.clone()), true));
    }
    // Values are kept as written (netjsonconfig's clean-up would delete runs of four spaces in a
    // PostUp command, for instance).
    sections.join("\n")
}

/// A peer's options under their wg-quick names (netjsonconfig's `__intermediate_peers`).
///
/// `persistent_keepalive` becomes `PersistentKeepalive`: netjsonconfig writes it as is, a line
/// `wg` refuses ("Line unrecognized"), so fleetmq deliberately differs here (docs/config.md).
fn peer_keys(mut peer: Obj) -> Obj {
    let allowed = peer.remove("allowed_ips").unwrap_or(Value::Null);
    peer.insert("AllowedIPs".into(), allowed);
    let public = peer.remove("public_key").unwrap_or(Value::Null);
    peer.insert("PublicKey".into(), public);
    let preshared = peer.remove("preshared_key").unwrap_or(Value::Null);
    peer.insert("PreSharedKey".into(), preshared);
    let host = peer.remove("endpoint_host");
    let port = peer.remove("endpoint_port");
    if truthy(host.as_ref()) && truthy(port.as_ref()) {
        let host = host.as_ref().map(python_str).unwrap_or_default();
        let port = port.as_ref().map(python_str).unwrap_or_default();
        peer.insert("Endpoint".into(), Value::String(format!("{host}:{port}")));
    }
    if let Some(keepalive) = peer.remove("persistent_keepalive") {
        peer.insert("PersistentKeepalive".into(), keepalive);
    }
    peer
}

fn section(header: &str, options: &Obj, skip_falsy: bool) -> String {
    let mut out = format!("{header}\n");
    for (key, value) in options {
        if skip_falsy && !truthy(Some(value)) {
            continue;
        }
        out.push_str(&format!("{key} = {}\n", python_str(value)));
    }
    out
}

/// The peer entry a WireGuard server gets for one client (openwisp-controller's
/// `_get_wireguard_peers`): the client's public key, and its tunnel address as a host route.
pub fn server_peer(public_key: &str, ip: std::net::IpAddr) -> Value {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    json!({"public_key": public_key, "allowed_ips": format!("{ip}/{prefix}")})
}

/// What a WireGuard client template is derived from (netjsonconfig's `Wireguard.auto_client`
/// arguments). OpenWISP passes variables (`{{ public_key_<vpn pk hex> }}`,
/// `{{ pvt_key_<pk> }}`, `{{ ip_address_<pk> }}`, `{{ server_ip_network_<pk> }}`) so that one
/// template serves every device; literal values work the same.
#[derive(Debug, Clone, PartialEq)]
pub struct WireGuardClient {
    /// The server's public host name or address (the VPN's `host`).
    pub host: String,
    /// The server's first `wireguard` instance: its `name` names the client interface, its
    /// `port` is the endpoint port.
    pub server: Value,
    /// The server's public key.
    pub public_key: String,
    /// The client's private key.
    pub private_key: String,
    /// The client's tunnel address, if the VPN has a subnet.
    pub ip_address: Option<String>,
    /// The server's tunnel address as a host route (`10.0.0.1/32`): what the client routes
    /// through the tunnel.
    pub server_ip_network: String,
}

/// The client NetJSON for the OpenWrt backend (`wireguard_auto_client`): a `wireguard` interface
/// named like the server's, with netjsonconfig's defaults (MTU 1420, keepalive 60, routes for the
/// allowed IPs), and the server as its one peer.
pub fn auto_client(input: &WireGuardClient) -> Value {
    let empty = Obj::new();
    let server = input.server.as_object().unwrap_or(&empty);
    let name = server.get("name").cloned().unwrap_or_else(|| json!(""));
    let endpoint_port = server
        .get("port")
        .cloned()
        .unwrap_or_else(|| json!(DEFAULT_PORT));
    let addresses = match input.ip_address.as_deref() {
        // netjsonconfig always writes family ipv4 / mask 32: the address is usually still a
        // variable here, so its family is not known yet.
        Some(ip) if !ip.is_empty() => {
            json!([{"proto": "static", "family": "ipv4", "address": ip, "mask": 32}])
        }
        _ => json!([]),
    };
    json!({
        "interfaces": [{
            "name": name,
            "type": "wireguard",
            "private_key": input.private_key,
            "port": DEFAULT_PORT,
            "mtu": 1420,
            "nohostroute": false,
            "fwmark": "",
            "ip6prefix": [],
            "addresses": addresses,
            "network": "",
        }],
        "wireguard_peers": [{
            "interface": name,
            "public_key": input.public_key,
            "allowed_ips": [input.server_ip_network],
            "endpoint_host": input.host,
            "endpoint_port": endpoint_port,
            "preshared_key": "",
            "persistent_keepalive": 60,
            "route_allowed_ips": true,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(wg: Value) -> Obj {
        json!({"wireguard": [wg]})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_server_without_address_is_refused_at_address() {
        let err = validate_list(&config(
            json!({"name": "wg0", "port": 51820, "private_key": "k"}),
        ))
        .unwrap_err();
        assert_eq!(err.pointer, "/wireguard/0/address");
    }

    #[test]
    fn a_peer_without_public_key_is_refused_at_that_peer() {
        let err = validate_list(&config(
            json!({"name": "wg0", "port": 51820, "private_key": "k",
            "address": "10.0.0.1/24", "peers": [{"allowed_ips": "10.0.0.2/32"}]}),
        ))
        .unwrap_err();
        assert_eq!(err.pointer, "/wireguard/0/peers/0/public_key");
    }

    #[test]
    fn a_port_out_of_range_is_refused() {
        let err = validate_list(&config(
            json!({"name": "wg0", "port": 70000, "private_key": "k",
            "address": "10.0.0.1/24"}),
        ))
        .unwrap_err();
        assert_eq!(err.pointer, "/wireguard/0/port");
    }

    #[test]
    fn a_client_peer_is_a_host_route_of_its_address() {
        let peer = server_peer("pk", "fd00::5".parse().expect("ip"));
        assert_eq!(peer["allowed_ips"], "fd00::5/128");
    }
}
