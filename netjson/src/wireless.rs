//! `radios` and wireless `interfaces` → the `wireless` package (`wifi-device`, `wifi-iface`).

use serde_json::{Map, Value, json};

use crate::network::uci_name;
use crate::uci::{Packages, Section, python_str};

type Obj = Map<String, Value>;

const CHANNELS_2GHZ: std::ops::Range<i64> = 0..14;

fn in_5ghz(channel: i64) -> bool {
    (36..68).step_by(4).any(|c| c == channel)
        || (100..148).step_by(4).any(|c| c == channel)
        || (149..181).step_by(4).any(|c| c == channel)
}

fn in_6ghz(channel: i64) -> bool {
    (37..69).step_by(4).any(|c| c == channel) || (101..149).step_by(4).any(|c| c == channel)
}

fn s<'a>(map: &'a Obj, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// `radios` → one `config wifi-device` per radio. OpenWrt ≥ 21 gets `band`, older firmware
/// `hwmode`; `htmode` follows protocol and channel width for mac80211.
pub(crate) fn radios(config: &Obj, dsa: bool, disabled_default: bool, packages: &mut Packages) {
    let Some(Value::Array(list)) = config.get("radios") else {
        return;
    };
    let mut sections = Vec::new();
    for radio in list {
        let Value::Object(radio) = radio else {
            continue;
        };
        let mut radio = radio.clone();
        if disabled_default {
            radio.entry("disabled").or_insert(Value::Bool(false));
        }
        let name = radio
            .remove("name")
            .map(|n| python_str(&n))
            .unwrap_or_default();
        if let Some(tx) = radio.remove("tx_power") {
            radio.insert("txpower".into(), tx);
        }
        let driver = radio.remove("driver").unwrap_or_else(|| json!("mac80211"));
        radio.insert("type".into(), driver);
        if dsa {
            let band = band(&mut radio);
            radio.insert("band".into(), band);
        } else {
            let hwmode = hwmode(&mut radio);
            radio.insert("hwmode".into(), hwmode);
        }
        if radio.get("channel").and_then(Value::as_i64) == Some(0) {
            radio.insert("channel".into(), json!("auto"));
        }
        if s(&radio, "type") == Some("mac80211") {
            let htmode = htmode(&mut radio);
            radio.insert("htmode".into(), htmode);
        } else {
            radio.remove("protocol");
        }
        if let Some(country) = s(&radio, "country").map(str::to_uppercase) {
            radio.insert("country".into(), Value::String(country));
        }
        sections.push(Section::sorted("wifi-device", name, radio));
    }
    packages.add("wireless", sections);
}

fn band(radio: &mut Obj) -> Value {
    let hwmode = radio.remove("hwmode");
    let band = radio.remove("band");
    if let Some(band) = band.filter(|b| !b.is_null() && b.as_str() != Some("")) {
        return band;
    }
    if let Some(hwmode) = hwmode
        .as_ref()
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
    {
        return match hwmode {
            "11a" => json!("5g"),
            "11b" | "11g" => json!("2g"),
            _ => Value::Null,
        };
    }
    match s(radio, "protocol") {
        Some("802.11ad") => return json!("60g"),
        Some("802.11b" | "802.11g") => return json!("2g"),
        Some("802.11a" | "802.11ac") => return json!("5g"),
        _ => {}
    }
    let channel = radio.get("channel").and_then(Value::as_i64);
    match channel {
        Some(c) if CHANNELS_2GHZ.contains(&c) => json!("2g"),
        Some(c) if in_5ghz(c) => json!("5g"),
        Some(c) if in_6ghz(c) => json!("6g"),
        _ => Value::Null,
    }
}

fn hwmode(radio: &mut Obj) -> Value {
    let hwmode = radio.remove("hwmode");
    let band = radio.remove("band");
    if let Some(h) = hwmode.filter(|h| !h.is_null() && h.as_str() != Some("")) {
        return h;
    }
    let protocol = s(radio, "protocol").unwrap_or_default().to_string();
    match band.as_ref().and_then(Value::as_str) {
        Some("2g") => return json!(if protocol == "802.11b" { "11b" } else { "11g" }),
        Some("5g") => return json!("11a"),
        _ => {}
    }
    if ["802.11a", "802.11b", "802.11g"].contains(&protocol.as_str()) {
        return Value::String(protocol[4..].to_string());
    }
    if protocol == "802.11ac" {
        return json!("11a");
    }
    match radio.get("channel").and_then(Value::as_i64) {
        Some(0) => Value::Null,
        Some(c) if c <= 13 => json!("11g"),
        _ => json!("11a"),
    }
}

