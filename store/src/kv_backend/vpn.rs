//! [`VpnStore`] on the kv tables: VPN servers, and the clients devices get from VPN-client templates.
//!
//! Clients are kept in step with configurations by [`sync_clients`], which
//! `configuration_changed` calls for every device it renders, in the same write transaction:
//! a VPN-client template that joined a configuration creates the device's client (a
//! certificate signed by the VPN's CA, or a WireGuard key pair and the lowest free address),
//! one that left removes it (certificate revoked, address freed). Addresses are unique per
//! VPN through `VPN_ADDRESSES`, so no two devices ever get the same one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::kv::{ReadableTable, WriteTransaction};
use fleetmq_netjson::vpn::{self as render, VpnBackend};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::KvBackend;
use super::configuration::configuration_changed;
use super::paging::{created_key, ids_paired_with, ids_under, org_prefix, visible_keys};
use super::record::{cat, decode, encode};
use crate::pki::{Ca, Draft, Origin, X509Fields};
use crate::tables::*;
use crate::vpn::{ClientMaterial, Vpn, VpnClient, VpnFields, VpnFilter};
use crate::{
    ConfigChange, Device, DeviceId, OrgId, Page, PageRequest, RenderedConfig, Result, Scope,
    StoreError, Template, TemplateId, Timestamp, Unique, VpnId, VpnStore,
};

const SERVER: u128 = 0;

fn vpn_aad(id: VpnId) -> Vec<u8> {
    format!("vpn:{id}").into_bytes()
}

fn client_aad(device: DeviceId, vpn: VpnId) -> Vec<u8> {
    format!("vpn-client:{device}:{vpn}").into_bytes()
}

fn client_key(device: DeviceId, vpn: VpnId) -> Vec<u8> {
    cat(&[&device.bytes(), &vpn.bytes()])
}

fn address_key(vpn: VpnId, ip: IpAddr) -> Vec<u8> {
    cat(&[&vpn.bytes(), ip.to_string().as_bytes()])
}

fn name_key(fields: &VpnFields) -> Vec<u8> {
    cat(&[
        &org_prefix(fields.organization),
        fields.name.to_lowercase().as_bytes(),
    ])
}

fn rule(field: &'static str, message: &'static str) -> StoreError {
    StoreError::Rule { field, message }
}

