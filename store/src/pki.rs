//! Certificate authorities and certificates, as OpenWISP (django-x509) keeps them: integer ids,
//! the subject and validity a client asked for, the PEM certificate and private key.
//!
//! The cryptography is `fleetmq-pki`'s; this module holds the records and the rules around
//! them:
//! - a certificate belongs to the organization of its CA (a shared CA signs for anyone);
//! - renewing gives a new key, a new serial and a new validity; the superseded serial is
//!   revoked, so a renewed certificate's old copy stops logging in;
//! - deleting a certificate revokes its serial too: a right removed stops working, and the
//!   CA's revocation list keeps saying so;
//! - a certificate whose common name is a device id of its CA's organization logs that device
//!   in over MQTT (see [`CertificateLogin`]).
//!
//! Private keys never reach the data file in clear: the backend seals them with a
//! [`fleetmq_pki::KeyVault`] whose secret lives beside the data file (or comes from a flag).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Device, DeviceId, OrgId, Organization, Timestamp};

const DAY_MICROS: i64 = 86_400_000_000;

/// Where a validity starts when the client does not say: yesterday at midnight UTC, as
/// django-x509 does (so clocks slightly behind still accept a fresh certificate).
pub fn default_validity_start(now: Timestamp) -> Timestamp {
    let micros = now.as_micros();
    Timestamp::from_micros(micros - micros.rem_euclid(DAY_MICROS) - DAY_MICROS)
}

/// Where a CA's validity ends when the client does not say: in 10 years (3650 days).
pub fn default_ca_validity_end(now: Timestamp) -> Timestamp {
    Timestamp::from_micros(now.as_micros() + 3650 * DAY_MICROS)
}

/// Where a certificate's validity ends when the client does not say: in a year (365 days).
pub fn default_cert_validity_end(now: Timestamp) -> Timestamp {
    Timestamp::from_micros(now.as_micros() + 365 * DAY_MICROS)
}

impl X509Fields {
    /// The fields of a certificate fleetmq issues itself (RSA 2048, sha256, django-x509's
    /// default validity from `now`, a CA's or a certificate's): only `name`, `organization`
    /// and the common name are set, plus `extensions`.
    pub fn issued(
        name: String,
        organization: Option<OrgId>,
        common_name: String,
        ca: bool,
        extensions: Vec<Value>,
    ) -> X509Fields {
        let now = Timestamp::now();
        X509Fields {
            name,
            organization,
            notes: String::new(),
            key_length: "2048".to_owned(),
            digest: "sha256".to_owned(),
            validity_start: default_validity_start(now),
            validity_end: if ca {
                default_ca_validity_end(now)
            } else {
                default_cert_validity_end(now)
            },
            country_code: String::new(),
            state: String::new(),
            city: String::new(),
            organization_name: String::new(),
            organizational_unit_name: String::new(),
            email: String::new(),
            common_name,
            extensions,
        }
    }
}

/// The fields of the CA an organization gets when a device certificate is asked for and it
/// has none.
pub fn device_ca_fields(org: &Organization) -> X509Fields {
    let mut fields = X509Fields::issued(
        format!("{} devices", org.fields.name),
        Some(org.id),
        format!("{} devices CA", org.fields.slug.as_str()),
        true,
        Vec::new(),
    );
    fields.notes = "Created by fleetmq for device certificates.".to_owned();
    fields.organization_name = org.fields.name.clone();
    fields
}

/// The fields of a device's certificate: its id as common name, its name as the record's.
pub fn device_cert_fields(device: &Device) -> X509Fields {
    X509Fields::issued(
        device.fields.name.as_str().to_owned(),
        Some(device.fields.organization),
        device.id.to_string(),
        false,
        Vec::new(),
    )
}

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The u128 form primary tables are keyed by.
            pub fn key(&self) -> u128 {
                u128::from(self.0)
            }

            /// The 16 big-endian bytes indexes use.
            pub fn bytes(&self) -> [u8; 16] {
                self.key().to_be_bytes()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(
    /// Identifies a certificate authority (an integer, as in OpenWISP).
    CaId
);
int_id!(
    /// Identifies a certificate (an integer, as in OpenWISP).
    CertId
);

/// The subject and parameters of a certificate, as a client gives them (OpenWISP's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct X509Fields {
    /// Display name (≤ 64).
    pub name: String,
    /// Owning organization; `None` = shared.
    pub organization: Option<OrgId>,
    /// Free text.
    pub notes: String,
    /// `"512"`…`"4096"` (RSA bits) or an EC curve size, as OpenWISP spells it.
    pub key_length: String,
    /// `sha256`, `sha384`, ...
    pub digest: String,
    /// Not valid before.
    pub validity_start: Timestamp,
    /// Not valid after.
    pub validity_end: Timestamp,
    /// Subject C.
    pub country_code: String,
    /// Subject ST.
    pub state: String,
    /// Subject L.
    pub city: String,
    /// Subject O.
    pub organization_name: String,
    /// Subject OU.
    pub organizational_unit_name: String,
    /// Subject emailAddress.
    pub email: String,
    /// Subject CN.
    pub common_name: String,
    /// Additional extensions `[{"name", "critical", "value"}]`.
    pub extensions: Vec<Value>,
}

