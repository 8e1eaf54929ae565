//! A whole NetJSON DeviceConfiguration → the files of its configuration archive.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::uci::{Packages, Syntax, package_text};
use crate::{Backend, Invalid, network, package, system, wireless};

/// One file of the configuration archive. `path` is relative (no leading '/'), as stored in the
/// tar; `mode` is the Unix permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path inside the archive, e.g. `etc/config/network`.
    pub path: String,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
    /// The file's text.
    pub contents: String,
}

/// Renders a merged, substituted config for `backend`: one file per UCI package (in the order
/// netjsonconfig writes them), then the config's `files` (deduplicated by path, the last entry
/// winning). Validates first, so a config that renders is one OpenWISP would accept.
pub fn render(config: &Value, backend: Backend) -> Result<Vec<File>, Invalid> {
    crate::validate(config, backend)?;
    let Value::Object(config) = config else {
        return Err(Invalid::at("", "the configuration must be a JSON object"));
    };
    let dsa = backend.dsa();
    let mut packages = Packages::default();
    system::general(config, &mut packages);
    system::ntp(config, &mut packages);
    system::led(config, &mut packages);
    network::interfaces(config, dsa, &mut packages)?;
    network::routes(config, &mut packages)?;
    network::rules(config, &mut packages)?;
    wireless::radios(config, dsa, backend == Backend::OpenWisp, &mut packages);
    wireless::wifi_ifaces(config, dsa, &mut packages);
    let (openvpn, openvpn_files) = crate::vpn::openvpn::uci_sections(config);
    packages.add("openvpn", openvpn);
    network::wireguard_peers(config, &mut packages);
    let extra_known: &[&str] = match backend {
        Backend::OpenWrt => &[],
        Backend::OpenWisp => &["tc_options"],
    };
    package::custom(config, extra_known, &mut packages);

    let mut files = Vec::new();
    let count = packages.0.len();
    for (index, (name, sections)) in packages.0.iter().enumerate() {
        let syntax = match backend {
            Backend::OpenWrt => Syntax::Plain,
            Backend::OpenWisp => Syntax::Quoted,
        };
        let mut text = package_text(sections, syntax);
        // netjsonconfig ends its whole rendering with a single newline: the last package's file
        // has one newline less than the others.
        if index + 1 == count && text.ends_with("\n\n") {
            text.pop();
        }
        let file = match backend {
            Backend::OpenWrt => File {
                path: format!("etc/config/{name}"),
                mode: 0o644,
                contents: text,
            },
            Backend::OpenWisp => File {
                path: format!("uci/{name}.conf"),
                mode: 0o644,
                contents: format!("package {name}\n\n{text}"),
            },
        };
        files.push(file);
    }
    let all_files = crate::vpn::openvpn::with_files(config.get("files"), openvpn_files);
    files.extend(extra_files(Some(&all_files)));
    Ok(files)
}

/// The config's `files`, deduplicated by path (the last entry wins, at the first one's place).
pub(crate) fn extra_files(files: Option<&Value>) -> Vec<File> {
    let Some(Value::Array(list)) = files else {
        return Vec::new();
    };
    let mut order: Vec<String> = Vec::new();
    let mut by_path: BTreeMap<String, File> = BTreeMap::new();
    for item in list {
        let Value::Object(item) = item else { continue };
        let path = item.get("path").and_then(Value::as_str).unwrap_or_default();
        let mode = item
            .get("mode")
            .and_then(Value::as_str)
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o644);
        let contents = item
            .get("contents")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !by_path.contains_key(path) {
            order.push(path.to_string());
        }
        by_path.insert(
            path.to_string(),
            File {
                path: path.strip_prefix('/').unwrap_or(path).to_string(),
                mode,
                contents: contents.to_string(),
            },
        );
    }
    order
        .into_iter()
        .filter_map(|p| by_path.remove(&p))
        .collect()
}