/// Whether `ip` is inside `subnet` (CIDR).
fn in_subnet(ip: IpAddr, subnet: &str) -> bool {
    let Some((net, prefix)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(prefix)) = (net.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if prefix <= 32 => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if prefix <= 128 => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Addresses of `vpn` already held (the server's and its clients').
fn taken(txn: &WriteTransaction, vpn: VpnId) -> Result<BTreeSet<IpAddr>> {
    let table = txn.open_table(VPN_ADDRESSES)?;
    let lo = vpn.bytes().to_vec();
    let hi = cat(&[&vpn.bytes(), &[0xff]]);
    let mut out = BTreeSet::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
        let (key, _) = entry?;
        if let Ok(ip) = String::from_utf8_lossy(&key.value()[16..]).parse() {
            out.insert(ip);
        }
    }
    Ok(out)
}

impl KvBackend {
    fn put_vpn(&self, txn: &WriteTransaction, vpn: &Vpn) -> Result<()> {
        let stored = Vpn {
            private_key: self.vault.seal(&vpn.private_key, &vpn_aad(vpn.id)),
            ..vpn.clone()
        };
        txn.open_table(VPNS)?
            .insert(vpn.id.key(), encode("vpns", &stored)?.as_slice())?;
        Ok(())
    }

    pub(super) fn read_vpn(
        &self,
        table: &impl ReadableTable<u128, &'static [u8]>,
        id: VpnId,
    ) -> Result<Option<Vpn>> {
        let Some(bytes) = table.get(id.key())? else {
            return Ok(None);
        };
        let vpn: Vpn = decode("vpns", bytes.value())?;
        let private_key = self
            .vault
            .open(&vpn.private_key, &vpn_aad(id))
            .map_err(|e| StoreError::Sealed {
                table: "vpns",
                reason: e.to_string(),
            })?;
        Ok(Some(Vpn { private_key, ..vpn }))
    }

    fn load_vpn(&self, txn: &WriteTransaction, id: VpnId) -> Result<Vpn> {
        self.read_vpn(&txn.open_table(VPNS)?, id)?
            .ok_or(StoreError::NotFound)
    }

    fn put_client(&self, txn: &WriteTransaction, client: &VpnClient) -> Result<()> {
        let stored = VpnClient {
            private_key: self
                .vault
                .seal(&client.private_key, &client_aad(client.device, client.vpn)),
            ..client.clone()
        };
        txn.open_table(VPN_CLIENTS)?.insert(
            client_key(client.device, client.vpn).as_slice(),
            encode("vpn_clients", &stored)?.as_slice(),
        )?;
        txn.open_table(VPN_PEERS)?.insert(
            cat(&[&client.vpn.bytes(), &client.device.bytes()]).as_slice(),
            (),
        )?;
        Ok(())
    }

    fn open_client(&self, bytes: &[u8]) -> Result<VpnClient> {
        let client: VpnClient = decode("vpn_clients", bytes)?;
        let private_key = self
            .vault
            .open(&client.private_key, &client_aad(client.device, client.vpn))
            .map_err(|e| StoreError::Sealed {
                table: "vpn_clients",
                reason: e.to_string(),
            })?;
        Ok(VpnClient {
            private_key,
            ..client
        })
    }

    /// The clients a device has, by VPN.
    fn device_clients(
        &self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        device: DeviceId,
    ) -> Result<BTreeMap<VpnId, VpnClient>> {
        let lo = cat(&[&device.bytes(), &[0u8; 16]]);
        let hi = cat(&[&device.bytes(), &[0xffu8; 16]]);
        let mut out = BTreeMap::new();
        for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
            let (_, bytes) = entry?;
            let client = self.open_client(bytes.value())?;
            out.insert(client.vpn, client);
        }
        Ok(out)
    }

    /// Removes a device's client of a VPN: its certificate is deleted (and so revoked), its
    /// address freed.
    fn remove_client(&self, txn: &WriteTransaction, client: &VpnClient) -> Result<()> {
        txn.open_table(VPN_CLIENTS)?
            .remove(client_key(client.device, client.vpn).as_slice())?;
        txn.open_table(VPN_PEERS)?
            .remove(cat(&[&client.vpn.bytes(), &client.device.bytes()]).as_slice())?;
        if let Some(ip) = client.ip {
            txn.open_table(VPN_ADDRESSES)?
                .remove(address_key(client.vpn, ip).as_slice())?;
        }
        if let Some(cert) = client.cert
            && let Ok(cert) = self.load_cert(txn, cert)
        {
            let ca = self.load_ca(txn, cert.ca).ok();
            self.delete_cert_in(txn, &cert, ca.as_ref())?;
        }
        Ok(())
    }

    /// Creates `device`'s client of `vpn`.
    fn add_client(&self, txn: &WriteTransaction, device: &Device, vpn: &Vpn) -> Result<VpnClient> {
        let mut client = VpnClient {
            vpn: vpn.id,
            device: device.id,
            cert: None,
            ip: None,
            private_key: String::new(),
            public_key: String::new(),
            vni: None,
        };
        match vpn.fields.backend {
            VpnBackend::OpenVpn => {
                let ca = vpn.fields.ca.ok_or_else(|| rule("vpn", CA_REQUIRED))?;
                // OpenWISP's default common name format for VPN clients.
                let fields = X509Fields::issued(
                    format!("{} ({})", device.fields.name.as_str(), vpn.fields.name),
                    Some(device.fields.organization),
                    format!(
                        "{}-{}",
                        device.fields.mac_address.as_str(),
                        device.fields.name.as_str()
                    ),
                    false,
                    vec![json!({"name": "nsCertType", "critical": false, "value": "client"})],
                );
                let cert = self.create_cert_in(
                    txn,
                    ca,
                    Draft {
                        fields,
                        origin: Origin::Generate {
                            passphrase: String::new(),
                            serial: None,
                        },
                    },
                    Some(device.id),
                )?;
                client.cert = Some(cert.id);
            }
            VpnBackend::WireGuard | VpnBackend::VxlanWireGuard => {
                let pair = render::KeyPair::generate()
                    .map_err(|_| rule("vpn", "A WireGuard key pair could not be generated."))?;
                client.private_key = pair.private_key.clone();
                client.public_key = pair.public_key.clone();
                let subnet = vpn.fields.subnet.as_deref().unwrap_or_default();
                let ip = render::allocate(subnet, &taken(txn, vpn.id)?)
                    .ok_or_else(|| rule("config", SUBNET_FULL))?;
                txn.open_table(VPN_ADDRESSES)?
                    .insert(address_key(vpn.id, ip).as_slice(), device.id.key())?;
                client.ip = Some(ip);
                if vpn.fields.backend == VpnBackend::VxlanWireGuard {
                    // OpenWISP numbers VXLAN networks per client; the address's low bits are
                    // unique in the subnet, so they make a unique VNI too.
                    let vni = match ip {
                        IpAddr::V4(v4) => u32::from(v4) & 0x00ff_ffff,
                        IpAddr::V6(v6) => (u128::from(v6) & 0x00ff_ffff) as u32,
                    };
                    client.vni = Some(vni.max(1));
                }
            }
        }
        self.put_client(txn, &client)?;
        Ok(client)
    }

    /// The CA and certificate PEMs (and the certificate's key) a client renders with.
    fn client_material(
        &self,
        cas: &impl ReadableTable<u128, &'static [u8]>,
        certs: &impl ReadableTable<u128, &'static [u8]>,
        vpn: &Vpn,
        client: &VpnClient,
    ) -> Result<ClientMaterial> {
        let ca_pem = match vpn.fields.ca {
            Some(ca) => self
                .read_ca(cas, ca)?
                .map(|ca| ca.material.certificate)
                .unwrap_or_default(),
            None => String::new(),
        };
        let (cert_pem, key_pem) = match client.cert {
            Some(cert) => self
                .read_cert(certs, cert)?
                .map(|c| (c.material.certificate, c.material.signing_key))
                .unwrap_or_default(),
            None => Default::default(),
        };
        Ok(ClientMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            private_key: client.private_key.clone(),
        })
    }

    /// The VPN variables of `device`'s configuration, from its clients.
    pub(super) fn vpn_variables(
        &self,
        vpns: &impl ReadableTable<u128, &'static [u8]>,
        clients: &impl ReadableTable<&'static [u8], &'static [u8]>,
        cas: &impl ReadableTable<u128, &'static [u8]>,
        certs: &impl ReadableTable<u128, &'static [u8]>,
        device: DeviceId,
    ) -> Result<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        for (vpn, client) in self.device_clients(clients, device)? {
            let Some(vpn) = self.read_vpn(vpns, vpn)? else {
                continue;
            };
            let material = self.client_material(cas, certs, &vpn, &client)?;
            vars.extend(crate::vpn::client_variables(&vpn, &client, &material));
        }
        Ok(vars)
    }

    /// Brings `device`'s VPN clients in line with the VPNs of the VPN-client templates of its
    /// configuration (`vpns`): adds the missing, removes the stale. Returns whether the device
    /// has any client now.
    pub(super) fn sync_clients(
        &self,
        txn: &WriteTransaction,
        device: &Device,
        vpns: &[VpnId],
    ) -> Result<bool> {
        let mut wanted = BTreeSet::new();
        for vpn in vpns {
            if !wanted.insert(*vpn) {
                return Err(rule("config", TWO_CLIENTS));
            }
        }
        let existing = self.device_clients(&txn.open_table(VPN_CLIENTS)?, device.id)?;
        if wanted.is_empty() && existing.is_empty() {
            return Ok(false);
        }
        for (vpn, client) in &existing {
            if !wanted.contains(vpn) {
                self.remove_client(txn, client)?;
            }
        }
        let mut any = false;
        for vpn in wanted {
            if existing.contains_key(&vpn) {
                any = true;
                continue;
            }
            let Ok(vpn) = self.load_vpn(txn, vpn) else {
                continue;
            };
            self.add_client(txn, device, &vpn)?;
            any = true;
        }
        Ok(any)
    }

    /// Removes every client of a device (deleted with it).
    pub(super) fn delete_device_clients_in(
        &self,
        txn: &WriteTransaction,
        device: DeviceId,
    ) -> Result<()> {
        let clients = self.device_clients(&txn.open_table(VPN_CLIENTS)?, device)?;
        for client in clients.values() {
            self.remove_client(txn, client)?;
        }
        Ok(())
    }

    /// Checks and completes a VPN server's fields (`id` is its own, for the address index).
    fn settle_vpn(
        &self,
        txn: &WriteTransaction,
        vpn: &mut Vpn,
        before: Option<&Vpn>,
    ) -> Result<()> {
        let org = vpn.fields.organization;
        if let Some(org) = org
            && txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none()
        {
            return Err(StoreError::NotFound);
        }
        match vpn.fields.backend {
            VpnBackend::OpenVpn => {
                let ca_id = vpn.fields.ca.ok_or_else(|| rule("ca", CA_REQUIRED))?;
                let ca = self
                    .load_ca(txn, ca_id)
                    .map_err(|_| rule("ca", CA_REQUIRED))?;
                check_org("ca", org, &ca)?;
                match vpn.fields.cert {
                    Some(cert) => {
                        let cert = self.load_cert(txn, cert)?;
                        if cert.ca != ca_id {
                            return Err(rule("cert", CERT_OF_OTHER_CA));
                        }
                    }
                    None => {
                        let cert = self.create_cert_in(txn, ca_id, server_cert(vpn, &ca), None)?;
                        vpn.fields.cert = Some(cert.id);
                    }
                }
                if vpn.fields.dh.trim().is_empty() {
                    vpn.fields.dh = render::FFDHE2048_PEM.to_owned();
                }
                vpn.fields.subnet = None;
                vpn.fields.ip = None;
            }
            VpnBackend::WireGuard | VpnBackend::VxlanWireGuard => {
                let subnet = vpn
                    .fields
                    .subnet
                    .clone()
                    .ok_or_else(|| rule("subnet", SUBNET_REQUIRED))?;
                if render::allocate(&subnet, &BTreeSet::new()).is_none() {
                    return Err(rule("subnet", SUBNET_INVALID));
                }
                if before.is_some_and(|b| b.fields.subnet.as_deref() != Some(&subnet))
                    && txn
                        .open_table(VPN_PEERS)?
                        .range::<&[u8]>(
                            vpn.id.bytes().as_slice()..cat(&[&vpn.id.bytes(), &[0xff]]).as_slice(),
                        )?
                        .next()
                        .is_some()
                {
                    return Err(rule("subnet", SUBNET_IN_USE));
                }
                if vpn.private_key.is_empty() {
                    let pair = render::KeyPair::generate().map_err(|_| {
                        rule("config", "A WireGuard key pair could not be generated.")
                    })?;
                    vpn.private_key = pair.private_key.clone();
                    vpn.public_key = pair.public_key.clone();
                }
                // The server's own address: kept, given, or the lowest free one.
                let mut addresses = txn.open_table(VPN_ADDRESSES)?;
                if let Some(old) = before.and_then(|b| b.fields.ip) {
                    addresses.remove(address_key(vpn.id, old).as_slice())?;
                }
                drop(addresses);
                let ip = match vpn.fields.ip {
                    Some(ip) if !in_subnet(ip, &subnet) => return Err(rule("ip", IP_OUTSIDE)),
                    Some(ip) => {
                        if taken(txn, vpn.id)?.contains(&ip) {
                            return Err(rule("ip", IP_TAKEN));
                        }
                        ip
                    }
                    None => render::allocate(&subnet, &taken(txn, vpn.id)?)
                        .ok_or_else(|| rule("subnet", SUBNET_FULL))?,
                };
                txn.open_table(VPN_ADDRESSES)?
                    .insert(address_key(vpn.id, ip).as_slice(), SERVER)?;
                vpn.fields.ip = Some(ip);
                vpn.fields.ca = None;
                vpn.fields.cert = None;
                vpn.fields.dh.clear();
            }
        }
        // The configuration must render for the backend (variables filled as they will be).
        self.render_vpn(txn, vpn)?;
        Ok(())
    }

    fn render_vpn(&self, txn: &WriteTransaction, vpn: &Vpn) -> Result<RenderedConfig> {
        let cas = txn.open_table(CAS)?;
        let certs = txn.open_table(CERTS)?;
        let clients = txn.open_table(VPN_CLIENTS)?;
        let peers = txn.open_table(VPN_PEERS)?;
        self.render_server(&cas, &certs, &clients, &peers, vpn)
    }

    /// The VPN server's archive: its configuration with its variables substituted, WireGuard
    /// peers for its clients, and the PEM files an OpenVPN server needs.
    fn render_server(
        &self,
        cas: &impl ReadableTable<u128, &'static [u8]>,
        certs: &impl ReadableTable<u128, &'static [u8]>,
        clients: &impl ReadableTable<&'static [u8], &'static [u8]>,
        peers: &impl ReadableTable<&'static [u8], ()>,
        vpn: &Vpn,
    ) -> Result<RenderedConfig> {
        let ca_pem = match vpn.fields.ca {
            Some(ca) => self
                .read_ca(cas, ca)?
                .map(|c| c.material.certificate)
                .unwrap_or_default(),
            None => String::new(),
        };
        let (cert_pem, key_pem) = match vpn.fields.cert {
            Some(cert) => self
                .read_cert(certs, cert)?
                .map(|c| (c.material.certificate, c.material.signing_key))
                .unwrap_or_default(),
            None => Default::default(),
        };
        let vars = crate::vpn::server_variables(vpn, &ca_pem, &cert_pem, &key_pem);
        let mut config =
            fleetmq_netjson::substitute(&Value::Object(vpn.fields.config.clone()), &vars);
        let mut vxlan_peers = Vec::new();
        if vpn.fields.backend != VpnBackend::OpenVpn {
            let mut wg_peers = Vec::new();
            for device in ids_paired_with(peers, &vpn.id.bytes())? {
                let key = client_key(DeviceId(Uuid::from_u128(device)), vpn.id);
                let Some(bytes) = clients.get(key.as_slice())? else {
                    continue;
                };
                let client: VpnClient = decode("vpn_clients", bytes.value())?;
                if let Some(ip) = client.ip {
                    wg_peers.push(render::wireguard::server_peer(&client.public_key, ip));
                    if let Some(vni) = client.vni {
                        vxlan_peers.push(render::VxlanPeer { vni, remote: ip });
                    }
                }
            }
            if let Some(Value::Array(list)) = config.get_mut("wireguard")
                && let Some(Value::Object(first)) = list.first_mut()
            {
                let entry = first.entry("peers").or_insert_with(|| json!([]));
                if let Value::Array(existing) = entry {
                    existing.extend(wg_peers);
                }
            }
        }
        let extra_files: Vec<Value> = match vpn.fields.backend {
            VpnBackend::OpenVpn => {
                crate::vpn::server_pem_files(&ca_pem, &cert_pem, &key_pem, &vpn.fields.dh)
            }
            VpnBackend::VxlanWireGuard => {
                let interface = config
                    .get("wireguard")
                    .and_then(|w| w.get(0))
                    .and_then(|w| w.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                vec![render::vxlan::peers_file(
                    interface.as_deref(),
                    &vxlan_peers,
                )]
            }
            VpnBackend::WireGuard => Vec::new(),
        };
        if !extra_files.is_empty()
            && let Value::Object(map) = &mut config
        {
            let files = map.entry("files").or_insert_with(|| json!([]));
            if let Value::Array(files) = files {
                files.extend(extra_files);
            }
        }
        let files = render::render_server(&config, vpn.fields.backend)
            .map_err(StoreError::InvalidVpnConfig)?;
        Ok(RenderedConfig::of(&files))
    }

    /// Removes a VPN server in `txn` with the clients it still has, its address and indexes.
    fn remove_vpn_in(&self, txn: &WriteTransaction, vpn: &Vpn) -> Result<()> {
        for device in ids_paired_with(&txn.open_table(VPN_PEERS)?, &vpn.id.bytes())? {
            let key = client_key(DeviceId(Uuid::from_u128(device)), vpn.id);
            let bytes = txn
                .open_table(VPN_CLIENTS)?
                .get(key.as_slice())?
                .map(|b| b.value().to_vec());
            if let Some(bytes) = bytes {
                let client = self.open_client(&bytes)?;
                self.remove_client(txn, &client)?;
            }
        }
        if let Some(ip) = vpn.fields.ip {
            txn.open_table(VPN_ADDRESSES)?
                .remove(address_key(vpn.id, ip).as_slice())?;
        }
        txn.open_table(VPN_NAMES)?
            .remove(name_key(&vpn.fields).as_slice())?;
        txn.open_table(VPNS)?.remove(vpn.id.key())?;
        txn.open_table(VPNS_BY_ORG)?.remove(
            cat(&[
                &org_prefix(vpn.fields.organization),
                &created_key(vpn.created, vpn.id.bytes()),
            ])
            .as_slice(),
        )?;
        Ok(())
    }

    /// Devices whose configuration carries a VPN-client template of `vpn`.
    fn devices_of_vpn(&self, txn: &WriteTransaction, vpn: VpnId) -> Result<BTreeSet<DeviceId>> {
        Ok(ids_paired_with(&txn.open_table(VPN_PEERS)?, &vpn.bytes())?
            .into_iter()
            .map(|d| DeviceId(Uuid::from_u128(d)))
            .collect())
    }

    /// Templates of `vpn`.
    fn templates_of_vpn(&self, txn: &WriteTransaction, vpn: VpnId) -> Result<Vec<Template>> {
        let table = txn.open_table(TEMPLATES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            let t: Template = decode("templates", bytes.value())?;
            if t.fields.vpn == Some(vpn.0) {
                out.push(t);
            }
        }
        Ok(out)
    }
}

