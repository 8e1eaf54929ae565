//! VPN servers and their clients, as openwisp-controller keeps them.
//!
//! A VPN server has a backend (OpenVPN, WireGuard, or VXLAN over WireGuard), a host devices
//! reach, and what its backend needs: OpenVPN a CA, a server certificate (issued by that CA
//! when none is given) and Diffie-Hellman parameters (RFC 7919's ffdhe2048 by default);
//! WireGuard a key pair and a subnet with the server's own address in it.
//!
//! A device gets a VPN client when a VPN-client template of that server joins its
//! configuration (the store syncs clients in the transaction that renders the device):
//! OpenVPN clients a certificate the server's CA issues (OpenWISP's `auto_cert`), WireGuard
//! clients a key pair and the lowest free address of the subnet (never two devices the same).
//! The client goes — its certificate revoked, its address free again — when the template
//! leaves the configuration or the device is deleted. A client's values reach the device's
//! configuration as the variables OpenWISP names them ([`client_variables`]), and a
//! VPN-client template created without a configuration gets the one netjsonconfig's
//! `auto_client` derives, written with those variables.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use fleetmq_netjson::vpn::VpnBackend;
use fleetmq_netjson::vpn::{
    OpenVpnClient, PemFile, VxlanClient, WireGuardClient, openvpn, vxlan, wireguard,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::{CaId, CertId, DeviceId, OrgId, Timestamp, VpnId};

/// Stores a [`VpnBackend`] by OpenWISP's name.
mod backend_name {
    use super::*;

    pub(super) fn serialize<S: Serializer>(b: &VpnBackend, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VpnBackend, D::Error> {
        let name = String::deserialize(d)?;
        VpnBackend::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// What a client may set of a VPN server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnFields {
    /// Display name (≤ 64), unique per organization.
    pub name: String,
    /// Host name or address devices connect to.
    pub host: String,
    /// Owning organization; `None` = shared.
    pub organization: Option<OrgId>,
    /// Backend.
    #[serde(with = "backend_name")]
    pub backend: VpnBackend,
    /// The CA of an OpenVPN server (signs its certificate and its clients').
    pub ca: Option<CaId>,
    /// The server certificate of an OpenVPN server (issued by `ca` when not given).
    pub cert: Option<CertId>,
    /// The tunnel subnet (CIDR) of a WireGuard server; clients get addresses from it.
    pub subnet: Option<String>,
    /// The server's address in the subnet (the lowest free one when not given).
    pub ip: Option<IpAddr>,
    /// Diffie-Hellman parameters (PEM) of an OpenVPN server.
    pub dh: String,
    /// The server's NetJSON configuration for its backend (`{{ variables }}` allowed, see
    /// [`server_variables`]).
    pub config: Map<String, Value>,
    /// Free text.
    pub notes: String,
}

/// A stored VPN server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vpn {
    /// Identity.
    pub id: VpnId,
    /// What clients set (with the server certificate and address filled in).
    pub fields: VpnFields,
    /// A random key (OpenWISP's `key`).
    pub key: String,
    /// WireGuard private key (base64); sealed at rest.
    pub private_key: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub modified: Timestamp,
}

/// A device's client of a VPN server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnClient {
    /// The VPN server.
    pub vpn: VpnId,
    /// The device.
    pub device: DeviceId,
    /// Its certificate (OpenVPN).
    pub cert: Option<CertId>,
    /// Its tunnel address (WireGuard).
    pub ip: Option<IpAddr>,
    /// WireGuard private key (base64); sealed at rest.
    pub private_key: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// VXLAN network identifier (VXLAN over WireGuard).
    pub vni: Option<u32>,
}

/// Which VPN servers a list returns (the seed's filters).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VpnFilter {
    /// Only this backend.
    pub backend: Option<VpnBackend>,
    /// Only servers of this subnet (CIDR as stored).
    pub subnet: Option<String>,
    /// Only this organization's own servers (`Some(None)`: nothing matches).
    pub organization: Option<Option<OrgId>>,
}

/// The VPN's id as OpenWISP's variable names carry it: 32 hex digits.
pub fn variable_suffix(vpn: VpnId) -> String {
    vpn.0.simple().to_string()
}

/// Where an OpenVPN client keeps its CA, certificate and key on the device.
fn x509_paths(vpn: VpnId) -> (String, String, String) {
    let hex = variable_suffix(vpn);
    (
        format!("/etc/x509/ca-{hex}.pem"),
        format!("/etc/x509/client-{hex}.pem"),
        format!("/etc/x509/key-{hex}.pem"),
    )
}

/// What a client's device renders its VPN-client template with.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMaterial {
    /// The CA certificate (OpenVPN).
    pub ca_pem: String,
    /// The client's certificate (OpenVPN).
    pub cert_pem: String,
    /// The client's private key (OpenVPN).
    pub key_pem: String,
    /// The client's WireGuard private key (unsealed).
    pub private_key: String,
}

