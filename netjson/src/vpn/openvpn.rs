//! OpenVPN: a VPN server's `openvpn` instances → one `<name>.conf` each (netjsonconfig's `OpenVpn`
//! backend), the same instances as the OpenWrt `openvpn` UCI package (its OpenWrt `OpenVpn`
//! converter), and the client `auto_client` derives from a server.
//!
//! Both renderers start from the same intermediate step as netjsonconfig's shared converter:
//! falsy options dropped (only `""` for UCI, where `0`/`false` are meaningful), `remote` entries
//! flattened to `host port [proto]`, `data_ciphers` joined with `:`, and a `tls_auth` that holds
//! the key itself moved to a file next to the CA.

use serde_json::{Map, Value, json};

use crate::network::uci_name;
use crate::schema::{Check, Kind, array, hostname, kind, object, optional, required};
use crate::uci::{Section, python_str};
use crate::{File, Invalid, pointer_join};

type Obj = Map<String, Value>;

/// RFC 7919's `ffdhe2048` group as a PEM `DH PARAMETERS` block: the default `dh` of an OpenVPN
/// server. Generating fresh parameters (`openssl dhparam 2048`) takes seconds to minutes per
/// server; a published safe-prime group is as strong for the TLS handshake (RFC 7919 §1 argues
/// why named groups are preferable), OpenVPN accepts it as a `dh` file, and it is what
/// `openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048` prints.
pub const FFDHE2048_PEM: &str = "-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
";

/// File mode of certificates and keys netjsonconfig adds (`X509_FILE_MODE`).
const X509_FILE_MODE: &str = "0600";
/// The port a client connects to when the server names none (netjsonconfig's `auto_client`).
const DEFAULT_CLIENT_PORT: u16 = 1195;

const DEV_TYPES: &[&str] = &["tun", "tap"];
const COMP_LZO: &[&str] = &["", "yes", "no", "adaptive"];
const COMPRESS: &[&str] = &["", "lzo", "lz4", "lz4-v2", "stub", "stub-v2", "migrate"];
const ALLOW_COMPRESSION: &[&str] = &["", "asym", "no", "yes"];
const MTU_DISC: &[&str] = &["no", "maybe", "yes"];
const TOPOLOGY: &[&str] = &["net30", "p2p", "subnet"];
const REMOTE_PROTO: &[&str] = &["auto", "udp", "udp4", "udp6", "tcp", "tcp4", "tcp6"];
const BOOLEANS: &[&str] = &[
    "mtu_test",
    "persist_tun",
    "persist_key",
    "tun_ipv6",
    "mute_replay_warnings",
    "float",
    "auth_nocache",
    "fast_io",
    "remote_random",
    "nobind",
    "tls_client",
    "pull",
    "tls_server",
    "duplicate_cn",
    "client_to_client",
    "client_cert_not_required",
    "username_as_common_name",
    "disabled",
];
const STRINGS: &[&str] = &[
    "local",
    "ca",
    "cert",
    "key",
    "pkcs12",
    "tls_auth",
    "ns_cert_type",
    "keepalive",
    "up",
    "down",
    "user",
    "group",
    "status",
    "secret",
    "tls_cipher",
    "remote_cert_tls",
    "log",
    "auth",
    "cipher",
    "engine",
    "dh",
    "crl_verify",
    "auth_user_pass",
    "auth_user_pass_verify",
    "resolv_retry",
];

/// Checks the `openvpn` list the way netjsonconfig's OpenVpn schema does (the parts a user can get
/// wrong: required fields, types, the enums that decide the output, client vs server shape).
pub(crate) fn validate_list(config: &Obj) -> Check {
    let Some(list) = config.get("openvpn") else {
        return Ok(());
    };
    for (i, vpn) in array(list, "/openvpn")?.iter().enumerate() {
        validate_instance(vpn, &format!("/openvpn/{i}"))?;
    }
    Ok(())
}