fn check_org(field: &'static str, org: Option<OrgId>, ca: &Ca) -> Result<()> {
    match ca.fields.organization {
        Some(theirs) if org != Some(theirs) => Err(rule(field, ORG_MISMATCH)),
        _ => Ok(()),
    }
}

/// The server certificate an OpenVPN server gets from its CA when none is given.
fn server_cert(vpn: &Vpn, ca: &Ca) -> Draft {
    Draft {
        fields: X509Fields::issued(
            vpn.fields.name.clone(),
            ca.fields.organization.or(vpn.fields.organization),
            vpn.fields.host.clone(),
            false,
            vec![json!({"name": "nsCertType", "critical": false, "value": "server"})],
        ),
        origin: Origin::Generate {
            passphrase: String::new(),
            serial: None,
        },
    }
}

const CA_REQUIRED: &str = "CA is required with this VPN backend";
const CERT_OF_OTHER_CA: &str = "The certificate of a VPN server must be issued by its CA.";
const ORG_MISMATCH: &str = "Please ensure that the organization of this VPN server and the organization of the related CA match.";
const SUBNET_REQUIRED: &str = "Subnet is required for this VPN backend.";
const SUBNET_INVALID: &str =
    "Enter a valid subnet in CIDR notation (e.g. 10.0.0.0/24) with room for addresses.";