/// The variables a device's configuration gets for its client of `vpn`, named as OpenWISP
/// names them (`<pk>` = the VPN id in 32 hex digits).
pub fn client_variables(
    vpn: &Vpn,
    client: &VpnClient,
    material: &ClientMaterial,
) -> BTreeMap<String, String> {
    let hex = variable_suffix(vpn.id);
    let mut vars = BTreeMap::new();
    let (ca_path, cert_path, key_path) = x509_paths(vpn.id);
    match vpn.fields.backend {
        VpnBackend::OpenVpn => {
            vars.insert(format!("ca_path_{hex}"), ca_path);
            vars.insert(format!("ca_contents_{hex}"), material.ca_pem.clone());
            vars.insert(format!("cert_path_{hex}"), cert_path);
            vars.insert(format!("cert_contents_{hex}"), material.cert_pem.clone());
            vars.insert(format!("key_path_{hex}"), key_path);
            vars.insert(format!("key_contents_{hex}"), material.key_pem.clone());
        }
        VpnBackend::WireGuard | VpnBackend::VxlanWireGuard => {
            vars.insert(format!("public_key_{hex}"), vpn.public_key.clone());
            vars.insert(format!("pvt_key_{hex}"), material.private_key.clone());
            if let Some(ip) = client.ip {
                vars.insert(format!("ip_address_{hex}"), ip.to_string());
            }
            if let Some(ip) = vpn.fields.ip {
                vars.insert(format!("server_ip_address_{hex}"), ip.to_string());
                vars.insert(format!("server_ip_network_{hex}"), host_route(ip));
            }
            if let Some(vni) = client.vni {
                vars.insert(format!("vni_{hex}"), vni.to_string());
            }
        }
    }
    vars.insert(format!("vpnserver_host_{hex}"), vpn.fields.host.clone());
    vars
}

/// Values of the right shape for every per-device variable of a client of `vpn`: what a
/// VPN-client template is checked (and rendered alone) with, having no device.
pub fn sample_client_variables(vpn: VpnId) -> BTreeMap<String, String> {
    let hex = variable_suffix(vpn);
    let (ca_path, cert_path, key_path) = x509_paths(vpn);
    // A syntactically valid x25519 key (32 zero bytes, base64).
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
    [
        ("ca_path", ca_path),
        ("ca_contents", String::new()),
        ("cert_path", cert_path),
        ("cert_contents", String::new()),
        ("key_path", key_path),
        ("key_contents", String::new()),
        ("public_key", key.clone()),
        ("pvt_key", key),
        ("ip_address", "10.0.0.2".to_owned()),
        ("server_ip_address", "10.0.0.1".to_owned()),
        ("server_ip_network", "10.0.0.1/32".to_owned()),
        ("vni", "1".to_owned()),
        ("vpnserver_host", "vpn.example.com".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (format!("{name}_{hex}"), value))
    .collect()
}

/// `ip/32` or `ip/128`.
fn host_route(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// The first instance of the server's backend section (`openvpn`, `wireguard`), or `{}`.
fn first_instance(vpn: &Vpn, section: &str) -> Value {
    vpn.fields
        .config
        .get(section)
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// The configuration of a VPN-client template of `vpn` (netjsonconfig's `auto_client`), with
/// OpenWISP's per-device variables in place of the values, so one template serves every
/// device.
pub fn client_template_config(vpn: &Vpn) -> Map<String, Value> {
    let hex = variable_suffix(vpn.id);
    let var = |name: &str| format!("{{{{ {name}_{hex} }}}}");
    let wireguard = || WireGuardClient {
        host: vpn.fields.host.clone(),
        server: first_instance(vpn, "wireguard"),
        public_key: var("public_key"),
        private_key: var("pvt_key"),
        ip_address: Some(var("ip_address")),
        server_ip_network: var("server_ip_network"),
    };
    let value = match vpn.fields.backend {
        VpnBackend::OpenVpn => openvpn::auto_client(&OpenVpnClient {
            host: vpn.fields.host.clone(),
            server: first_instance(vpn, "openvpn"),
            ca: Some(PemFile {
                path: var("ca_path"),
                contents: var("ca_contents"),
            }),
            cert: Some(PemFile {
                path: var("cert_path"),
                contents: var("cert_contents"),
            }),
            key: Some(PemFile {
                path: var("key_path"),
                contents: var("key_contents"),
            }),
        }),
        VpnBackend::WireGuard => wireguard::auto_client(&wireguard()),
        VpnBackend::VxlanWireGuard => vxlan::auto_client(&VxlanClient {
            wireguard: wireguard(),
            vni: var("vni"),
            server_ip_address: var("server_ip_address"),
            vxlan: vpn
                .fields
                .config
                .get("vxlan")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .cloned(),
        }),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The variables a VPN server's own configuration is rendered with.
pub fn server_variables(
    vpn: &Vpn,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("name".into(), vpn.fields.name.clone());
    vars.insert("host".into(), vpn.fields.host.clone());
    vars.insert("ca".into(), ca_pem.to_owned());
    vars.insert("cert".into(), cert_pem.to_owned());
    vars.insert("key".into(), key_pem.to_owned());
    vars.insert("dh".into(), vpn.fields.dh.clone());
    vars.insert("private_key".into(), vpn.private_key.clone());
    vars.insert("public_key".into(), vpn.public_key.clone());
    if let Some(ip) = vpn.fields.ip {
        vars.insert("ip_address".into(), ip.to_string());
    }
    if let Some(subnet) = &vpn.fields.subnet {
        vars.insert("subnet".into(), subnet.clone());
        if let Some((_, prefix)) = subnet.split_once('/') {
            vars.insert("subnet_prefixlen".into(), prefix.to_owned());
        }
    }
    vars
}

/// The files an OpenVPN server's archive carries besides its `.conf`: the PEM files its
/// configuration names as `ca.pem`, `cert.pem`, `key.pem` and `dh.pem`.
pub fn server_pem_files(ca_pem: &str, cert_pem: &str, key_pem: &str, dh: &str) -> Vec<Value> {
    [
        ("ca.pem", ca_pem, "0644"),
        ("cert.pem", cert_pem, "0644"),
        ("key.pem", key_pem, "0600"),
        ("dh.pem", dh, "0644"),
    ]
    .into_iter()
    .filter(|(_, contents, _)| !contents.is_empty())
    .map(|(path, contents, mode)| json!({"path": path, "mode": mode, "contents": contents}))
    .collect()
}
