//! [`PkiStore`] on the kv tables: certificate authorities, certificates, revoked serials and CRLs.
//!
//! Keys are generated before the write transaction when nothing stored is needed for it (a new
//! CA), so slow RSA generation does not hold the single writer; signing with a CA's key
//! happens inside the transaction that reads the CA, so a certificate is never signed by a key
//! that was renewed meanwhile. Private keys are sealed with the backend's
//! [`fleetmq_pki::KeyVault`] before they are encoded.

use crate::kv::{ReadableTable, WriteTransaction};
use time::OffsetDateTime;

use super::KvBackend;
use super::devices::bump;
use super::paging::{created_key, id_of, ids_paired_with, ids_under, org_prefix, visible_keys};
use super::record::{cat, decode, encode, get_record};
use crate::pki::{
    Ca, CaId, Cert, CertId, CertificateLogin, CertificateRefusal, Draft, Material, Origin, Relabel,
    X509Fields,
};
use crate::tables::*;
use crate::{
    Device, DeviceGroup, DeviceId, LoginChange, OrgId, Organization, Page, PageRequest, PkiStore,
    Result, Scope, StoreError, Timestamp,
};
use fleetmq_pki::{self as pki, KeyVault};

/// Counter keys of the next CA and certificate ids.
const NEXT_CA: &[u8] = b"ids/ca";
const NEXT_CERT: &[u8] = b"ids/cert";

fn crl_number_key(ca: CaId) -> Vec<u8> {
    cat(&[b"crl/", &ca.bytes()])
}

fn next_id(txn: &WriteTransaction, key: &[u8]) -> Result<u64> {
    let mut counters = txn.open_table(COUNTERS)?;
    bump(&mut counters, key, 1)?;
    Ok(counters.get(key)?.map(|v| v.value()).unwrap_or(1))
}

fn datetime(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_micros((t.unix_timestamp_nanos() / 1_000) as i64)
}

/// A PKI error about what the client asked for, reported under the field it names, else
/// under `field`.
fn invalid(field: &'static str) -> impl FnOnce(pki::PkiError) -> StoreError {
    move |source| StoreError::Pki {
        field: source.field().unwrap_or(field),
        source,
    }
}

/// Validity to whole seconds: what a certificate can say, so the record and the certificate
/// agree.
fn settle(fields: &mut X509Fields) {
    let whole =
        |t: Timestamp| Timestamp::from_micros(t.as_micros() - t.as_micros().rem_euclid(1_000_000));
    fields.validity_start = whole(fields.validity_start);
    fields.validity_end = whole(fields.validity_end);
}

