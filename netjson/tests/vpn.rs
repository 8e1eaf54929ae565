//! VPN rendering: golden files under `tests/golden/vpn/<case>/` (expected output written by
//! netjsonconfig 1.3.1 for the same input: `input.json`, the `backend` that renders it, and for
//! client cases `client.json`, the arguments `auto_client` got), and the real wireguard-tools:
//! `wg-quick strip` must accept every WireGuard file we render and `wg pubkey` must agree with our
//! public keys.
//!
//! Cases, and the netjsonconfig test each input comes from:
//! - `openvpn_server`: `tests/openvpn/test_backend.py::test_server_mode` and `test_server_routed`
//!   (with `data_ciphers` from `test_server_mode_with_data_ciphers`), plus a file.
//! - `openvpn_client`: `test_auto_client_complex`'s server, with real certificate paths, rendered
//!   by the OpenWrt backend (`tests/openwrt/test_openvpn.py` shape).
//! - `wireguard_server`: `tests/wireguard/test_backend.py::test_peers` (two peers) with the
//!   optional interface options of `test_confs`.
//! - `wireguard_client`, `vxlan_client`: `OpenWrt.wireguard_auto_client` /
//!   `vxlan_wireguard_auto_client` as openwisp-controller calls them (`tests/openwrt/
//!   test_wireguard.py::test_render_wireguard_peer`, `tests/openwrt/test_vxlan.py::test_render_vxlan`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetmq_netjson::vpn::{
    self, KeyPair, OpenVpnClient, PemFile, VpnBackend, VxlanClient, WireGuardClient,
};
use fleetmq_netjson::{Backend, File, render};
use serde_json::{Value, json};