fn validate_instance(vpn: &Value, at: &str) -> Check {
    let vpn = object(vpn, at)?;
    let name = required(vpn, "name", at, Kind::String)?;
    let name = name.as_str().unwrap_or_default();
    if !(2..=24).contains(&name.chars().count())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Invalid::at(
            pointer_join(at, "name"),
            "must be 2 to 24 letters, digits, '_' or '-'",
        ));
    }
    let mode = required(vpn, "mode", at, Kind::String)?;
    let proto = required(vpn, "proto", at, Kind::String)?;
    let dev = required(vpn, "dev", at, Kind::String)?;
    let dev = dev.as_str().unwrap_or_default();
    if !(2..=15).contains(&dev.chars().count()) || dev.chars().any(char::is_whitespace) {
        return Err(Invalid::at(
            pointer_join(at, "dev"),
            "must be 2 to 15 characters without spaces",
        ));
    }
    for field in BOOLEANS {
        optional(vpn, field, at, Kind::Boolean)?;
    }
    for field in STRINGS {
        optional(vpn, field, at, Kind::String)?;
    }
    for (field, min, max) in [
        ("fragment", 0, i64::MAX),
        ("mssfix", 0, i64::MAX),
        ("up_delay", 0, i64::MAX),
        ("mute", 0, i64::MAX),
        ("reneg_sec", i64::MIN, i64::MAX),
        ("tls_timeout", i64::MIN, i64::MAX),
        ("script_security", 0, 3),
        ("status_version", 1, 3),
        ("verb", 0, 11),
    ] {
        integer_in(vpn, field, at, min, max)?;
    }
    for (field, choices) in [
        ("dev_type", DEV_TYPES),
        ("comp_lzo", COMP_LZO),
        ("compress", COMPRESS),
        ("allow_compression", ALLOW_COMPRESSION),
        ("mtu_disc", MTU_DISC),
    ] {
        one_of(vpn, field, at, choices)?;
    }
    if let Some(ciphers) = vpn.get("data_ciphers") {
        let at = pointer_join(at, "data_ciphers");
        for (i, cipher) in array(ciphers, &at)?.iter().enumerate() {
            let at = pointer_join(&at, i);
            let cipher = object(cipher, &at)?;
            required(cipher, "cipher", &at, Kind::String)?;
            required(cipher, "optional", &at, Kind::Boolean)?;
        }
    }
    let proto = proto.as_str().unwrap_or_default();
    match mode.as_str() {
        Some("p2p") => {
            choice(proto, &pointer_join(at, "proto"), &["udp", "tcp-client"])?;
            // The client schema allows `port: ""` (its default).
            if vpn.get("port").is_some_and(|p| p.as_str() != Some("")) {
                integer_in(vpn, "port", at, 1, 65535)?;
            }
            let remotes = required(vpn, "remote", at, Kind::Array)?;
            let at = pointer_join(at, "remote");
            for (i, remote) in remotes.as_array().into_iter().flatten().enumerate() {
                let at = pointer_join(&at, i);
                let remote = object(remote, &at)?;
                let host = required(remote, "host", &at, Kind::String)?;
                if host.as_str().is_some_and(|h| h.len() > 63) {
                    return Err(Invalid::at(pointer_join(&at, "host"), "is too long"));
                }
                hostname(host, &pointer_join(&at, "host"))?;
                required(remote, "port", &at, Kind::Integer)?;
                integer_in(remote, "port", &at, 1, 65535)?;
                one_of(remote, "proto", &at, REMOTE_PROTO)?;
            }
            Ok(())
        }
        Some("server") => {
            choice(proto, &pointer_join(at, "proto"), &["udp", "tcp-server"])?;
            integer_in(vpn, "port", at, 1, 65535)?;
            one_of(vpn, "topology", at, TOPOLOGY)?;
            optional(vpn, "server_bridge", at, Kind::String)?;
            optional(vpn, "server", at, Kind::String)?;
            if vpn.contains_key("server") && vpn.contains_key("server_bridge") {
                return Err(Invalid::at(
                    pointer_join(at, "server"),
                    "a server is either routed ('server') or bridged ('server_bridge'), not both",
                ));
            }
            if let Some(server) = vpn.get("server").and_then(Value::as_str)
                && server.chars().count() < 15
            {
                return Err(Invalid::at(
                    pointer_join(at, "server"),
                    format!(
                        "'{server}' is too short (network and netmask, e.g. '10.8.0.0 255.255.255.0')"
                    ),
                ));
            }
            Ok(())
        }
        other => Err(Invalid::at(
            pointer_join(at, "mode"),
            format!(
                "'{}' is not one of ['p2p', 'server']",
                other.unwrap_or_default()
            ),
        )),
    }
}

