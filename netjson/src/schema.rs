//! What netjsonconfig's JSON schema rejects, checked by hand.
//!
//! Not the whole schema (it is 1,400 lines of mostly UI hints): the parts a user can get wrong
//! and that would otherwise render a broken file or be refused by OpenWISP — wrong types in the
//! known sections, interfaces without name or type, addresses without proto/family, radios
//! without protocol/channel, routes without their four fields, bad `files` entries (missing
//! fields, a mode that is not an octal string, paths with `..` or odd characters), and the
//! sections fleetmq cannot render yet. The first problem found is reported, with its pointer.

use serde_json::{Map, Value};

use crate::network::{is_strict_network, parse_cidr};
use crate::system::posix_timezone;
use crate::{Backend, Invalid, pointer_join};

type Obj = Map<String, Value>;
pub(crate) type Check = Result<(), Invalid>;

const INTERFACE_TYPES: &[&str] = &[
    "ethernet",
    "virtual",
    "loopback",
    "other",
    "wireless",
    "bridge",
    "dialup",
    "modem-manager",
    "vxlan",
    "wireguard",
    "8021q",
    "8021ad",
];
const WIFI_MODES: &[&str] = &["access_point", "station", "adhoc", "monitor", "802.11s"];
const RADIO_PROTOCOLS: &[&str] = &[
    "802.11a", "802.11b", "802.11g", "802.11n", "802.11ac", "802.11ax", "802.11ad",
];
/// Sections netjsonconfig renders and fleetmq does not (yet): refused rather than dropped.
const UNSUPPORTED: &[&str] = &["switch", "zerotier"];

/// Checks `config` the way netjsonconfig's `validate()` would for `backend`, reporting the first
/// problem with the JSON pointer of the offending value, so the API can answer with the field.
pub fn validate(config: &Value, backend: Backend) -> Result<(), Invalid> {
    let Value::Object(config) = config else {
        return Err(Invalid::at("", "is not of type 'object'"));
    };
    for section in UNSUPPORTED {
        if config.get(*section).is_some_and(|v| !is_empty(v)) {
            return Err(Invalid::at(
                format!("/{section}"),
                format!("fleetmq cannot render '{section}' yet; remove it or use files"),
            ));
        }
    }
    general(config.get("general"), backend)?;
    if let Some(ntp) = config.get("ntp") {
        let ntp = object(ntp, "/ntp")?;
        optional(ntp, "enabled", "/ntp", Kind::Boolean)?;
        optional(ntp, "enable_server", "/ntp", Kind::Boolean)?;
        if let Some(servers) = ntp.get("server") {
            for (i, server) in array(servers, "/ntp/server")?.iter().enumerate() {
                hostname(server, &format!("/ntp/server/{i}"))?;
            }
        }
    }
    if let Some(dns) = config.get("dns_servers") {
        for (i, server) in array(dns, "/dns_servers")?.iter().enumerate() {
            kind(server, &format!("/dns_servers/{i}"), Kind::String)?;
        }
    }
    if let Some(search) = config.get("dns_search") {
        for (i, domain) in array(search, "/dns_search")?.iter().enumerate() {
            hostname(domain, &format!("/dns_search/{i}"))?;
        }
    }
    if let Some(interfaces) = config.get("interfaces") {
        for (i, interface) in array(interfaces, "/interfaces")?.iter().enumerate() {
            self::interface(interface, &format!("/interfaces/{i}"))?;
        }
    }
    if let Some(radios) = config.get("radios") {
        for (i, radio) in array(radios, "/radios")?.iter().enumerate() {
            self::radio(radio, &format!("/radios/{i}"))?;
        }
    }
    if let Some(routes) = config.get("routes") {
        for (i, route) in array(routes, "/routes")?.iter().enumerate() {
            self::route(route, &format!("/routes/{i}"))?;
        }
    }
    if let Some(rules) = config.get("ip_rules") {
        for (i, rule) in array(rules, "/ip_rules")?.iter().enumerate() {
            self::rule(rule, &format!("/ip_rules/{i}"))?;
        }
    }
    if let Some(leds) = config.get("led") {
        for (i, led) in array(leds, "/led")?.iter().enumerate() {
            let at = format!("/led/{i}");
            let led = object(led, &at)?;
            for field in ["name", "sysfs", "trigger"] {
                required(led, field, &at, Kind::String)?;
            }
        }
    }
    crate::vpn::openvpn::validate_list(config)?;
    if let Some(peers) = config.get("wireguard_peers") {
        for (i, peer) in array(peers, "/wireguard_peers")?.iter().enumerate() {
            self::wireguard_peer(peer, &format!("/wireguard_peers/{i}"))?;
        }
    }
    if let Some(files) = config.get("files") {
        for (i, file) in array(files, "/files")?.iter().enumerate() {
            self::file(file, &format!("/files/{i}"))?;
        }
    }
    if backend == Backend::OpenWisp
        && let Some(tc) = config.get("tc_options")
    {
        for (i, item) in array(tc, "/tc_options")?.iter().enumerate() {
            let at = format!("/tc_options/{i}");
            let item = object(item, &at)?;
            only(item, &["name", "input_bandwidth", "output_bandwidth"], &at)?;
            required(item, "name", &at, Kind::String)?;
            optional(item, "input_bandwidth", &at, Kind::Integer)?;
            optional(item, "output_bandwidth", &at, Kind::Integer)?;
        }
    }
    Ok(())
}

