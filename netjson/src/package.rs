//! Custom UCI packages: any top-level key netjsonconfig does not know, holding a list of
//! `{"config_name": type, "config_value": name, option: value...}` blocks, becomes
//! `etc/config/<key>` (or is merged into a package the other sections produce).

use serde_json::{Map, Value};

use crate::network::uci_name;
use crate::uci::{Packages, Section, python_str};

/// Top-level keys with a meaning of their own (netjsonconfig's schema properties); everything
/// else that is a list is a custom package.
pub(crate) const KNOWN_SECTIONS: &[&str] = &[
    "general",
    "interfaces",
    "radios",
    "dns_servers",
    "dns_search",
    "routes",
    "files",
    "ip_rules",
    "ntp",
    "switch",
    "led",
    "wireguard_peers",
    "zerotier",
    "openvpn",
];

/// Adds the custom packages, in package-name order. Blocks without `config_name` are skipped, as
/// netjsonconfig skips them.
pub(crate) fn custom(config: &Map<String, Value>, extra_known: &[&str], packages: &mut Packages) {
    // serde_json's Map iterates in key order: the order netjsonconfig sorts packages into.
    for (package, value) in config {
        if KNOWN_SECTIONS.contains(&package.as_str()) || extra_known.contains(&package.as_str()) {
            continue;
        }
        let Value::Array(blocks) = value else {
            continue;
        };
        let mut sections = Vec::new();
        for block in blocks {
            let Value::Object(block) = block else {
                continue;
            };
            let mut block = block.clone();
            let Some(kind) = block.remove("config_name") else {
                continue;
            };
            let kind = python_str(&kind);
            let name = match block.remove("config_value") {
                Some(v) => python_str(&v),
                None => format!("{kind}_{}", sections.len() + 1),
            };
            sections.push(Section::sorted(kind, uci_name(&name), block));
        }
        if !sections.is_empty() {
            packages.add(package, sections);
        }
    }
}