const SUBNET_IN_USE: &str = "The subnet cannot change while devices use this VPN.";
const SUBNET_FULL: &str = "The VPN's subnet has no free address left.";
const IP_OUTSIDE: &str = "The address must be inside the VPN's subnet.";
const IP_TAKEN: &str = "The address is already used in this VPN.";
const TWO_CLIENTS: &str =
    "You cannot select multiple VPN client templates related to the same VPN server.";

impl VpnStore for KvBackend {
    fn create_vpn(&self, fields: VpnFields) -> Result<Vpn> {
        let now = Timestamp::now();
        let mut vpn = Vpn {
            id: VpnId::new(),
            fields,
            key: crate::DeviceKey::generate().as_str().to_owned(),
            private_key: String::new(),
            public_key: String::new(),
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        {
            let mut names = txn.open_table(VPN_NAMES)?;
            let key = name_key(&vpn.fields);
            if names.get(key.as_slice())?.is_some() {
                return Err(StoreError::Unique(Unique::VpnName));
            }
            names.insert(key.as_slice(), vpn.id.key())?;
        }
        self.settle_vpn(&txn, &mut vpn, None)?;
        self.put_vpn(&txn, &vpn)?;
        txn.open_table(VPNS_BY_ORG)?.insert(
            cat(&[
                &org_prefix(vpn.fields.organization),
                &created_key(vpn.created, vpn.id.bytes()),
            ])
            .as_slice(),
            (),
        )?;
        txn.commit()?;
        self.anchors.invalidate();
        Ok(vpn)
    }

    fn vpn(&self, id: VpnId) -> Result<Option<Vpn>> {
        let txn = self.db.begin_read()?;
        self.read_vpn(&txn.open_table(VPNS)?, id)
    }

    fn update_vpn(&self, id: VpnId, fields: VpnFields) -> Result<(Vpn, ConfigChange)> {
        let txn = self.db.begin_write()?;
        let before = self.load_vpn(&txn, id)?;
        let mut vpn = before.clone();
        if fields.backend != before.fields.backend && !self.devices_of_vpn(&txn, id)?.is_empty() {
            return Err(rule(
                "backend",
                "The backend cannot change while devices use this VPN.",
            ));
        }
        {
            let mut names = txn.open_table(VPN_NAMES)?;
            names.remove(name_key(&before.fields).as_slice())?;
            let key = name_key(&fields);
            if names.get(key.as_slice())?.is_some() {
                return Err(StoreError::Unique(Unique::VpnName));
            }
            names.insert(key.as_slice(), id.key())?;
        }
        let created = created_key(vpn.created, vpn.id.bytes());
        txn.open_table(VPNS_BY_ORG)?
            .remove(cat(&[&org_prefix(before.fields.organization), &created]).as_slice())?;
        if fields.backend != before.fields.backend {
            vpn.private_key.clear();
            vpn.public_key.clear();
        }
        vpn.fields = fields;
        vpn.modified = Timestamp::now();
        self.settle_vpn(&txn, &mut vpn, Some(&before))?;
        self.put_vpn(&txn, &vpn)?;
        txn.open_table(VPNS_BY_ORG)?.insert(
            cat(&[&org_prefix(vpn.fields.organization), &created]).as_slice(),
            (),
        )?;
        let devices = self.devices_of_vpn(&txn, id)?;
        let change = configuration_changed(self, &txn, devices)?;
        let change = self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok((vpn, change))
    }

    fn delete_vpn(&self, id: VpnId) -> Result<ConfigChange> {
        let txn = self.db.begin_write()?;
        let vpn = self.load_vpn(&txn, id)?;
        // Its templates go with it (Django's CASCADE), leaving the configurations using them.
        let mut devices = BTreeSet::new();
        for template in self.templates_of_vpn(&txn, id)? {
            devices.extend(super::configuration::delete_template_in(
                &txn,
                TemplateId(template.id.0),
            )?);
        }
        devices.extend(self.devices_of_vpn(&txn, id)?);
        let change = configuration_changed(self, &txn, devices)?;
        // Whatever client is left (its device deactivated) goes too.
        self.remove_vpn_in(&txn, &vpn)?;
        let change = self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok(change)
    }

    fn list_vpns(&self, scope: &Scope, filter: &VpnFilter, page: PageRequest) -> Result<Page<Vpn>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VPNS)?;
        let mut items = Vec::new();
        let keys = match filter.organization {
            Some(None) => Vec::new(),
            Some(Some(org)) => ids_under(&txn.open_table(VPNS_BY_ORG)?, &org.bytes())?,
            None => visible_keys(&txn.open_table(VPNS_BY_ORG)?, scope)?
                .iter()
                .map(super::paging::id_of)
                .collect(),
        };
        for id in keys {
            let Some(bytes) = table.get(id)? else {
                continue;
            };
            // The list shows public fields only: nothing is unsealed until the page is cut.
            let vpn: Vpn = decode("vpns", bytes.value())?;
            if filter.backend.is_some_and(|b| b != vpn.fields.backend)
                || filter
                    .subnet
                    .as_ref()
                    .is_some_and(|s| vpn.fields.subnet.as_ref() != Some(s))
            {
                continue;
            }
            items.push(vpn.id);
        }
        let count = items.len() as u64;
        let mut page_items = Vec::new();
        for id in items
            .into_iter()
            .skip(page.offset as usize)
            .take(page.limit as usize)
        {
            if let Some(vpn) = self.read_vpn(&table, id)? {
                page_items.push(vpn);
            }
        }
        Ok(Page {
            count,
            items: page_items,
        })
    }

    fn vpn_configuration(&self, id: VpnId) -> Result<Option<RenderedConfig>> {
        let txn = self.db.begin_read()?;
        let Some(vpn) = self.read_vpn(&txn.open_table(VPNS)?, id)? else {
            return Ok(None);
        };
        self.render_server(
            &txn.open_table(CAS)?,
            &txn.open_table(CERTS)?,
            &txn.open_table(VPN_CLIENTS)?,
            &txn.open_table(VPN_PEERS)?,
            &vpn,
        )
        .map(Some)
    }

    fn vpn_clients(&self, id: VpnId) -> Result<Vec<VpnClient>> {
        let txn = self.db.begin_read()?;
        let clients = txn.open_table(VPN_CLIENTS)?;
        let mut out = Vec::new();
        for device in ids_paired_with(&txn.open_table(VPN_PEERS)?, &id.bytes())? {
            let key = client_key(DeviceId(Uuid::from_u128(device)), id);
            if let Some(bytes) = clients.get(key.as_slice())? {
                out.push(self.open_client(bytes.value())?);
            }
        }
        Ok(out)
    }

    fn vpn_client_template(&self, id: VpnId) -> Result<Option<Map<String, Value>>> {
        Ok(self
            .vpn(id)?
            .map(|v| crate::vpn::client_template_config(&v)))
    }
}

/// Deletes an organization's VPN servers (its devices and templates are already gone).
pub(super) fn delete_org_vpns_in(
    backend: &KvBackend,
    txn: &WriteTransaction,
    org: OrgId,
) -> Result<()> {
    for id in ids_under(&txn.open_table(VPNS_BY_ORG)?, &org.bytes())? {
        let vpn = backend.load_vpn(txn, VpnId(Uuid::from_u128(id)))?;
        backend.remove_vpn_in(txn, &vpn)?;
    }
    Ok(())
}