const INSTALL_HINT: &str =
    "wireguard-tools is required by these tests: apt-get install wireguard-tools";

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vpn")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("read expected dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            collect(&path, &rel, out);
        } else {
            out.insert(
                rel,
                std::fs::read_to_string(&path).expect("read expected file"),
            );
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

fn wireguard_client(args: &Value) -> WireGuardClient {
    WireGuardClient {
        host: text(args, "host"),
        server: args["server"].clone(),
        public_key: text(args, "public_key"),
        private_key: text(args, "private_key"),
        ip_address: args["ip_address"].as_str().map(str::to_string),
        server_ip_network: text(args, "server_ip_network"),
    }
}

/// The client NetJSON our `auto_client` derives from the arguments netjsonconfig got.
fn auto_client(case: &str, args: &Value) -> Value {
    let pem = |kind: &str| {
        Some(PemFile {
            path: text(args, &format!("{kind}_path")),
            contents: text(args, &format!("{kind}_contents")),
        })
    };
    match case {
        "openvpn_client" => vpn::openvpn::auto_client(&OpenVpnClient {
            host: text(args, "host"),
            server: args["server"].clone(),
            ca: pem("ca"),
            cert: pem("cert"),
            key: pem("key"),
        }),
        "wireguard_client" => vpn::wireguard::auto_client(&wireguard_client(args)),
        "vxlan_client" => vpn::vxlan::auto_client(&VxlanClient {
            wireguard: wireguard_client(args),
            vni: args["vni"].to_string(),
            server_ip_address: text(args, "server_ip_address"),
            vxlan: Some(args["vxlan"].clone()),
        }),
        other => panic!("{other}: client.json but no client kind known"),
    }
}

fn render_case(backend: &str, config: &Value) -> Vec<File> {
    let result = match backend {
        "openvpn" => vpn::render_server(config, VpnBackend::OpenVpn),
        "wireguard" => vpn::render_server(config, VpnBackend::WireGuard),
        "vxlan" => vpn::render_server(config, VpnBackend::VxlanWireGuard),
        "openwrt" => render(config, Backend::OpenWrt),
        other => panic!("unknown backend {other}"),
    };
    result.unwrap_or_else(|e| panic!("refused: {e}"))
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<_> = std::fs::read_dir(golden_root())
        .expect("golden/vpn dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("input.json").is_file())
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            (name, p)
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn vpn_servers_and_clients_render_as_netjsonconfig_does() {
    let cases = cases();
    assert_eq!(cases.len(), 5, "the five VPN golden cases");
    for (name, dir) in cases {
        let config = read_json(&dir.join("input.json"));
        if dir.join("client.json").is_file() {
            let ours = auto_client(&name, &read_json(&dir.join("client.json")));
            assert_eq!(ours, config, "{name}: auto_client output");
        }
        let backend = std::fs::read_to_string(dir.join("backend")).expect("backend file");
        let rendered: BTreeMap<String, String> = render_case(backend.trim(), &config)
            .into_iter()
            .map(|f| (f.path, f.contents))
            .collect();
        let mut expected = BTreeMap::new();
        collect(&dir.join("expected"), "", &mut expected);
        assert_eq!(
            rendered.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{name}: file list"
        );
        for (path, contents) in &expected {
            assert_eq!(&rendered[path], contents, "{name}: {path}");
        }
    }
}

#[test]
fn a_vpn_server_downloads_as_a_deterministic_archive() {
    let config = read_json(&golden_root().join("wireguard_server/input.json"));
    let files = vpn::render_server(&config, VpnBackend::WireGuard).expect("renders");
    let archive = fleetmq_netjson::archive(&files);
    assert_eq!(archive, fleetmq_netjson::archive(&files));
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "gzip");
}

/// Runs `program args` with `stdin`, failing the test if it is missing or takes over 10 s.
fn run(program: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}. {INSTALL_HINT}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Keys `wg setconf` accepts after `wg-quick strip` (wireguard-tools `config.c`, case-insensitive).
const WG_KEYS: &[&str] = &[
    "privatekey",
    "listenport",
    "fwmark",
    "publickey",
    "presharedkey",
    "allowedips",
    "endpoint",
    "persistentkeepalive",
];

fn assert_wg_quick_accepts(file: &File) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "wg-strip-{}-{}",
        std::process::id(),
        file.path.trim_end_matches(".conf")
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(&file.path);
    std::fs::write(&path, &file.contents).expect("write conf");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let path_text = path.to_str().expect("utf-8 path");
    let output = run("wg-quick", &["strip", path_text], "");
    let stripped = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wg-quick strip refused {}: {}\n{}",
        file.path,
        String::from_utf8_lossy(&output.stderr),
        file.contents
    );
    for line in stripped.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "[Interface]" || line == "[Peer]" {
            continue;
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        assert!(
            WG_KEYS.contains(&key.as_str()),
            "{}: wg would refuse line {line:?}",
            file.path
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wg_quick_accepts_every_rendered_wireguard_config() {
    let server = read_json(&golden_root().join("wireguard_server/input.json"));
    let mut configs = vec![(server.clone(), VpnBackend::WireGuard)];
    // A generated key, keepalive (which netjsonconfig would write as `persistent_keepalive`),
    // IPv6, and the VXLAN flavour.
    let keys = KeyPair::generate().expect("key pair");
    let peer = KeyPair::generate().expect("key pair");
    configs.push((
        json!({"wireguard": [{"name": "wg-keep", "port": 51820, "private_key": keys.private_key,
            "address": "fd00::1/64", "table": "auto", "post_up": "true", "save_config": true,
            "peers": [{"public_key": peer.public_key, "allowed_ips": "fd00::2/128",
                       "endpoint_host": "vpn.example.com", "endpoint_port": 51820,
                       "persistent_keepalive": 25}]}]}),
        VpnBackend::WireGuard,
    ));
    configs.push((
        json!({"wireguard": server["wireguard"], "vxlan": [{"name": "vxlan1", "vni": 5}]}),
        VpnBackend::VxlanWireGuard,
    ));
    let mut checked = 0;
    for (config, backend) in configs {
        for file in vpn::render_server(&config, backend).expect("renders") {
            if file.path.ends_with(".conf") {
                assert_wg_quick_accepts(&file);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3);
}

#[test]
fn public_keys_match_wg_pubkey() {
    // A fixed key (netjsonconfig's test key) and a fresh one.
    let known = "QFdbnuYr7rrF4eONCAs7FhZwP7BXX/jD/jq2LXCpaXI=";
    let generated = KeyPair::generate().expect("key pair");
    for private in [known, generated.private_key.as_str()] {
        let output = run("wg", &["pubkey"], &format!("{private}\n"));
        assert!(output.status.success(), "wg pubkey failed");
        let theirs = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert_eq!(vpn::public_key(private), Ok(theirs));
    }
    assert_eq!(
        vpn::public_key(&generated.private_key).expect("public"),
        generated.public_key
    );
}
