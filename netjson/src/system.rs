//! `general`, `ntp` and `led` → the `system` package (and `network` globals for `ula_prefix`).

use serde_json::{Map, Value};

use crate::timezones::TIMEZONES;
use crate::uci::{Packages, Section};

/// The hostname OpenWISP gives a device whose config sets none: its name, with the ':' of a
/// MAC-address name replaced by '-' (a hostname may not contain ':').
pub fn hostname_from_device_name(name: &str) -> String {
    name.replace(':', "-")
}

/// The POSIX TZ string OpenWrt's `system.timezone` takes for an Olson zone name.
pub(crate) fn posix_timezone(zone: &str) -> Option<&'static str> {
    TIMEZONES
        .binary_search_by(|(name, _)| (*name).cmp(zone))
        .ok()
        .map(|i| TIMEZONES[i].1)
}

/// `general` → `config system` (+ `config globals` in `network` when it has `ula_prefix`).
pub(crate) fn general(config: &Map<String, Value>, packages: &mut Packages) {
    let Some(Value::Object(general)) = config.get("general") else {
        return;
    };
    let mut general = general.clone();
    let mut network = None;
    if let Some(ula) = general.remove("ula_prefix") {
        let name = take_name(&mut general, "globals_id", "globals");
        let mut globals = Map::new();
        globals.insert("ula_prefix".into(), ula);
        network = Some(Section::sorted("globals", name, globals));
    }
    if !general.is_empty() {
        let name = take_name(&mut general, "id", "system");
        general
            .entry("hostname")
            .or_insert_with(|| Value::String("OpenWRT".into()));
        if let Some(Value::String(zone)) = general.get("timezone").cloned() {
            general.insert("zonename".into(), Value::String(zone.clone()));
            let posix = posix_timezone(&zone).unwrap_or_default();
            general.insert("timezone".into(), Value::String(posix.into()));
        }
        packages.add("system", vec![Section::sorted("system", name, general)]);
    }
    if let Some(globals) = network {
        packages.add("network", vec![globals]);
    }
}

/// `ntp` → `config timeserver 'ntp'`.
pub(crate) fn ntp(config: &Map<String, Value>, packages: &mut Packages) {
    let Some(Value::Object(ntp)) = config.get("ntp") else {
        return;
    };
    if ntp.is_empty() {
        return;
    }
    let mut ntp = ntp.clone();
    let name = take_name(&mut ntp, "id", "ntp");
    packages.add("system", vec![Section::sorted("timeserver", name, ntp)]);
}

/// `led` → one `config led` per entry.
pub(crate) fn led(config: &Map<String, Value>, packages: &mut Packages) {
    let Some(Value::Array(leds)) = config.get("led") else {
        return;
    };
    let mut sections = Vec::new();
    for led in leds {
        let Value::Object(led) = led else { continue };
        let mut led = led.clone();
        let auto = format!(
            "led_{}",
            led.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase()
        );
        let name = match led.remove("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => auto,
        };
        sections.push(Section::sorted("led", name, led));
    }
    packages.add("system", sections);
}

/// Removes `key` and returns it as the section name, or `default`.
pub(crate) fn take_name(map: &mut Map<String, Value>, key: &str, default: &str) -> String {
    match map.remove(key) {
        Some(Value::String(s)) => s,
        Some(other) => crate::uci::python_str(&other),
        None => default.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_address_device_name_becomes_a_valid_hostname() {
        assert_eq!(
            hostname_from_device_name("00:11:22:33:44:55"),
            "00-11-22-33-44-55"
        );
        assert_eq!(hostname_from_device_name("router-1"), "router-1");
    }

    #[test]
    fn zone_names_map_to_posix_strings() {
        assert_eq!(posix_timezone("UTC"), Some("UTC"));
        assert_eq!(
            posix_timezone("Europe/Rome"),
            Some("CET-1CEST,M3.5.0,M10.5.0/3")
        );
        assert_eq!(posix_timezone("Mars/Olympus"), None);
    }
}