fn htmode(radio: &mut Obj) -> Value {
    let protocol = radio.remove("protocol");
    let width = radio
        .remove("channel_width")
        .map(|w| python_str(&w))
        .unwrap_or_default();
    if let Some(htmode) = radio.get("htmode") {
        return htmode.clone();
    }
    match protocol.as_ref().and_then(Value::as_str) {
        Some("802.11n") => Value::String(format!("HT{width}")),
        Some("802.11ac") => Value::String(format!("VHT{width}")),
        Some("802.11ax") => Value::String(format!("HE{width}")),
        _ => json!("NONE"),
    }
}

/// Wireless `interfaces` → one `config wifi-iface` each, attached to the bridges that list the
/// wireless interface as a member (or to its own network when it has addresses).
pub(crate) fn wifi_ifaces(config: &Obj, dsa: bool, packages: &mut Packages) {
    let Some(Value::Array(list)) = config.get("interfaces") else {
        return;
    };
    let bridged = bridged_wifi(packages.get("network"), dsa);
    let mut sections = Vec::new();
    for interface in list {
        let Value::Object(interface) = interface else {
            continue;
        };
        let Some(Value::Object(wireless)) = interface.get("wireless") else {
            continue;
        };
        let mut wifi = wireless.clone();
        let ifname = interface.get("name").cloned().unwrap_or(Value::Null);
        wifi.insert(
            "disabled".into(),
            interface.get("disabled").cloned().unwrap_or(Value::Null),
        );
        wifi.insert("ifname".into(), ifname.clone());
        let name = match wifi.remove("id") {
            Some(id) if !id.is_null() && id.as_str() != Some("") => python_str(&id),
            _ => format!("wifi_{}", uci_name(&python_str(&ifname))),
        };
        let radio = wifi.remove("radio").unwrap_or(Value::Null);
        wifi.insert("device".into(), radio);
        if let Some(mac) = interface.get("mac") {
            wifi.insert("macaddr".into(), mac.clone());
        }
        let mode = match s(&wifi, "mode") {
            Some("access_point") => "ap",
            Some("station") => "sta",
            Some("adhoc") => "adhoc",
            Some("monitor") => "monitor",
            Some("802.11s") => "mesh",
            _ => "ap",
        };
        wifi.insert("mode".into(), json!(mode));
        for (netjson, uci) in [
            ("ack_distance", "distance"),
            ("rts_threshold", "rts"),
            ("frag_threshold", "frag"),
        ] {
            if let Some(value) = wifi.remove(netjson)
                && value.as_f64().is_some_and(|v| v > 0.0)
            {
                wifi.insert(uci.into(), value);
            }
        }
        if wifi.contains_key("encryption") {
            let encryption = encryption(&mut wifi);
            for (k, v) in encryption {
                wifi.insert(k, v);
            }
        }
        if wifi.get("ieee80211r") == Some(&Value::Bool(false)) {
            for property in [
                "ft_over_ds",
                "ft_psk_generate_local",
                "nasid",
                "reassociation_deadline",
            ] {
                wifi.remove(property);
            }
        }
        let explicit = wifi.get("network").filter(|n| match n {
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        });
        let networks: Vec<String> = match explicit {
            Some(Value::Array(a)) => a.iter().map(python_str).collect(),
            Some(other) => vec![python_str(other)],
            None => {
                let key = python_str(&ifname);
                if let Some(bridges) = bridged.iter().find(|(k, _)| *k == key) {
                    bridges.1.clone()
                } else if interface
                    .get("addresses")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
        };
        wifi.insert(
            "network".into(),
            Value::String(uci_name(&networks.join(" "))),
        );
        sections.push(Section::sorted("wifi-iface", name, wifi));
    }
    packages.add("wireless", sections);
}

/// Physical interface → the bridges (by UCI name) that have it as a member.
fn bridged_wifi(network: &[Section], dsa: bool) -> Vec<(String, Vec<String>)> {
    let mut bridged: Vec<(String, Vec<String>)> = Vec::new();
    for section in network {
        let get = |k: &str| {
            section
                .options
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v)
        };
        if get("type").and_then(Value::as_str) != Some("bridge") {
            continue;
        }
        let members: Vec<String> = match (dsa, get("ports")) {
            (true, Some(Value::Array(ports))) if !ports.is_empty() => {
                ports.iter().map(python_str).collect()
            }
            _ => match get("ifname").and_then(Value::as_str) {
                Some(ifname) => ifname.split(' ').map(str::to_string).collect(),
                None => continue,
            },
        };
        let mut bridge = section.name.clone();
        if dsa && let Some(stripped) = bridge.strip_prefix("device_") {
            bridge = stripped.to_string();
        }
        for member in members {
            match bridged.iter_mut().find(|(k, _)| *k == member) {
                Some((_, list)) => {
                    if !list.contains(&bridge) {
                        list.push(bridge.clone());
                    }
                }
                None => bridged.push((member, vec![bridge.clone()])),
            }
        }
    }
    bridged
}