fn integer_in(map: &Obj, field: &str, at: &str, min: i64, max: i64) -> Check {
    let Some(value) = map.get(field) else {
        return Ok(());
    };
    let at = pointer_join(at, field);
    kind(value, &at, Kind::Integer)?;
    match value.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(Invalid::at(
            at,
            format!("{value} is not between {min} and {max}"),
        )),
    }
}

fn one_of(map: &Obj, field: &str, at: &str, choices: &[&str]) -> Check {
    match map.get(field) {
        Some(value) => {
            let at = pointer_join(at, field);
            choice(kind(value, &at, Kind::String)?, &at, choices)
        }
        None => Ok(()),
    }
}

fn choice(value: &str, at: &str, choices: &[&str]) -> Check {
    if choices.contains(&value) {
        Ok(())
    } else {
        Err(Invalid::at(
            at,
            format!("'{value}' is not one of {choices:?}"),
        ))
    }
}

/// Python's truthiness of a JSON value (what `if value:` decides in netjsonconfig).
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

/// Which values the intermediate step drops.
#[derive(Clone, Copy)]
enum Drop {
    /// `[False, 0, ""]`: the `.conf` file (a `false` flag is simply absent).
    Falsy,
    /// `[""]`: UCI, where `'0'` is meaningful.
    EmptyString,
}

impl Drop {
    fn drops(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::String(s)) => s.is_empty(),
            (Drop::Falsy, Value::Bool(b)) => !b,
            (Drop::Falsy, Value::Number(n)) => n.as_f64() == Some(0.0),
            _ => false,
        }
    }
}

/// netjsonconfig's `OpenVpn.__intermediate_vpn`: the instance's options, sorted, plus the file a
/// `tls_auth` key moves to.
fn intermediate(mut vpn: Obj, drop: Drop) -> (Obj, Option<Value>) {
    if vpn.get("server_bridge").and_then(Value::as_str) == Some("") {
        vpn.insert("server_bridge".into(), Value::Bool(true));
    }
    vpn.retain(|key, value| key == "script_security" || key == "remote" || !drop.drops(value));
    if let Some(Value::Array(remotes)) = vpn.get("remote") {
        let flat = remotes
            .iter()
            .map(|r| {
                let host = r.get("host").map(python_str).unwrap_or_default();
                let port = r.get("port").map(python_str).unwrap_or_default();
                match r.get("proto") {
                    Some(proto) if proto.as_str() != Some("auto") => {
                        Value::String(format!("{host} {port} {}", python_str(proto)))
                    }
                    _ => Value::String(format!("{host} {port}")),
                }
            })
            .collect();
        vpn.insert("remote".into(), Value::Array(flat));
    }
    if !vpn.contains_key("status") {
        vpn.remove("status_version");
    }
    if let Some(Value::Array(ciphers)) = vpn.get("data_ciphers")
        && !ciphers.is_empty()
    {
        let joined = ciphers
            .iter()
            .map(|c| {
                let name = c.get("cipher").map(python_str).unwrap_or_default();
                if truthy(c.get("optional")) {
                    format!("?{name}")
                } else {
                    name
                }
            })
            .collect::<Vec<_>>()
            .join(":");
        vpn.insert("data_ciphers".into(), Value::String(joined));
    }
    let file = tls_auth_file(&mut vpn);
    (vpn, file)
}