/// The crypto request the fields describe, with the serial `serial` or a random one.
fn request(fields: &X509Fields, serial: Option<&str>) -> Result<pki::Request> {
    let serial = match serial {
        Some(s) => pki::SerialNumber::parse(s).map_err(invalid("serial_number"))?,
        None => pki::SerialNumber::random(),
    };
    let extensions = fields
        .extensions
        .iter()
        .map(|e| serde_json::from_value::<pki::Extension>(e.clone()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Pki {
            field: "extensions",
            source: pki::PkiError::Unsupported(format!("invalid extension: {e}")),
        })?;
    Ok(pki::Request {
        key: pki::KeySpec::parse(&fields.key_length).map_err(invalid("key_length"))?,
        digest: pki::Digest::parse(&fields.digest).map_err(invalid("digest"))?,
        validity: pki::Validity {
            start: datetime(fields.validity_start),
            end: datetime(fields.validity_end),
        },
        subject: pki::Subject {
            country_code: fields.country_code.clone(),
            state: fields.state.clone(),
            city: fields.city.clone(),
            organization_name: fields.organization_name.clone(),
            organizational_unit_name: fields.organizational_unit_name.clone(),
            email: fields.email.clone(),
            common_name: fields.common_name.clone(),
        },
        serial,
        extensions,
    })
}

/// Fills the fields an imported certificate determines (name, organization, notes stay).
fn adopt(fields: &mut X509Fields, parsed: &pki::Parsed) {
    fields.key_length = parsed.key.key_length();
    fields.digest = parsed.digest.as_str().to_owned();
    fields.validity_start = timestamp(parsed.validity.start);
    fields.validity_end = timestamp(parsed.validity.end);
    fields.country_code = parsed.subject.country_code.clone();
    fields.state = parsed.subject.state.clone();
    fields.city = parsed.subject.city.clone();
    fields.organization_name = parsed.subject.organization_name.clone();
    fields.organizational_unit_name = parsed.subject.organizational_unit_name.clone();
    fields.email = parsed.subject.email.clone();
    fields.common_name = parsed.subject.common_name.clone();
    fields.extensions = parsed
        .extensions
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
}

/// The material of a generated key pair, with the shown key encrypted by `passphrase`.
fn material(issued: pki::Issued, serial: String, passphrase: String) -> Result<Material> {
    let shown = if passphrase.is_empty() {
        issued.private_key_pem.clone()
    } else {
        pki::encrypt_private_key(&issued.private_key_pem, &passphrase)
            .map_err(invalid("passphrase"))?
    };
    Ok(Material {
        serial_number: serial,
        certificate: issued.certificate_pem,
        private_key: shown,
        signing_key: issued.private_key_pem,
        passphrase,
    })
}

/// Reads an import: the certificate's fields and the key, checked to match.
fn import(
    fields: &mut X509Fields,
    certificate: &str,
    private_key: &str,
    passphrase: String,
) -> Result<Material> {
    let pass = (!passphrase.is_empty()).then_some(passphrase.as_str());
    let (parsed, key) = pki::import(certificate, private_key, pass).map_err(|e| match e {
        pki::PkiError::WrongPassphrase => invalid("passphrase")(e),
        pki::PkiError::InvalidKey(_) | pki::PkiError::KeyMismatch => invalid("private_key")(e),
        other => invalid("certificate")(other),
    })?;
    adopt(fields, &parsed);
    let shown = if passphrase.is_empty() {
        key.clone()
    } else {
        private_key.to_owned()
    };
    Ok(Material {
        serial_number: parsed.serial.to_string(),
        certificate: certificate.to_owned(),
        private_key: shown,
        signing_key: key,
        passphrase,
    })
}

fn ca_aad(id: CaId) -> Vec<u8> {
    format!("ca:{id}").into_bytes()
}

fn cert_aad(id: CertId) -> Vec<u8> {
    format!("cert:{id}").into_bytes()
}

fn seal(vault: &KeyVault, aad: &[u8], m: &Material) -> Material {
    Material {
        serial_number: m.serial_number.clone(),
        certificate: m.certificate.clone(),
        private_key: vault.seal(&m.private_key, aad),
        signing_key: vault.seal(&m.signing_key, aad),
        passphrase: vault.seal(&m.passphrase, aad),
    }
}

fn unseal(vault: &KeyVault, table: &'static str, aad: &[u8], m: Material) -> Result<Material> {
    let open = |s: &str| {
        vault.open(s, aad).map_err(|e| StoreError::Sealed {
            table,
            reason: e.to_string(),
        })
    };
    Ok(Material {
        private_key: open(&m.private_key)?,
        signing_key: open(&m.signing_key)?,
        passphrase: open(&m.passphrase)?,
        ..m
    })
}

impl KvBackend {
    fn put_ca(&self, txn: &WriteTransaction, ca: &Ca) -> Result<()> {
        let stored = Ca {
            material: seal(&self.vault, &ca_aad(ca.id), &ca.material),
            ..ca.clone()
        };
        txn.open_table(CAS)?
            .insert(ca.id.key(), encode("cas", &stored)?.as_slice())?;
        Ok(())
    }

    pub(super) fn read_ca(
        &self,
        table: &impl ReadableTable<u128, &'static [u8]>,
        id: CaId,
    ) -> Result<Option<Ca>> {
        let Some(bytes) = table.get(id.key())? else {
            return Ok(None);
        };
        let ca: Ca = decode("cas", bytes.value())?;
        let material = unseal(&self.vault, "cas", &ca_aad(id), ca.material)?;
        Ok(Some(Ca { material, ..ca }))
    }

    fn put_cert(&self, txn: &WriteTransaction, cert: &Cert) -> Result<()> {
        let stored = Cert {
            material: seal(&self.vault, &cert_aad(cert.id), &cert.material),
            ..cert.clone()
        };
        txn.open_table(CERTS)?
            .insert(cert.id.key(), encode("certs", &stored)?.as_slice())?;
        Ok(())
    }

    pub(super) fn read_cert(
        &self,
        table: &impl ReadableTable<u128, &'static [u8]>,
        id: CertId,
    ) -> Result<Option<Cert>> {
        let Some(bytes) = table.get(id.key())? else {
            return Ok(None);
        };
        let cert: Cert = decode("certs", bytes.value())?;
        let material = unseal(&self.vault, "certs", &cert_aad(id), cert.material)?;
        Ok(Some(Cert { material, ..cert }))
    }

    pub(super) fn load_ca(&self, txn: &WriteTransaction, id: CaId) -> Result<Ca> {
        self.read_ca(&txn.open_table(CAS)?, id)?
            .ok_or(StoreError::NotFound)
    }

    pub(super) fn load_cert(&self, txn: &WriteTransaction, id: CertId) -> Result<Cert> {
        self.read_cert(&txn.open_table(CERTS)?, id)?
            .ok_or(StoreError::NotFound)
    }

    fn insert_ca_indexes(&self, txn: &WriteTransaction, ca: &Ca) -> Result<()> {
        let created = created_key(ca.created, ca.id.bytes());
        txn.open_table(CAS_BY_ORG)?.insert(
            cat(&[&org_prefix(ca.fields.organization), &created]).as_slice(),
            (),
        )?;
        let subject = pki::subject_key(&ca.material.certificate).map_err(invalid("certificate"))?;
        txn.open_table(CAS_BY_SUBJECT)?
            .insert(cat(&[&subject, &ca.id.bytes()]).as_slice(), ())?;
        Ok(())
    }

    fn remove_ca_indexes(&self, txn: &WriteTransaction, ca: &Ca) -> Result<()> {
        let created = created_key(ca.created, ca.id.bytes());
        txn.open_table(CAS_BY_ORG)?
            .remove(cat(&[&org_prefix(ca.fields.organization), &created]).as_slice())?;
        if let Ok(subject) = pki::subject_key(&ca.material.certificate) {
            txn.open_table(CAS_BY_SUBJECT)?
                .remove(cat(&[&subject, &ca.id.bytes()]).as_slice())?;
        }
        Ok(())
    }

    fn insert_cert_indexes(&self, txn: &WriteTransaction, cert: &Cert) -> Result<()> {
        let created = created_key(cert.created, cert.id.bytes());
        txn.open_table(CERTS_BY_ORG)?.insert(
            cat(&[&org_prefix(cert.fields.organization), &created]).as_slice(),
            (),
        )?;
        txn.open_table(CA_CERTS)?
            .insert(cat(&[&cert.ca.bytes(), &cert.id.bytes()]).as_slice(), ())?;
        txn.open_table(CERTS_BY_COMMON_NAME)?
            .insert((cert.fields.common_name.as_str(), cert.id.key()), ())?;
        Ok(())
    }

    fn remove_cert_indexes(&self, txn: &WriteTransaction, cert: &Cert) -> Result<()> {
        let created = created_key(cert.created, cert.id.bytes());
        txn.open_table(CERTS_BY_ORG)?
            .remove(cat(&[&org_prefix(cert.fields.organization), &created]).as_slice())?;
        txn.open_table(CA_CERTS)?
            .remove(cat(&[&cert.ca.bytes(), &cert.id.bytes()]).as_slice())?;
        txn.open_table(CERTS_BY_COMMON_NAME)?
            .remove((cert.fields.common_name.as_str(), cert.id.key()))?;
        Ok(())
    }

    /// Records `serial` of `ca` as revoked at `at` and regenerates the CA's CRL.
    fn revoke_serial(
        &self,
        txn: &WriteTransaction,
        ca: &Ca,
        serial: &str,
        at: Timestamp,
    ) -> Result<()> {
        txn.open_table(REVOKED_SERIALS)?.insert(
            cat(&[&ca.id.bytes(), serial.as_bytes()]).as_slice(),
            at.as_micros(),
        )?;
        self.write_crl(txn, ca)
    }

    /// Signs and stores a CRL of every serial `ca` revoked, with the next CRL number.
    fn write_crl(&self, txn: &WriteTransaction, ca: &Ca) -> Result<()> {
        let mut revoked = Vec::new();
        {
            let table = txn.open_table(REVOKED_SERIALS)?;
            let lo = ca.id.bytes().to_vec();
            let hi = CaId(ca.id.0 + 1).bytes().to_vec();
            for entry in table.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
                let (key, at) = entry?;
                let serial = String::from_utf8_lossy(&key.value()[16..]).into_owned();
                let Ok(serial) = pki::SerialNumber::parse(&serial) else {
                    continue;
                };
                revoked.push(pki::Revoked {
                    serial,
                    revoked_at: datetime(Timestamp::from_micros(at.value())),
                });
            }
        }
        let number = next_id(txn, &crl_number_key(ca.id))?;
        let now = OffsetDateTime::now_utc();
        let crl = pki::crl(
            &pki::Authority {
                certificate_pem: &ca.material.certificate,
                private_key_pem: &ca.material.signing_key,
            },
            &revoked,
            number,
            now,
            now + time::Duration::days(CRL_LIFETIME_DAYS),
        )
        .map_err(invalid("certificate"))?;
        txn.open_table(CRLS)?.insert(ca.id.key(), crl.as_str())?;
        Ok(())
    }

    /// Signs `fields` with `ca` and returns the material.
    fn sign(
        fields: &X509Fields,
        ca: &Ca,
        passphrase: String,
        serial: Option<&str>,
    ) -> Result<Material> {
        let req = request(fields, serial)?;
        let serial = req.serial.to_string();
        let issued = pki::issue(
            &req,
            &pki::Authority {
                certificate_pem: &ca.material.certificate,
                private_key_pem: &ca.material.signing_key,
            },
        )
        .map_err(invalid("__all__"))?;
        material(issued, serial, passphrase)
    }

    /// Renews `cert` with `ca` in `txn`: new key, serial and validity; the old serial is revoked.
    fn renew_cert_in(
        &self,
        txn: &WriteTransaction,
        cert: &mut Cert,
        ca: &Ca,
        now: Timestamp,
    ) -> Result<()> {
        let old_serial = cert.material.serial_number.clone();
        cert.fields.validity_start = crate::pki::default_validity_start(now);
        cert.fields.validity_end = crate::pki::default_cert_validity_end(now);
        settle(&mut cert.fields);
        cert.material = Self::sign(&cert.fields, ca, cert.material.passphrase.clone(), None)?;
        cert.modified = now;
        self.put_cert(txn, cert)?;
        if !cert.revoked {
            self.revoke_serial(txn, ca, &old_serial, now)?;
        }
        Ok(())
    }

    /// The login change of a certificate's change: its device's, when it is one's.
    fn cert_change(cert: &Cert) -> Option<LoginChange> {
        cert.fields
            .common_name
            .parse::<DeviceId>()
            .ok()
            .map(LoginChange::Device)
    }

    /// The login change of a CA's change: its organization's, when it has one.
    fn org_change(org: Option<Organization>) -> Option<LoginChange> {
        org.map(|org| LoginChange::Organization {
            slug: org.fields.slug.as_str().to_owned(),
        })
    }

    /// Commits `txn` carrying `change` to the other nodes; the caller announces it here.
    fn commit_carrying(txn: WriteTransaction, change: Option<&LoginChange>) -> Result<()> {
        if let Some(change) = change {
            super::cluster::carry_login(&txn, change);
        }
        txn.commit()
    }

    fn announce(&self, change: Option<LoginChange>) {
        if let Some(change) = change {
            self.changes.announce(change);
        }
    }

    fn org_of(&self, txn: &WriteTransaction, org: Option<OrgId>) -> Result<Option<Organization>> {
        match org {
            None => Ok(None),
            Some(org) => get_record(&txn.open_table(ORGANIZATIONS)?, "organizations", org.key())?
                .ok_or(StoreError::NotFound)
                .map(Some),
        }
    }

    /// Deletes `cert` in `txn`; its serial is revoked unless it already was.
    pub(super) fn delete_cert_in(
        &self,
        txn: &WriteTransaction,
        cert: &Cert,
        ca: Option<&Ca>,
    ) -> Result<()> {
        self.remove_cert_indexes(txn, cert)?;
        txn.open_table(CERTS)?.remove(cert.id.key())?;
        if let Some(device) = cert.device {
            txn.open_table(DEVICE_CERTS)?
                .remove(cat(&[&device.bytes(), &cert.id.bytes()]).as_slice())?;
        }
        if let Some(ca) = ca
            && !cert.revoked
        {
            self.revoke_serial(txn, ca, &cert.material.serial_number, Timestamp::now())?;
        }
        Ok(())
    }

    /// Deletes a CA, its certificates, revoked serials and CRL in `txn`.
    fn delete_ca_in(&self, txn: &WriteTransaction, ca: &Ca) -> Result<()> {
        let certs = ids_paired_with(&txn.open_table(CA_CERTS)?, &ca.id.bytes())?;
        for id in certs {
            let cert = self.load_cert(txn, CertId(id as u64))?;
            self.delete_cert_in(txn, &cert, None)?;
        }
        self.remove_ca_indexes(txn, ca)?;
        txn.open_table(CAS)?.remove(ca.id.key())?;
        txn.open_table(CRLS)?.remove(ca.id.key())?;
        let lo = ca.id.bytes().to_vec();
        let hi = CaId(ca.id.0 + 1).bytes().to_vec();
        let mut revoked = txn.open_table(REVOKED_SERIALS)?;
        let keys: Vec<Vec<u8>> = revoked
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())?
            .map(|e| e.map(|(k, _)| k.value().to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        for key in keys {
            revoked.remove(key.as_slice())?;
        }
        txn.open_table(COUNTERS)?
            .remove(crl_number_key(ca.id).as_slice())?;
        Ok(())
    }

    /// Creates a certificate in `txn` from `draft`, signed by (or imported under) `ca_id`.
    pub(super) fn create_cert_in(
        &self,
        txn: &WriteTransaction,
        ca_id: CaId,
        draft: Draft,
        device: Option<DeviceId>,
    ) -> Result<Cert> {
        let ca = self.load_ca(txn, ca_id)?;
        let mut fields = draft.fields;
        check_cert_org(&fields, &ca)?;
        self.org_of(txn, fields.organization)?;
        let material = match draft.origin {
            Origin::Generate { passphrase, serial } => {
                settle(&mut fields);
                Self::sign(&fields, &ca, passphrase, serial.as_deref())?
            }
            Origin::Import {
                certificate,
                private_key,
                passphrase,
            } => {
                let m = import(&mut fields, &certificate, &private_key, passphrase)?;
                pki::verify_signed_by(&m.certificate, &ca.material.certificate)
                    .map_err(invalid("certificate"))?;
                m
            }
        };
        let now = Timestamp::now();
        let cert = Cert {
            id: CertId(next_id(txn, NEXT_CERT)?),
            ca: ca.id,
            fields,
            material,
            revoked: false,
            revoked_at: None,
            device,
            created: now,
            modified: now,
        };
        self.put_cert(txn, &cert)?;
        self.insert_cert_indexes(txn, &cert)?;
        if let Some(device) = device {
            txn.open_table(DEVICE_CERTS)?
                .insert(cat(&[&device.bytes(), &cert.id.bytes()]).as_slice(), ())?;
        }
        Ok(cert)
    }
}

/// How long a CRL says it is current; it is regenerated on every revocation anyway.
const CRL_LIFETIME_DAYS: i64 = 7;

/// A certificate belongs to its CA's organization unless the CA is shared.
fn check_cert_org(fields: &X509Fields, ca: &Ca) -> Result<()> {
    match ca.fields.organization {
        Some(org) if fields.organization != Some(org) => Err(StoreError::Rule {
            field: "organization",
            message: crate::pki::ORG_MISMATCH,
        }),
        _ => Ok(()),
    }
}

impl PkiStore for KvBackend {
    fn create_ca(&self, draft: Draft) -> Result<Ca> {
        let mut fields = draft.fields;
        // Generated before the transaction: RSA keys take a while and need nothing stored.
        let material = match draft.origin {
            Origin::Generate { passphrase, serial } => {
                settle(&mut fields);
                let req = request(&fields, serial.as_deref())?;
                let serial = req.serial.to_string();
                let issued = pki::create_authority(&req).map_err(invalid("__all__"))?;
                material(issued, serial, passphrase)?
            }
            Origin::Import {
                certificate,
                private_key,
                passphrase,
            } => import(&mut fields, &certificate, &private_key, passphrase)?,
        };
        let txn = self.db.begin_write()?;
        self.org_of(&txn, fields.organization)?;
        let now = Timestamp::now();
        let ca = Ca {
            id: CaId(next_id(&txn, NEXT_CA)?),
            fields,
            material,
            created: now,
            modified: now,
        };
        self.put_ca(&txn, &ca)?;
        self.insert_ca_indexes(&txn, &ca)?;
        self.write_crl(&txn, &ca)?;
        txn.commit()?;
        Ok(ca)
    }

    fn ca(&self, id: CaId) -> Result<Option<Ca>> {
        let txn = self.db.begin_read()?;
        self.read_ca(&txn.open_table(CAS)?, id)
    }

    fn relabel_ca(&self, id: CaId, relabel: Relabel) -> Result<Ca> {
        let txn = self.db.begin_write()?;
        let mut ca = self.load_ca(&txn, id)?;
        let before = self.org_of(&txn, ca.fields.organization)?;
        self.org_of(&txn, relabel.organization)?;
        let moved = ca.fields.organization != relabel.organization;
        if moved && relabel.organization.is_some() {
            // Its certificates must follow it (OpenWISP's organization rule).
            for id in ids_paired_with(&txn.open_table(CA_CERTS)?, &ca.id.bytes())? {
                let cert = self.load_cert(&txn, CertId(id as u64))?;
                if cert.fields.organization != relabel.organization {
                    return Err(StoreError::Rule {
                        field: "organization",
                        message: crate::pki::ORG_MISMATCH,
                    });
                }
            }
        }
        self.remove_ca_indexes(&txn, &ca)?;
        ca.fields.name = relabel.name;
        ca.fields.organization = relabel.organization;
        ca.fields.notes = relabel.notes;
        ca.modified = Timestamp::now();
        self.put_ca(&txn, &ca)?;
        self.insert_ca_indexes(&txn, &ca)?;
        let change = if moved {
            Self::org_change(before)
        } else {
            None
        };
        Self::commit_carrying(txn, change.as_ref())?;
        self.anchors.invalidate();
        self.announce(change);
        Ok(ca)
    }

    fn delete_ca(&self, id: CaId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let ca = self.load_ca(&txn, id)?;
        let org = self.org_of(&txn, ca.fields.organization)?;
        self.delete_ca_in(&txn, &ca)?;
        let change = Self::org_change(org);
        Self::commit_carrying(txn, change.as_ref())?;
        self.anchors.invalidate();
        self.announce(change);
        Ok(())
    }

    fn list_cas(&self, scope: &Scope, page: PageRequest) -> Result<Page<Ca>> {
        let txn = self.db.begin_read()?;
        let keys = visible_keys(&txn.open_table(CAS_BY_ORG)?, scope)?;
        let count = keys.len() as u64;
        let table = txn.open_table(CAS)?;
        let mut items = Vec::new();
        for key in keys
            .iter()
            .skip(page.offset as usize)
            .take(page.limit as usize)
        {
            if let Some(ca) = self.read_ca(&table, CaId(id_of(key) as u64))? {
                items.push(ca);
            }
        }
        Ok(Page { count, items })
    }

    fn renew_ca(&self, id: CaId) -> Result<Ca> {
        let txn = self.db.begin_write()?;
        let mut ca = self.load_ca(&txn, id)?;
        let org = self.org_of(&txn, ca.fields.organization)?;
        let now = Timestamp::now();
        self.remove_ca_indexes(&txn, &ca)?;
        ca.fields.validity_start = crate::pki::default_validity_start(now);
        ca.fields.validity_end = crate::pki::default_ca_validity_end(now);
        settle(&mut ca.fields);
        let req = request(&ca.fields, None)?;
        let serial = req.serial.to_string();
        let issued = pki::create_authority(&req).map_err(invalid("__all__"))?;
        ca.material = material(issued, serial, ca.material.passphrase.clone())?;
        ca.modified = now;
        self.put_ca(&txn, &ca)?;
        self.insert_ca_indexes(&txn, &ca)?;
        // Certificates signed by the old key chain to nothing now; renew each with the new one.
        for cert_id in ids_paired_with(&txn.open_table(CA_CERTS)?, &ca.id.bytes())? {
            let mut cert = self.load_cert(&txn, CertId(cert_id as u64))?;
            self.renew_cert_in(&txn, &mut cert, &ca, now)?;
        }
        self.write_crl(&txn, &ca)?;
        let change = Self::org_change(org);
        Self::commit_carrying(txn, change.as_ref())?;
        self.announce(change);
        Ok(ca)
    }

    fn ca_crl(&self, id: CaId) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(CRLS)?
            .get(id.key())?
            .map(|v| v.value().to_owned()))
    }

    fn create_cert(&self, ca: CaId, draft: Draft) -> Result<Cert> {
        let txn = self.db.begin_write()?;
        let cert = self.create_cert_in(&txn, ca, draft, None)?;
        txn.commit()?;
        Ok(cert)
    }

    fn cert(&self, id: CertId) -> Result<Option<Cert>> {
        let txn = self.db.begin_read()?;
        self.read_cert(&txn.open_table(CERTS)?, id)
    }

    fn relabel_cert(&self, id: CertId, relabel: Relabel) -> Result<Cert> {
        let txn = self.db.begin_write()?;
        let mut cert = self.load_cert(&txn, id)?;
        let ca = self.load_ca(&txn, cert.ca)?;
        self.org_of(&txn, relabel.organization)?;
        self.remove_cert_indexes(&txn, &cert)?;
        cert.fields.name = relabel.name;
        cert.fields.organization = relabel.organization;
        cert.fields.notes = relabel.notes;
        check_cert_org(&cert.fields, &ca)?;
        cert.modified = Timestamp::now();
        self.put_cert(&txn, &cert)?;
        self.insert_cert_indexes(&txn, &cert)?;
        txn.commit()?;
        self.anchors.invalidate();
        Ok(cert)
    }

    fn delete_cert(&self, id: CertId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let cert = self.load_cert(&txn, id)?;
        let ca = self.load_ca(&txn, cert.ca)?;
        self.delete_cert_in(&txn, &cert, Some(&ca))?;
        let change = Self::cert_change(&cert);
        Self::commit_carrying(txn, change.as_ref())?;
        self.anchors.invalidate();
        self.announce(change);
        Ok(())
    }

    fn list_certs(&self, scope: &Scope, page: PageRequest) -> Result<Page<Cert>> {
        let txn = self.db.begin_read()?;
        let keys = visible_keys(&txn.open_table(CERTS_BY_ORG)?, scope)?;
        let count = keys.len() as u64;
        let table = txn.open_table(CERTS)?;
        let mut items = Vec::new();
        for key in keys
            .iter()
            .skip(page.offset as usize)
            .take(page.limit as usize)
        {
            if let Some(cert) = self.read_cert(&table, CertId(id_of(key) as u64))? {
                items.push(cert);
            }
        }
        Ok(Page { count, items })
    }

    fn renew_cert(&self, id: CertId) -> Result<Cert> {
        let txn = self.db.begin_write()?;
        let mut cert = self.load_cert(&txn, id)?;
        let ca = self.load_ca(&txn, cert.ca)?;
        self.renew_cert_in(&txn, &mut cert, &ca, Timestamp::now())?;
        let change = Self::cert_change(&cert);
        Self::commit_carrying(txn, change.as_ref())?;
        self.announce(change);
        Ok(cert)
    }

    fn revoke_cert(&self, id: CertId) -> Result<Cert> {
        let txn = self.db.begin_write()?;
        let mut cert = self.load_cert(&txn, id)?;
        if !cert.revoked {
            let ca = self.load_ca(&txn, cert.ca)?;
            let now = Timestamp::now();
            cert.revoked = true;
            cert.revoked_at = Some(now);
            cert.modified = now;
            self.put_cert(&txn, &cert)?;
            self.revoke_serial(&txn, &ca, &cert.material.serial_number, now)?;
        }
        let change = Self::cert_change(&cert);
        Self::commit_carrying(txn, change.as_ref())?;
        self.announce(change);
        Ok(cert)
    }

    fn issue_device_certificate(&self, device: DeviceId, ca: Option<CaId>) -> Result<Cert> {
        let txn = self.db.begin_write()?;
        let dev: Device = get_record(&txn.open_table(DEVICES)?, "devices", device.key())?
            .ok_or(StoreError::NotFound)?;
        let org = dev.fields.organization;
        // The organization's oldest CA is its default.
        let oldest = ids_under(&txn.open_table(CAS_BY_ORG)?, &org.bytes())?
            .last()
            .copied();
        let ca_id = match ca {
            Some(id) => {
                let ca = self.load_ca(&txn, id)?;
                if ca.fields.organization != Some(org) {
                    return Err(StoreError::Rule {
                        field: "ca",
                        message: "The CA must belong to the device's organization.",
                    });
                }
                id
            }
            None => match oldest {
                Some(id) => CaId(id as u64),
                None => {
                    let organization = self.org_of(&txn, Some(org))?.ok_or(StoreError::NotFound)?;
                    let mut fields = crate::pki::device_ca_fields(&organization);
                    settle(&mut fields);
                    let req = request(&fields, None)?;
                    let serial = req.serial.to_string();
                    let issued = pki::create_authority(&req).map_err(invalid("__all__"))?;
                    let now = Timestamp::now();
                    let ca = Ca {
                        id: CaId(next_id(&txn, NEXT_CA)?),
                        fields,
                        material: material(issued, serial, String::new())?,
                        created: now,
                        modified: now,
                    };
                    self.put_ca(&txn, &ca)?;
                    self.insert_ca_indexes(&txn, &ca)?;
                    self.write_crl(&txn, &ca)?;
                    ca.id
                }
            },
        };
        let draft = Draft {
            fields: crate::pki::device_cert_fields(&dev),
            origin: Origin::Generate {
                passphrase: String::new(),
                serial: None,
            },
        };
        let cert = self.create_cert_in(&txn, ca_id, draft, Some(device))?;
        txn.commit()?;
        self.anchors.invalidate();
        Ok(cert)
    }

    fn certificate_login(
        &self,
        leaf: &[u8],
        now: OffsetDateTime,
    ) -> Result<std::result::Result<CertificateLogin, CertificateRefusal>> {
        let Ok(issuer) = pki::issuer_key(leaf) else {
            return Ok(Err(CertificateRefusal::UnknownIssuer));
        };
        let txn = self.db.begin_read()?;
        let by_subject = txn.open_table(CAS_BY_SUBJECT)?;
        let cas = txn.open_table(CAS)?;
        let lo = cat(&[&issuer, &[0u8; 16]]);
        let hi = cat(&[&issuer, &[0xffu8; 16]]);
        let mut refusal = CertificateRefusal::UnknownIssuer;
        let mut accepted = None;
        for entry in by_subject.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
            let (key, _) = entry?;
            let key = key.value();
            if key.len() != issuer.len() + 16 {
                continue;
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&key[issuer.len()..]);
            let id = CaId(u128::from_be_bytes(id) as u64);
            // Certificates live in the CA record only as PEM: no key needs unsealing here.
            let Some(bytes) = cas.get(id.key())? else {
                continue;
            };
            let ca: Ca = decode("cas", bytes.value())?;
            let Some(org) = ca.fields.organization else {
                continue;
            };
            match pki::verify_client(leaf, &ca.material.certificate, now) {
                Ok(client) => {
                    accepted = Some((ca.id, org, client));
                    break;
                }
                Err(pki::PkiError::Expired | pki::PkiError::NotYetValid) => {
                    refusal = CertificateRefusal::Expired;
                }
                Err(_) => {}
            }
        }
        let Some((ca, org, client)) = accepted else {
            return Ok(Err(refusal));
        };
        let serial = client.serial.to_string();
        if txn
            .open_table(REVOKED_SERIALS)?
            .get(cat(&[&ca.bytes(), serial.as_bytes()]).as_slice())?
            .is_some()
        {
            return Ok(Err(CertificateRefusal::Revoked));
        }
        let Ok(device) = client.common_name.parse::<DeviceId>() else {
            return Ok(Err(CertificateRefusal::NotADevice));
        };
        let dev: Option<Device> = get_record(&txn.open_table(DEVICES)?, "devices", device.key())?;
        if dev.is_none_or(|d| d.fields.organization != org) {
            return Ok(Err(CertificateRefusal::NotADevice));
        }
        Ok(Ok(CertificateLogin { device, ca, serial }))
    }

    fn group_by_common_name(
        &self,
        common_name: &str,
        orgs: Option<Vec<OrgId>>,
    ) -> Result<Option<DeviceGroup>> {
        let txn = self.db.begin_read()?;
        let by_name = txn.open_table(CERTS_BY_COMMON_NAME)?;
        let certs = txn.open_table(CERTS)?;
        let mut found: Vec<Cert> = Vec::new();
        for entry in by_name.range((common_name, 0u128)..=(common_name, u128::MAX))? {
            let (key, _) = entry?;
            let Some(bytes) = certs.get(key.value().1)? else {
                continue;
            };
            // Only the public fields are needed: nothing is unsealed.
            let cert: Cert = decode("certs", bytes.value())?;
            if orgs.as_ref().is_none_or(|orgs| {
                cert.fields
                    .organization
                    .is_some_and(|org| orgs.contains(&org))
            }) {
                found.push(cert);
            }
        }
        // OpenWISP takes the first matching certificate.
        found.sort_by_key(|c| c.id);
        let Some(device) = found.into_iter().find_map(|c| c.device) else {
            return Ok(None);
        };
        let Some(device) =
            get_record::<Device>(&txn.open_table(DEVICES)?, "devices", device.key())?
        else {
            return Ok(None);
        };
        let Some(group) = device.fields.group else {
            return Ok(None);
        };
        get_record(&txn.open_table(GROUPS)?, "groups", group.as_u128())
    }
}

/// Deletes an organization's CAs (with their certificates) and its certificates under shared
/// CAs, in the transaction deleting the organization.
pub(super) fn delete_org_pki_in(
    backend: &KvBackend,
    txn: &WriteTransaction,
    org: OrgId,
) -> Result<()> {
    for id in ids_under(&txn.open_table(CAS_BY_ORG)?, &org.bytes())? {
        let ca = backend.load_ca(txn, CaId(id as u64))?;
        backend.delete_ca_in(txn, &ca)?;
    }
    for id in ids_under(&txn.open_table(CERTS_BY_ORG)?, &org.bytes())? {
        let cert = backend.load_cert(txn, CertId(id as u64))?;
        let ca = backend.load_ca(txn, cert.ca)?;
        backend.delete_cert_in(txn, &cert, Some(&ca))?;
    }
    Ok(())
}