/// NetJSON `encryption` → UCI `encryption`, `key`, RADIUS options.
fn encryption(wifi: &mut Obj) -> Obj {
    let encryption = match wifi.remove("encryption") {
        Some(Value::Object(e)) => e,
        _ => Obj::new(),
    };
    let disabled = encryption.get("disabled") == Some(&Value::Bool(true));
    let protocol = s(&encryption, "protocol").unwrap_or_default().to_string();
    let mut uci = Obj::new();
    if encryption.is_empty() || disabled || protocol == "none" {
        uci.insert("encryption".into(), json!("none"));
        return uci;
    }
    uci = encryption.clone();
    for option in ["protocol", "key", "cipher", "disabled", "acct_server_port"] {
        uci.remove(option);
    }
    let mapped = match protocol.as_str() {
        "wep_open" => "wep-open",
        "wep_shared" => "wep-shared",
        "wpa_personal" => "psk",
        "wpa2_personal" => "psk2",
        "wpa3_personal" => "sae",
        "wpa_personal_mixed" => "psk-mixed",
        "wpa2_personal_mixed" => "sae-mixed",
        "wpa_enterprise" => "wpa",
        "wpa2_enterprise" => "wpa2",
        "wpa3_enterprise" => "wpa3",
        "wpa_enterprise_mixed" => "wpa-mixed",
        "wpa2_enterprise_mixed" => "wpa3-mixed",
        "wps" => "psk",
        "owe" => "owe",
        other => other,
    };
    let mut mode_encryption = mapped.to_string();
    if protocol.starts_with("wep") {
        uci.insert("key".into(), json!("1"));
        let key = encryption.get("key").map(python_str).unwrap_or_default();
        let key = if protocol == "wep_open" {
            format!("s:{key}")
        } else {
            key
        };
        uci.insert("key1".into(), Value::String(key));
    } else {
        if protocol.contains("enterprise") {
            if s(&uci, "eap_type") == Some("tls") {
                uci.remove("auth");
            }
            if s(wifi, "mode") == Some("ap") {
                for option in ["server", "port"] {
                    if let Some(v) = encryption.get(option) {
                        uci.insert(format!("auth_{option}"), v.clone());
                    }
                }
                let key = encryption.get("key").cloned().unwrap_or(Value::Null);
                uci.insert("auth_secret".into(), key.clone());
                if !encryption.contains_key("acct_secret") {
                    uci.insert("acct_secret".into(), key);
                }
                if let Some(port) = encryption.get("acct_server_port") {
                    uci.insert("acct_port".into(), port.clone());
                }
            }
        }
        if let Some(key) = encryption.get("key") {
            uci.insert("key".into(), key.clone());
        }
    }
    if let Some(cipher) = s(&encryption, "cipher")
        && !cipher.is_empty()
        && protocol.starts_with("wpa")
        && cipher != "auto"
    {
        mode_encryption = format!("{mode_encryption}+{cipher}");
    }
    uci.insert("encryption".into(), Value::String(mode_encryption));
    uci
}