/// A `tls_auth` holding the key itself (not `"<path> <direction>"`) becomes a file beside the CA
/// and the option points at it, as netjsonconfig does.
fn tls_auth_file(vpn: &mut Obj) -> Option<Value> {
    let tls_auth = vpn.get("tls_auth").filter(|v| truthy(Some(v)))?;
    let key = python_str(tls_auth).trim().to_string();
    if key.split(' ').count() == 2 {
        return None;
    }
    let ca = vpn.get("ca").map(python_str).unwrap_or_default();
    let dev = vpn.get("dev").map(python_str).unwrap_or_default();
    let mut parts: Vec<&str> = ca.split('/').collect();
    parts.pop();
    let file_name = format!("{dev}_tls_auth.key");
    parts.push(&file_name);
    let path = parts.join("/");
    let direction = if vpn.get("mode").and_then(Value::as_str) == Some("server") {
        0
    } else {
        1
    };
    vpn.insert(
        "tls_auth".into(),
        Value::String(format!("{path} {direction}")),
    );
    Some(json!({"path": path, "mode": X509_FILE_MODE, "contents": key}))
}

/// The config's `files` followed by the ones rendering added, as one `files` value.
pub(crate) fn with_files(files: Option<&Value>, added: Vec<Value>) -> Value {
    let mut all = match files {
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    };
    all.extend(added);
    Value::Array(all)
}

/// Renders an OpenVPN server's NetJSON (`{"openvpn": [...], "files": [...]}`) to the files of its
/// archive: `<name>.conf` per instance as netjsonconfig's OpenVpn backend writes it, then the
/// config's `files` (and a `tls_auth` key file if the key is inline).
pub(crate) fn render(config: &Obj) -> Result<Vec<File>, Invalid> {
    let list = match config.get("openvpn") {
        Some(list) => array(list, "/openvpn")?,
        None => return Err(Invalid::at("/openvpn", "'openvpn' is a required property")),
    };
    let mut files = Vec::new();
    let mut added = Vec::new();
    for vpn in list {
        let Value::Object(vpn) = vpn else { continue };
        let (vpn, file) = intermediate(vpn.clone(), Drop::Falsy);
        added.extend(file);
        let name = vpn.get("name").map(python_str).unwrap_or_default();
        files.push(File {
            path: format!("{name}.conf"),
            mode: 0o644,
            contents: conf_text(&vpn),
        });
    }
    files.extend(crate::render::extra_files(Some(&with_files(
        config.get("files"),
        added,
    ))));
    Ok(files)
}

/// One instance's `.conf`: `key value` lines in key order (`_` → `-`), a bare `key` for `true`,
/// one line per element for lists.
fn conf_text(vpn: &Obj) -> String {
    let mut out = String::new();
    for (key, value) in vpn {
        if key == "name" {
            continue;
        }
        let key = key.replace('_', "-");
        match value {
            Value::Bool(true) => out.push_str(&format!("{key}\n")),
            Value::String(_) | Value::Number(_) => {
                out.push_str(&format!("{key} {}\n", python_str(value)));
            }
            Value::Array(items) => {
                for item in items {
                    out.push_str(&format!("{key} {}\n", python_str(item)));
                }
            }
            Value::Object(map) => {
                for item in map.keys() {
                    out.push_str(&format!("{key} {item}\n"));
                }
            }
            Value::Bool(false) | Value::Null => {}
        }
    }
    // netjsonconfig's clean-up also deletes runs of four spaces inside values; fleetmq keeps
    // values as written, as it does for UCI (docs/config.md, "Rendering").
    out
}

/// `openvpn` → `config openvpn '<name>'` sections of the OpenWrt `openvpn` package (netjsonconfig's
/// OpenWrt OpenVpn converter), plus the files a `tls_auth` key moves to.
pub(crate) fn uci_sections(config: &Obj) -> (Vec<Section>, Vec<Value>) {
    let Some(Value::Array(list)) = config.get("openvpn") else {
        return (Vec::new(), Vec::new());
    };
    let mut sections = Vec::new();
    let mut files = Vec::new();
    for vpn in list {
        let Value::Object(vpn) = vpn else { continue };
        let mut vpn = vpn.clone();
        if vpn.get("fragment").and_then(Value::as_f64) == Some(0.0) {
            vpn.remove("fragment");
        }
        let name = uci_name(
            &vpn.remove("name")
                .map(|n| python_str(&n))
                .unwrap_or_default(),
        );
        let disabled = vpn.remove("disabled");
        vpn.insert("enabled".into(), Value::Bool(!truthy(disabled.as_ref())));
        if let Some(Value::String(ciphers)) = vpn.get("tls_cipher")
            && !ciphers.is_empty()
        {
            let parts = ciphers
                .split(':')
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect();
            vpn.insert("tls_cipher".into(), Value::Array(parts));
        }
        let (vpn, file) = intermediate(vpn, Drop::EmptyString);
        files.extend(file);
        sections.push(Section::sorted("openvpn", name, vpn));
    }
    (sections, files)
}

