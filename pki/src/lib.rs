//! The PKI of fleetmq: certificate authorities, certificates, CRLs and private keys at rest,
//! behaving like OpenWISP's django-x509 (`Ca` and `Cert` models) so the REST API can offer the
//! same fields and defaults.
//!
//! Pure functions over PEM/DER text: no storage, no runtime. The store keeps the records (and
//! the private keys sealed with [`KeyVault`]); the API calls [`create_authority`], [`issue`],
//! [`import`], [`crl`]; the broker calls [`issuer_key`] and [`verify_client`] when a device
//! presents a client certificate.
//!
//! The django-x509 behaviour each part follows is written in the module docs.
//!
//! # Layout
//! - [`key`]: `key_length` ([`KeySpec`], [`Curve`]) and `digest` ([`Digest`]), which pairs
//!   can sign, loading private keys in any common form.
//! - [`passphrase`]: passphrase-encrypted private keys (reading both OpenSSL forms, writing
//!   encrypted PKCS#8).
//! - [`subject`]: the subject fields ([`Subject`]).
//! - [`serial`]: serial numbers as decimal strings ([`SerialNumber`]).
//! - [`extension`]: OpenWISP's `extensions` JSON ([`Extension`]) and the default extensions.
//! - [`issuance`]: making CAs and certificates ([`Request`], [`create_authority`], [`issue`]),
//!   default validity, renewal.
//! - [`certificate`]: reading and checking certificates ([`parse_certificate`], [`import`],
//!   [`verify_signed_by`], [`verify_client`], [`issuer_key`], [`subject_key`]).
//! - [`crl`]: certificate revocation lists ([`crl()`]).
//! - [`vault`]: private keys at rest ([`KeyVault`], [`load_or_create_secret`]).
//! - [`error`]: the one error type, [`PkiError`].

pub mod certificate;
pub mod crl;
pub mod error;
pub mod extension;
pub mod issuance;
pub mod key;
pub mod passphrase;
pub mod serial;
pub mod subject;
pub mod vault;

pub use certificate::{
    ClientCertificate, Parsed, import, issuer_key, parse_certificate, subject_key, verify_client,
    verify_signed_by,
};
pub use crl::{Revoked, crl};
pub use error::PkiError;
pub use extension::Extension;
pub use issuance::{
    Authority, DEFAULT_CA_VALIDITY_DAYS, DEFAULT_CERT_VALIDITY_DAYS, Issued, Request, Validity,
    create_authority, issue,
};
pub use key::{Curve, Digest, KeySpec};
pub use passphrase::encrypt_private_key;
pub use serial::SerialNumber;
pub use subject::Subject;
pub use vault::{KeyVault, load_or_create_secret};
