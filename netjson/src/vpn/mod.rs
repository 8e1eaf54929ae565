//! VPN servers and their clients, as OpenWISP models them: a VPN server's configuration renders to
//! its own archive (one file per tunnel, netjsonconfig's `OpenVpn` / `Wireguard` /
//! `VxlanWireguard` backends), and a VPN-client template carries the NetJSON `auto_client` derives
//! from the server, which the OpenWrt backend renders into the device's configuration.
//!
//! Everything here is pure except [`KeyPair::generate`], which reads the system's random source.
//!
//! # Layout
//! - `openvpn`: `.conf` files, the OpenWrt `openvpn` package, the client, the default DH group.
//! - `wireguard`: wg-quick files, server peers, the client.
//! - `vxlan`: VXLAN over WireGuard: the peer file and the client.
//! - `key`: WireGuard key pairs.
//! - `address`: tunnel addresses from a subnet.

mod address;
mod key;
pub mod openvpn;
pub mod vxlan;
pub mod wireguard;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

pub use address::allocate;
pub use key::{InvalidKey, KeyPair, public_key};
pub use openvpn::{FFDHE2048_PEM, OpenVpnClient, PemFile};
pub use vxlan::{VxlanClient, VxlanPeer};
pub use wireguard::WireGuardClient;

use crate::{File, Invalid};

/// Which netjsonconfig VPN backend a VPN server's configuration is rendered with (OpenWISP's
/// `Vpn.backend`). It decides the file format and what the clients get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VpnBackend {
    /// OpenVPN 2.x: `<name>.conf` per instance; clients get a certificate.
    OpenVpn,
    /// WireGuard (wg-quick files); clients get a key pair and an address from the subnet.
    WireGuard,
    /// VXLAN over WireGuard: the WireGuard server plus a `vxlan.json` peer list; clients get a
    /// VXLAN interface over their WireGuard tunnel.
    VxlanWireGuard,
}

/// A VPN backend name OpenWISP does not know; the API answers it as a field error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a valid choice.")]
pub struct UnknownVpnBackend(pub String);

impl VpnBackend {
    /// The name OpenWISP's API uses (openwisp-controller's `VPN_BACKENDS`).
    pub fn as_str(self) -> &'static str {
        match self {
            VpnBackend::OpenVpn => "openwisp_controller.vpn_backends.OpenVpn",
            VpnBackend::WireGuard => "openwisp_controller.vpn_backends.Wireguard",
            VpnBackend::VxlanWireGuard => "openwisp_controller.vpn_backends.VxlanWireguard",
        }
    }

    /// Parses the API's backend name, exactly as OpenWISP spells it.
    pub fn parse(name: &str) -> Result<Self, UnknownVpnBackend> {
        match name {
            "openwisp_controller.vpn_backends.OpenVpn" => Ok(VpnBackend::OpenVpn),
            "openwisp_controller.vpn_backends.Wireguard" => Ok(VpnBackend::WireGuard),
            "openwisp_controller.vpn_backends.VxlanWireguard" => Ok(VpnBackend::VxlanWireGuard),
            other => Err(UnknownVpnBackend(other.to_string())),
        }
    }
}

impl FromStr for VpnBackend {
    type Err = UnknownVpnBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VpnBackend::parse(s)
    }
}

impl fmt::Display for VpnBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a VPN server's (merged, substituted) configuration as the backend's schema would, so
/// the API can refuse it with the field to fix before storing it.
pub fn validate_server(config: &Value, backend: VpnBackend) -> Result<(), Invalid> {
    let Value::Object(config) = config else {
        return Err(Invalid::at("", "is not of type 'object'"));
    };
    if let Some(files) = config.get("files") {
        for (i, file) in crate::schema::array(files, "/files")?.iter().enumerate() {
            crate::schema::file(file, &format!("/files/{i}"))?;
        }
    }
    match backend {
        VpnBackend::OpenVpn => openvpn::validate_list(config),
        VpnBackend::WireGuard => wireguard::validate_list(config),
        VpnBackend::VxlanWireGuard => vxlan::validate_list(config),
    }
}

/// Renders a VPN server's configuration to the files of its archive (pass them to
/// [`crate::archive`] for the tar.gz a server downloads, like a device's): one `<name>.conf` per
/// tunnel, exactly as netjsonconfig writes it, then the config's `files` (deduplicated by path).
/// Validates first.
pub fn render_server(config: &Value, backend: VpnBackend) -> Result<Vec<File>, Invalid> {
    validate_server(config, backend)?;
    let Value::Object(config) = config else {
        return Err(Invalid::at("", "is not of type 'object'"));
    };
    match backend {
        VpnBackend::OpenVpn => openvpn::render(config),
        VpnBackend::WireGuard => wireguard::render(config),
        VpnBackend::VxlanWireGuard => vxlan::render(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip_as_openwisp_spells_them() {
        for backend in [
            VpnBackend::OpenVpn,
            VpnBackend::WireGuard,
            VpnBackend::VxlanWireGuard,
        ] {
            assert_eq!(VpnBackend::parse(backend.as_str()), Ok(backend));
        }
        assert!(VpnBackend::parse("openwisp_controller.vpn_backends.Tinc").is_err());
    }
}