/// A certificate or key file an OpenVPN client gets: where it goes on the device and its PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Path on the device, e.g. `/etc/x509/ca-1-fleet.pem` or `{{ ca_path_<pk> }}`.
    pub path: String,
    /// PEM text, or the `{{ ca_contents_<pk> }}` variable that will hold it.
    pub contents: String,
}

/// What an OpenVPN client template is derived from (the arguments of netjsonconfig's
/// `OpenVpn.auto_client`). OpenWISP passes `{{ ca_path_<vpn pk hex> }}`-style variables for the
/// files so one template serves every device; literal values work the same.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenVpnClient {
    /// The server's public host name or address (the VPN's `host`).
    pub host: String,
    /// The server's first `openvpn` instance (its NetJSON object).
    pub server: Value,
    /// CA file (`ca_path_<pk>` / `ca_contents_<pk>`).
    pub ca: Option<PemFile>,
    /// The device's certificate (`cert_path_<pk>` / `cert_contents_<pk>`); `None` without
    /// auto-cert.
    pub cert: Option<PemFile>,
    /// The device's private key (`key_path_<pk>` / `key_contents_<pk>`).
    pub key: Option<PemFile>,
}

/// Copied from the server to the client unchanged (netjsonconfig's `copy_keys`).
const COPY_KEYS: &[&str] = &[
    "name",
    "dev_type",
    "dev",
    "comp_lzo",
    "compress",
    "allow_compression",
    "auth",
    "cipher",
    "ca",
    "cert",
    "key",
    "pkcs12",
    "mtu_test",
    "fragment",
    "mssfix",
    "keepalive",
    "persist_tun",
    "mute",
    "persist_key",
    "user",
    "group",
    "mute_replay_warnings",
    "secret",
    "reneg_sec",
    "tls_timeout",
    "tls_cipher",
    "float",
    "fast_io",
    "verb",
    "auth_nocache",
];