fn general(general: Option<&Value>, backend: Backend) -> Check {
    let Some(general) = general else {
        if backend == Backend::OpenWisp {
            return Err(Invalid::at("/general", "'general' is a required property"));
        }
        return Ok(());
    };
    let general = object(general, "/general")?;
    match general.get("hostname") {
        Some(h) => {
            let text = kind(h, "/general/hostname", Kind::String)?;
            if text.is_empty() || text.chars().count() > 63 {
                return Err(Invalid::at(
                    "/general/hostname",
                    "must be 1 to 63 characters long",
                ));
            }
            hostname(h, "/general/hostname")?;
        }
        None if backend == Backend::OpenWisp => {
            return Err(Invalid::at(
                "/general/hostname",
                "'hostname' is a required property",
            ));
        }
        None => {}
    }
    if let Some(tz) = general.get("timezone") {
        let zone = kind(tz, "/general/timezone", Kind::String)?;
        if posix_timezone(zone).is_none() {
            return Err(Invalid::at(
                "/general/timezone",
                format!("'{zone}' is not a known timezone"),
            ));
        }
    }
    Ok(())
}

fn interface(interface: &Value, at: &str) -> Check {
    let interface = object(interface, at)?;
    let name = required(interface, "name", at, Kind::String)?;
    let name_len = name.as_str().map_or(0, |n| n.chars().count());
    if !(2..=15).contains(&name_len)
        || name
            .as_str()
            .is_some_and(|n| n.chars().any(char::is_whitespace))
    {
        return Err(Invalid::at(
            pointer_join(at, "name"),
            "must be 2 to 15 characters without spaces",
        ));
    }
    let kind_value = required(interface, "type", at, Kind::String)?;
    let kind_name = kind_value.as_str().unwrap_or_default();
    if !INTERFACE_TYPES.contains(&kind_name) {
        return Err(Invalid::at(
            pointer_join(at, "type"),
            format!("'{kind_name}' is not one of {INTERFACE_TYPES:?}"),
        ));
    }
    optional(interface, "mtu", at, Kind::Integer)?;
    if let Some(mtu) = interface.get("mtu").and_then(Value::as_i64)
        && mtu < 68
    {
        return Err(Invalid::at(pointer_join(at, "mtu"), "must be at least 68"));
    }
    optional(interface, "disabled", at, Kind::Boolean)?;
    optional(interface, "autostart", at, Kind::Boolean)?;
    if let Some(network) = interface.get("network") {
        let text = kind(network, &pointer_join(at, "network"), Kind::String)?;
        if text.len() > 15
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-[]\\^`".contains(c))
        {
            return Err(Invalid::at(
                pointer_join(at, "network"),
                "must be at most 15 letters, digits, '_', '.' or '-'",
            ));
        }
    }
    if let Some(mac) = interface.get("mac") {
        let text = kind(mac, &pointer_join(at, "mac"), Kind::String)?;
        if !text.is_empty() && !is_mac(text) {
            return Err(Invalid::at(
                pointer_join(at, "mac"),
                format!("'{text}' is not a MAC address"),
            ));
        }
    }
    if let Some(addresses) = interface.get("addresses") {
        let at = pointer_join(at, "addresses");
        for (i, address) in array(addresses, &at)?.iter().enumerate() {
            self::address(address, &pointer_join(&at, i), kind_name)?;
        }
    }
    match kind_name {
        "bridge" => {
            let members = required(interface, "bridge_members", at, Kind::Array)?;
            let at = pointer_join(at, "bridge_members");
            for (i, member) in members.as_array().into_iter().flatten().enumerate() {
                kind(member, &pointer_join(&at, i), Kind::String)?;
            }
            optional(interface, "stp", &at, Kind::Boolean)?;
        }
        "dialup" => {
            for field in ["proto", "username", "password"] {
                required(interface, field, at, Kind::String)?;
            }
        }
        "wireless" => {
            if let Some(wireless) = interface.get("wireless") {
                self::wireless(wireless, &pointer_join(at, "wireless"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn address(address: &Value, at: &str, interface_type: &str) -> Check {
    let address = object(address, at)?;
    if interface_type == "wireguard" {
        required(address, "address", at, Kind::String)?;
        return optional(address, "mask", at, Kind::Integer);
    }
    let proto = required(address, "proto", at, Kind::String)?;
    let family = required(address, "family", at, Kind::String)?;
    let family = family.as_str().unwrap_or_default();
    if family != "ipv4" && family != "ipv6" {
        return Err(Invalid::at(
            pointer_join(at, "family"),
            format!("'{family}' is not one of ['ipv4', 'ipv6']"),
        ));
    }
    match proto.as_str() {
        Some("dhcp") => Ok(()),
        Some("static") => {
            let text = required(address, "address", at, Kind::String)?;
            required(address, "mask", at, Kind::Integer)?;
            let text = text.as_str().unwrap_or_default();
            let ok = match family {
                "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
                _ => text.parse::<std::net::Ipv6Addr>().is_ok(),
            };
            if !ok {
                return Err(Invalid::at(
                    pointer_join(at, "address"),
                    format!("'{text}' is not a '{family}' address"),
                ));
            }
            let mask = address.get("mask").and_then(Value::as_i64).unwrap_or(-1);
            let max = if family == "ipv4" { 32 } else { 128 };
            if !(0..=max).contains(&mask) {
                return Err(Invalid::at(
                    pointer_join(at, "mask"),
                    format!("must be between 0 and {max}"),
                ));
            }
            optional(address, "gateway", at, Kind::String)
        }
        other => Err(Invalid::at(
            pointer_join(at, "proto"),
            format!(
                "'{}' is not one of ['static', 'dhcp']",
                other.unwrap_or_default()
            ),
        )),
    }
}

fn wireless(wireless: &Value, at: &str) -> Check {
    let wireless = object(wireless, at)?;
    let radio = required(wireless, "radio", at, Kind::String)?;
    if radio.as_str().is_some_and(|r| r.chars().count() < 2) {
        return Err(Invalid::at(pointer_join(at, "radio"), "is too short"));
    }
    let mode = required(wireless, "mode", at, Kind::String)?;
    let mode = mode.as_str().unwrap_or_default();
    if !WIFI_MODES.contains(&mode) {
        return Err(Invalid::at(
            pointer_join(at, "mode"),
            format!("'{mode}' is not one of {WIFI_MODES:?}"),
        ));
    }
    if matches!(mode, "access_point" | "station" | "adhoc") {
        let ssid = required(wireless, "ssid", at, Kind::String)?;
        if ssid.as_str().is_some_and(|s| s.chars().count() > 32) {
            return Err(Invalid::at(
                pointer_join(at, "ssid"),
                "is longer than 32 characters",
            ));
        }
    }
    if mode == "802.11s" {
        required(wireless, "mesh_id", at, Kind::String)?;
    }
    for field in ["ack_distance", "rts_threshold", "frag_threshold"] {
        optional(wireless, field, at, Kind::Integer)?;
    }
    for field in ["hidden", "wds", "wmm", "isolate", "ieee80211r"] {
        optional(wireless, field, at, Kind::Boolean)?;
    }
    if let Some(network) = wireless.get("network") {
        let at = pointer_join(at, "network");
        for (i, n) in array(network, &at)?.iter().enumerate() {
            kind(n, &pointer_join(&at, i), Kind::String)?;
        }
    }
    if let Some(encryption) = wireless.get("encryption") {
        let at = pointer_join(at, "encryption");
        let encryption = object(encryption, &at)?;
        let protocol = required(encryption, "protocol", &at, Kind::String)?;
        optional(encryption, "disabled", &at, Kind::Boolean)?;
        let protocol = protocol.as_str().unwrap_or_default();
        if protocol != "none" && protocol != "owe" {
            required(encryption, "key", &at, Kind::String)?;
        }
    }
    Ok(())
}

fn radio(radio: &Value, at: &str) -> Check {
    let radio = object(radio, at)?;
    let name = required(radio, "name", at, Kind::String)?;
    if name.as_str().is_some_and(|n| n.chars().count() < 3) {
        return Err(Invalid::at(pointer_join(at, "name"), "is too short"));
    }
    let protocol = required(radio, "protocol", at, Kind::String)?;
    let protocol = protocol.as_str().unwrap_or_default();
    if !RADIO_PROTOCOLS.contains(&protocol) {
        return Err(Invalid::at(
            pointer_join(at, "protocol"),
            format!("'{protocol}' is not one of {RADIO_PROTOCOLS:?}"),
        ));
    }
    let channel = required(radio, "channel", at, Kind::Integer)?;
    required(radio, "channel_width", at, Kind::Integer)?;
    optional(radio, "tx_power", at, Kind::Integer)?;
    optional(radio, "disabled", at, Kind::Boolean)?;
    if let Some(country) = radio.get("country") {
        let text = kind(country, &pointer_join(at, "country"), Kind::String)?;
        if text.chars().count() > 2 {
            return Err(Invalid::at(
                pointer_join(at, "country"),
                "is not a country code",
            ));
        }
    }
    if matches!(protocol, "802.11n" | "802.11ax")
        && radio.get("band").is_none_or(Value::is_null)
        && radio.get("hwmode").is_none_or(Value::is_null)
        && channel.as_i64() == Some(0)
    {
        return Err(Invalid::at(
            pointer_join(at, "channel"),
            "\"channel\" cannot be set to \"auto\" when \"hwmode\" or \"band\" property is not configured.",
        ));
    }
    Ok(())
}

fn route(route: &Value, at: &str) -> Check {
    let route = object(route, at)?;
    required(route, "device", at, Kind::String)?;
    let destination = required(route, "destination", at, Kind::String)?;
    required(route, "next", at, Kind::String)?;
    required(route, "cost", at, Kind::Integer)?;
    optional(route, "onlink", at, Kind::Boolean)?;
    let text = destination.as_str().unwrap_or_default();
    if parse_cidr(text).is_none() {
        return Err(Invalid::at(
            pointer_join(at, "destination"),
            format!("'{text}' is not an IPv4 or IPv6 address or network"),
        ));
    }
    Ok(())
}

fn rule(rule: &Value, at: &str) -> Check {
    let rule = object(rule, at)?;
    for field in ["in", "out", "mark", "lookup", "action"] {
        optional(rule, field, at, Kind::String)?;
    }
    for field in ["tos", "goto"] {
        optional(rule, field, at, Kind::Integer)?;
    }
    optional(rule, "invert", at, Kind::Boolean)?;
    for field in ["src", "dest"] {
        if let Some(value) = rule.get(field) {
            let text = kind(value, &pointer_join(at, field), Kind::String)?;
            if is_strict_network(text).is_none() {
                return Err(Invalid::at(
                    pointer_join(at, field),
                    format!("'{text}' is not a 'cidr'"),
                ));
            }
        }
    }
    Ok(())
}

/// A `wireguard_peers` entry: the interface it belongs to, the peer's key and allowed IPs.
fn wireguard_peer(peer: &Value, at: &str) -> Check {
    use crate::vpn::wireguard::{interface_name, key_text, port};
    let peer = object(peer, at)?;
    let interface = required(peer, "interface", at, Kind::String)?;
    interface_name(interface, &pointer_join(at, "interface"))?;
    let key = required(peer, "public_key", at, Kind::String)?;
    key_text(key, &pointer_join(at, "public_key"), true)?;
    let allowed = required(peer, "allowed_ips", at, Kind::Array)?;
    let allowed_at = pointer_join(at, "allowed_ips");
    for (i, ip) in allowed.as_array().into_iter().flatten().enumerate() {
        let text = kind(ip, &pointer_join(&allowed_at, i), Kind::String)?;
        if text.is_empty() {
            return Err(Invalid::at(
                pointer_join(&allowed_at, i),
                "must not be empty",
            ));
        }
    }
    optional(peer, "endpoint_host", at, Kind::String)?;
    port(peer, "endpoint_port", at)?;
    if let Some(key) = peer.get("preshared_key") {
        key_text(key, &pointer_join(at, "preshared_key"), false)?;
    }
    optional(peer, "persistent_keepalive", at, Kind::Integer)?;
    optional(peer, "route_allowed_ips", at, Kind::Boolean)
}

pub(crate) fn file(file: &Value, at: &str) -> Check {
    let file = object(file, at)?;
    only(file, &["path", "mode", "contents"], at)?;
    let path = required(file, "path", at, Kind::String)?;
    let mode = required(file, "mode", at, Kind::String)?;
    required(file, "contents", at, Kind::String)?;
    let mode = mode.as_str().unwrap_or_default();
    if !(3..=4).contains(&mode.len()) || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(Invalid::at(
            pointer_join(at, "mode"),
            format!("'{mode}' is not an octal file mode such as '0644'"),
        ));
    }
    let path = path.as_str().unwrap_or_default();
    if path.chars().count() < 2 || !valid_path(path) {
        return Err(Invalid::at(
            pointer_join(at, "path"),
            format!(
                "Invalid file path \"{path}\". Allowed characters are letters, numbers, \".\", \"_\", \"-\", and \"/\". Empty path parts and \".\" or \"..\" components are not allowed."
            ),
        ));
    }
    Ok(())
}

/// netjsonconfig's file path rule: `[A-Za-z0-9._/-]` (a `{{ var }}` counts as one letter), one
/// optional leading '/', no empty, "." or ".." components.
fn valid_path(path: &str) -> bool {
    let mut clean = String::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{{") {
            let Some(end) = after.find("}}") else {
                return false;
            };
            clean.push('x');
            rest = &after[end + 2..];
            continue;
        }
        let c = rest.chars().next().unwrap_or('{');
        if c == '{' || c == '}' {
            return false;
        }
        clean.push(c);
        rest = &rest[c.len_utf8()..];
    }
    let chars_ok = !clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    let components = path.strip_prefix('/').unwrap_or(path);
    chars_ok
        && components
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn is_mac(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 17
        && bytes.iter().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                *b == b':' || *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// jsonschema's (3.2) hostname format, as netjsonconfig uses it.
pub(crate) fn hostname(value: &Value, at: &str) -> Check {
    let text = kind(value, at, Kind::String)?;
    let ok = text.len() >= 2
        && text.len() <= 256
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && text.split('.').all(|c| c.len() <= 63);
    if ok {
        Ok(())
    } else {
        Err(Invalid::at(at, format!("'{text}' is not a 'hostname'")))
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    String,
    Integer,
    Boolean,
    Array,
}

pub(crate) fn kind<'a>(value: &'a Value, at: &str, expected: Kind) -> Result<&'a str, Invalid> {
    let (ok, name) = match expected {
        Kind::String => (value.is_string(), "string"),
        // JSON Schema draft 4: 1.0 is not an integer for Python's jsonschema either.
        Kind::Integer => (value.is_i64() || value.is_u64(), "integer"),
        Kind::Boolean => (value.is_boolean(), "boolean"),
        Kind::Array => (value.is_array(), "array"),
    };
    if ok {
        Ok(value.as_str().unwrap_or_default())
    } else {
        Err(Invalid::at(at, format!("{value} is not of type '{name}'")))
    }
}

pub(crate) fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Obj, Invalid> {
    value
        .as_object()
        .ok_or_else(|| Invalid::at(at, format!("{value} is not of type 'object'")))
}

pub(crate) fn array<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>, Invalid> {
    value
        .as_array()
        .ok_or_else(|| Invalid::at(at, format!("{value} is not of type 'array'")))
}

pub(crate) fn required<'a>(
    map: &'a Obj,
    field: &str,
    at: &str,
    expected: Kind,
) -> Result<&'a Value, Invalid> {
    let value = map.get(field).ok_or_else(|| {
        Invalid::at(
            pointer_join(at, field),
            format!("'{field}' is a required property"),
        )
    })?;
    kind(value, &pointer_join(at, field), expected)?;
    Ok(value)
}

pub(crate) fn optional(map: &Obj, field: &str, at: &str, expected: Kind) -> Check {
    match map.get(field) {
        Some(value) => kind(value, &pointer_join(at, field), expected).map(|_| ()),
        None => Ok(()),
    }
}

fn only(map: &Obj, allowed: &[&str], at: &str) -> Check {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(Invalid::at(
            pointer_join(at, extra),
            format!("Additional properties are not allowed ('{extra}' was unexpected)"),
        )),
        None => Ok(()),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invalid(config: Value) -> Invalid {
        validate(&config, Backend::OpenWrt).expect_err("should be refused")
    }

    #[test]
    fn a_complete_config_is_accepted() {
        let config = json!({
            "general": {"hostname": "r1", "timezone": "Europe/Rome"},
            "interfaces": [
                {"name": "eth0", "type": "ethernet", "addresses": [{"proto": "dhcp", "family": "ipv4"}]},
                {"name": "lan", "type": "bridge", "bridge_members": ["eth1"],
                 "addresses": [{"proto": "static", "family": "ipv4", "address": "10.0.0.1", "mask": 24}]},
                {"name": "wlan0", "type": "wireless", "wireless": {"radio": "radio0", "mode": "access_point", "ssid": "x"}}
            ],
            "radios": [{"name": "radio0", "protocol": "802.11n", "channel": 1, "channel_width": 20}],
            "routes": [{"device": "eth0", "destination": "10.1.0.0/16", "next": "10.0.0.2", "cost": 0}],
            "files": [{"path": "/etc/x", "mode": "0644", "contents": ""}],
            "luci": [{"config_name": "core", "lang": "en"}]
        });
        assert_eq!(validate(&config, Backend::OpenWrt), Ok(()));
    }

    #[test]
    fn an_interface_without_type_is_refused_at_that_interface() {
        let err = invalid(
            json!({"interfaces": [{"name": "eth0", "type": "ethernet"}, {"name": "eth1"}]}),
        );
        assert_eq!(err.pointer, "/interfaces/1/type");
        assert!(err.message.contains("required"), "{err}");
    }

    #[test]
    fn an_interface_without_name_is_refused() {
        assert_eq!(
            invalid(json!({"interfaces": [{"type": "ethernet"}]})).pointer,
            "/interfaces/0/name"
        );
    }

    #[test]
    fn a_numeric_file_mode_is_refused() {
        let err = invalid(json!({"files": [{"path": "/etc/x", "mode": 644, "contents": ""}]}));
        assert_eq!(err.pointer, "/files/0/mode");
    }

    #[test]
    fn a_non_octal_file_mode_is_refused() {
        let err = invalid(json!({"files": [{"path": "/etc/x", "mode": "0899", "contents": ""}]}));
        assert_eq!(err.pointer, "/files/0/mode");
    }

    #[test]
    fn file_paths_that_climb_out_are_refused() {
        for path in ["/etc/../shadow", "/etc//x", "/etc/x y", "/etc/{x}"] {
            let err = invalid(json!({"files": [{"path": path, "mode": "0644", "contents": ""}]}));
            assert_eq!(err.pointer, "/files/0/path", "{path}");
        }
        let ok =
            json!({"files": [{"path": "/etc/{{ name }}.conf", "mode": "0644", "contents": ""}]});
        assert_eq!(validate(&ok, Backend::OpenWrt), Ok(()));
    }

    #[test]
    fn a_file_without_contents_is_refused() {
        let err = invalid(json!({"files": [{"path": "/etc/x", "mode": "0644"}]}));
        assert_eq!(err.pointer, "/files/0/contents");
    }

    #[test]
    fn wrong_types_in_known_sections_are_refused_with_their_pointer() {
        assert_eq!(invalid(json!({"general": []})).pointer, "/general");
        assert_eq!(invalid(json!({"interfaces": {}})).pointer, "/interfaces");
        assert_eq!(
            invalid(json!({"dns_servers": [8]})).pointer,
            "/dns_servers/0"
        );
        assert_eq!(
            invalid(json!({"radios": [{"name": "radio0", "protocol": "802.11n", "channel": "1", "channel_width": 20}]})).pointer,
            "/radios/0/channel"
        );
        assert_eq!(
            invalid(json!({"interfaces": [{"name": "eth0", "type": "ethernet", "mtu": "1500"}]}))
                .pointer,
            "/interfaces/0/mtu"
        );
    }

    #[test]
    fn static_addresses_need_a_valid_address_and_mask() {
        let err = invalid(json!({"interfaces": [{"name": "eth0", "type": "ethernet",
            "addresses": [{"proto": "static", "family": "ipv4", "address": "10.0.0.300", "mask": 24}]}]}));
        assert_eq!(err.pointer, "/interfaces/0/addresses/0/address");
    }

    #[test]
    fn an_unknown_timezone_is_refused() {
        assert_eq!(
            invalid(json!({"general": {"timezone": "Mars/Base"}})).pointer,
            "/general/timezone"
        );
    }

    #[test]
    fn the_openwisp_backend_requires_a_hostname() {
        let err = validate(&json!({"general": {}}), Backend::OpenWisp).unwrap_err();
        assert_eq!(err.pointer, "/general/hostname");
        assert_eq!(validate(&json!({"general": {}}), Backend::OpenWrt), Ok(()));
    }

    #[test]
    fn sections_fleetmq_cannot_render_are_refused_not_dropped() {
        let err = invalid(json!({"zerotier": [{"name": "zt"}]}));
        assert_eq!(err.pointer, "/zerotier");
    }

    #[test]
    fn auto_channel_on_802_11n_needs_a_band() {
        let err = invalid(
            json!({"radios": [{"name": "radio0", "protocol": "802.11n", "channel": 0, "channel_width": 20}]}),
        );
        assert_eq!(err.pointer, "/radios/0/channel");
    }
}