/// The cryptographic material of a stored CA or certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Material {
    /// Decimal serial number.
    pub serial_number: String,
    /// PEM certificate.
    pub certificate: String,
    /// The private key as the API shows it: PKCS#8 PEM, encrypted with the passphrase when one
    /// was given.
    pub private_key: String,
    /// The unencrypted PKCS#8 PEM key the server signs with (a CA) or hands out (a cert).
    pub signing_key: String,
    /// The passphrase the shown key is encrypted with ("" = none); never shown.
    pub passphrase: String,
}

/// A stored certificate authority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ca {
    /// Identity.
    pub id: CaId,
    /// What the client set (or what the imported certificate says).
    pub fields: X509Fields,
    /// Certificate, keys, serial.
    pub material: Material,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub modified: Timestamp,
}

/// A stored certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cert {
    /// Identity.
    pub id: CertId,
    /// The CA that signed it.
    pub ca: CaId,
    /// What the client set (or what the imported certificate says).
    pub fields: X509Fields,
    /// Certificate, keys, serial.
    pub material: Material,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When.
    pub revoked_at: Option<Timestamp>,
    /// The device it was issued to through the device-certificate call, if any.
    pub device: Option<DeviceId>,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub modified: Timestamp,
}

/// How a new CA or certificate gets its key and certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Generate a key and sign (the CA signs itself) with the fields' parameters.
    Generate {
        /// Encrypts the shown private key ("" = none).
        passphrase: String,
        /// The serial number (decimal) the client chose; `None` = random.
        serial: Option<String>,
    },
    /// Take an existing certificate and key; the fields are read from the certificate.
    Import {
        /// PEM certificate.
        certificate: String,
        /// PEM private key (PKCS#8, PKCS#1 or SEC1; encrypted if `passphrase` is given).
        private_key: String,
        /// Decrypts `private_key` and encrypts the shown one ("" = none).
        passphrase: String,
    },
}

/// A CA or certificate to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Requested fields (with an import, only name, organization and notes are kept).
    pub fields: X509Fields,
    /// Generate or import.
    pub origin: Origin,
}

/// The fields of a CA or certificate that change after creation (OpenWISP's detail
/// serializers make the rest read-only).
#[derive(Debug, Clone, PartialEq)]
pub struct Relabel {
    /// Display name.
    pub name: String,
    /// Owning organization (`None` = shared).
    pub organization: Option<OrgId>,
    /// Free text.
    pub notes: String,
}

/// Who a client certificate logs in, once it chains to an organization's CA, is in its
/// validity, is not revoked and names a device of that organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLogin {
    /// The device named by the common name.
    pub device: DeviceId,
    /// The CA that signed it.
    pub ca: CaId,
    /// The certificate's serial (decimal).
    pub serial: String,
}

/// Why a client certificate does not log a device in (each answered with CONNACK 0x05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateRefusal {
    /// No organization CA signed it (or its signature does not verify).
    UnknownIssuer,
    /// Outside its validity period.
    Expired,
    /// Revoked (or renewed, or deleted).
    Revoked,
    /// The common name is not a device of the CA's organization.
    NotADevice,
}

impl std::fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertificateRefusal::UnknownIssuer => "not signed by an organization's CA",
            CertificateRefusal::Expired => "outside its validity period",
            CertificateRefusal::Revoked => "revoked",
            CertificateRefusal::NotADevice => {
                "its common name is not a device of the CA's organization"
            }
        })
    }
}

/// OpenWISP's message when a certificate and its CA belong to different organizations.
pub const ORG_MISMATCH: &str = "Please ensure that the organization of this certificate and the organization of the related CA match.";