/// The client NetJSON (`{"openvpn": [client], "files": [ca, cert, key]}`) that connects to
/// `input.server`, as netjsonconfig's `OpenVpn.auto_client` builds it; a VPN-client template holds
/// it and the OpenWrt backend renders it to `/etc/config/openvpn`.
pub fn auto_client(input: &OpenVpnClient) -> Value {
    let empty = Obj::new();
    let server = input.server.as_object().unwrap_or(&empty);
    let mut client = Obj::new();
    client.insert("mode".into(), json!("p2p"));
    client.insert("nobind".into(), json!(true));
    client.insert("resolv_retry".into(), json!("infinite"));
    client.insert("tls_client".into(), json!(true));
    let port = match server.get("port") {
        Some(port) if truthy(Some(port)) => port.clone(),
        _ => json!(DEFAULT_CLIENT_PORT),
    };
    client.insert("remote".into(), json!([{"host": input.host, "port": port}]));
    let proto = if server.get("proto").and_then(Value::as_str) == Some("tcp-server") {
        "tcp-client"
    } else {
        "udp"
    };
    client.insert("proto".into(), json!(proto));
    if server.contains_key("server") || server.contains_key("server_bridge") {
        client.insert("pull".into(), json!(true));
    }
    if !truthy(server.get("tls_server")) {
        client.insert("tls_client".into(), json!(false));
    }
    for key in ["ns_cert_type", "remote_cert_tls"] {
        let value = match server.get(key).and_then(Value::as_str) {
            Some("client") => "server",
            _ => "",
        };
        client.insert(key.into(), json!(value));
    }
    if let Some(tls_auth) = server.get("tls_auth").filter(|v| truthy(Some(v)))
        && python_str(tls_auth).trim().split(' ').count() != 2
    {
        client.insert("tls_auth".into(), tls_auth.clone());
    }
    for key in COPY_KEYS {
        if let Some(value) = server.get(*key) {
            client.insert((*key).into(), value.clone());
        }
    }
    if server.contains_key("script_security") {
        // OpenWrt ≥ 21 needs script-security 2 for the tunnel's scripts.
        client.insert("script_security".into(), json!(2));
    }
    if let Some(log) = server.get("log") {
        // OpenWrt has no /var/log/openvpn directory.
        let log = python_str(log).replace("/var/log/openvpn/", "/var/log/");
        client.insert("log".into(), json!(log));
    }
    let mut files = Vec::new();
    for (option, file) in [
        ("ca", &input.ca),
        ("cert", &input.cert),
        ("key", &input.key),
    ] {
        if let Some(file) = file
            && !file.path.is_empty()
            && !file.contents.is_empty()
        {
            client.insert(option.into(), json!(file.path));
            files.push(
                json!({"path": file.path, "contents": file.contents, "mode": X509_FILE_MODE}),
            );
        }
    }
    json!({"openvpn": [client], "files": files})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Value {
        json!({"name": "srv", "mode": "server", "proto": "udp", "dev": "tun0", "ca": "/etc/x509/ca.pem",
               "tls_server": true, "server": "10.8.0.0 255.255.255.0"})
    }

    #[test]
    fn an_inline_tls_auth_key_moves_to_a_file_beside_the_ca() {
        let mut vpn = server();
        vpn["tls_auth"] = json!("-----BEGIN OpenVPN Static key V1-----\nabc\n");
        let config = json!({"openvpn": [vpn]});
        let files = render(config.as_object().expect("object")).expect("renders");
        assert!(
            files[0]
                .contents
                .contains("tls-auth /etc/x509/tun0_tls_auth.key 0\n")
        );
        assert_eq!(files[1].path, "etc/x509/tun0_tls_auth.key");
        assert_eq!(files[1].mode, 0o600);
        assert!(files[1].contents.ends_with("abc"));
    }

    #[test]
    fn a_server_that_is_both_routed_and_bridged_is_refused() {
        let mut vpn = server();
        vpn["server_bridge"] = json!("");
        let config = json!({"openvpn": [vpn]});
        let err = validate_list(config.as_object().expect("object")).unwrap_err();
        assert_eq!(err.pointer, "/openvpn/0/server");
    }

    #[test]
    fn a_client_without_remote_is_refused_at_remote() {
        let config =
            json!({"openvpn": [{"name": "c1", "mode": "p2p", "proto": "udp", "dev": "tun0"}]});
        let err = validate_list(config.as_object().expect("object")).unwrap_err();
        assert_eq!(err.pointer, "/openvpn/0/remote");
    }

    #[test]
    fn an_unknown_mode_is_refused_at_mode() {
        let config =
            json!({"openvpn": [{"name": "c1", "mode": "hub", "proto": "udp", "dev": "tun0"}]});
        let err = validate_list(config.as_object().expect("object")).unwrap_err();
        assert_eq!(err.pointer, "/openvpn/0/mode");
    }

    #[test]
    fn the_default_dh_is_the_rfc_7919_ffdhe2048_group() {
        use base64::Engine;
        let body: String = FFDHE2048_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64");
        // SEQUENCE { INTEGER p (257 bytes: 0x00 then 256 bytes), INTEGER 2 }
        assert_eq!(&der[..8], &[0x30, 0x82, 0x01, 0x08, 0x02, 0x82, 0x01, 0x01]);
        let p = &der[9..9 + 256];
        // RFC 7919 A.1: p = 2^2048 - 2^1984 + {[2^1918 * e] + 2^1918 + 560316} * 2^64 - 1
        assert_eq!(&p[..8], &[0xff; 8]);
        assert_eq!(&p[248..], &[0xff; 8]);
        assert_eq!(&p[8..12], &[0xad, 0xf8, 0x54, 0x58]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x02]);
    }
}
