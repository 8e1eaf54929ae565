//! Making certificates: self-signed CAs and end-entity certificates signed by a CA.
//!
//! What django-x509 does, and so this module:
//! - `validity_start` defaults to yesterday at 00:00 (naive, so "valid in every time zone");
//!   `validity_end` defaults to now + 3650 days for a CA and now + 365 days for a certificate
//!   (`DJANGO_X509_DEFAULT_CA_VALIDITY` / `_CERT_VALIDITY`). See [`Validity::default_for_ca`]
//!   and [`Validity::default_for_certificate`].
//! - `serial_number` defaults to `uuid.uuid4().int` ([`SerialNumber::random`]).
//! - A new key pair is generated for every certificate, CA or not; RSA keys use exponent 65537.
//!   The signature uses the certificate's own `digest` with the signer's key (the CA's key for
//!   an end-entity certificate).
//! - Default extensions: see [`crate::extension`]; the user's `extensions` come after them.
//! - Renewing (`renew()`) is generation again with a new serial number, a new key pair and a new
//!   `validity_end` (now + the default validity), keeping `validity_start`, subject, key length,
//!   digest and extensions; renewing a CA also renews every certificate it issued. The caller
//!   does that by building a new [`Request`] and calling [`create_authority`] / [`issue`].
//! - The private key is returned unencrypted; django-x509 encrypts it with `passphrase` when one
//!   is set (see [`crate::encrypt_private_key`]).

use rcgen::{CertificateParams, CustomExtension, IsCa, Issuer, KeyPair, RsaKeySize};
use time::{Duration, OffsetDateTime, Time};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use crate::certificate::{parse_der_certificate, pem_to_der};
use crate::extension::Extension;
use crate::key::{Digest, KeySpec, PrivateKey, signature_algorithm};
use crate::{PkiError, SerialNumber, Subject};

const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];
const AUTHORITY_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 35];

/// django-x509's default CA validity in days.
pub const DEFAULT_CA_VALIDITY_DAYS: i64 = 3650;
/// django-x509's default certificate validity in days.
pub const DEFAULT_CERT_VALIDITY_DAYS: i64 = 365;

/// When a certificate is valid (notBefore, notAfter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub start: OffsetDateTime,
    /// notAfter.
    pub end: OffsetDateTime,
}

impl Validity {
    /// django-x509's default `validity_start`: yesterday at 00:00 UTC, so a new certificate is
    /// already valid wherever the device's clock is.
    pub fn default_start(now: OffsetDateTime) -> OffsetDateTime {
        let yesterday = now.to_offset(time::UtcOffset::UTC) - Duration::days(1);
        yesterday.replace_time(Time::MIDNIGHT)
    }

    /// The default validity of a new CA: yesterday 00:00 until now + 3650 days.
    pub fn default_for_ca(now: OffsetDateTime) -> Validity {
        Validity {
            start: Validity::default_start(now),
            end: now + Duration::days(DEFAULT_CA_VALIDITY_DAYS),
        }
    }

    /// The default validity of a new certificate: yesterday 00:00 until now + 365 days.
    pub fn default_for_certificate(now: OffsetDateTime) -> Validity {
        Validity {
            start: Validity::default_start(now),
            end: now + Duration::days(DEFAULT_CERT_VALIDITY_DAYS),
        }
    }
}

/// Everything needed to make one certificate (CA or end-entity).
#[derive(Debug, Clone)]
pub struct Request {
    /// The key pair to generate.
    pub key: KeySpec,
    /// The digest of the signature.
    pub digest: Digest,
    /// notBefore / notAfter.
    pub validity: Validity,
    /// The subject.
    pub subject: Subject,
    /// The serial number.
    pub serial: SerialNumber,
    /// Extra extensions after the defaults.
    pub extensions: Vec<Extension>,
}

/// A new certificate and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key as unencrypted PKCS#8 PEM.
    pub private_key_pem: String,
}

/// A CA that signs: its certificate and its unencrypted private key (PEM).
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    /// The CA certificate, PEM.
    pub certificate_pem: &'a str,
    /// The CA private key, PEM (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub private_key_pem: &'a str,
}

/// A self-signed CA certificate with a new key pair.
pub fn create_authority(req: &Request) -> Result<Issued, PkiError> {
    let key = generate(req.key, req.digest)?;
    let ski = key_identifier(key.public_key_raw());
    let params = params(req, true, &ski, &ski)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Crypto(format!("cannot sign the CA certificate: {e}")))?;
    Ok(Issued {
        certificate_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
    })
}

/// An end-entity certificate with a new key pair, signed by `issuer`.
pub fn issue(req: &Request, issuer: &Authority<'_>) -> Result<Issued, PkiError> {
    let signer = Signer::load(issuer, req.digest)?;
    let key = generate(req.key, req.digest)?;
    let ski = key_identifier(key.public_key_raw());
    let params = params(req, false, &ski, &signer.key_identifier)?;
    let cert = params
        .signed_by(&key, &signer.issuer)
        .map_err(|e| PkiError::Crypto(format!("cannot sign the certificate: {e}")))?;
    Ok(Issued {
        certificate_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
    })
}

/// A CA loaded for signing: the rcgen issuer and the CA's subject key identifier.
pub(crate) struct Signer {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) key_identifier: Vec<u8>,
}

impl Signer {
    /// Loads a CA for signing with `digest`: checks it is a CA and that the key is its key.
    pub(crate) fn load(authority: &Authority<'_>, digest: Digest) -> Result<Signer, PkiError> {
        let der = pem_to_der(authority.certificate_pem)?;
        let cert = parse_der_certificate(&der)?;
        if !is_ca(&cert) {
            return Err(PkiError::NotACa);
        }
        let private = PrivateKey::from_pem(authority.private_key_pem, None)?;
        if private.public.as_slice() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch);
        }
        let key_identifier = subject_key_identifier(&cert);
        let signing_key = private.signing_key(digest)?;
        let issuer =
            Issuer::from_ca_cert_der(&der.as_slice().into(), signing_key).map_err(|e| {
                PkiError::Unsupported(format!(
                    "This CA certificate cannot be used for signing: {e}"
                ))
            })?;
        Ok(Signer {
            issuer,
            key_identifier,
        })
    }
}

/// Whether a certificate says it is a CA (basicConstraints CA:TRUE).
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

/// The certificate's subjectKeyIdentifier, or the SHA-1 of its public key if it has none
/// (what `AuthorityKeyIdentifier.from_issuer_public_key` would use).
pub(crate) fn subject_key_identifier(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| key_identifier(cert.public_key().subject_public_key.data.as_ref()))
}

/// RFC 5280 method 1: SHA-1 of the subjectPublicKey bits (what `cryptography` uses).
fn key_identifier(public_key_bits: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        public_key_bits,
    )
    .as_ref()
    .to_vec()
}

fn generate(spec: KeySpec, digest: Digest) -> Result<KeyPair, PkiError> {
    let algorithm = signature_algorithm(spec, digest)?;
    let generated = match spec {
        KeySpec::Rsa { bits } => {
            let size = match bits {
                2048 => RsaKeySize::_2048,
                3072 => RsaKeySize::_3072,
                4096 => RsaKeySize::_4096,
                other => {
                    return Err(PkiError::Unsupported(format!(
                        "{other}-bit RSA keys cannot be generated; choose 2048 or 4096 (RSA) or an ECDSA key length."
                    )));
                }
            };
            KeyPair::generate_rsa_for(algorithm, size)
        }
        KeySpec::Ec { .. } => KeyPair::generate_for(algorithm),
    };
    generated.map_err(|e| PkiError::Crypto(format!("key generation failed: {e}")))
}

fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(critical);
    ext
}

fn params(
    req: &Request,
    ca: bool,
    subject_key_id: &[u8],
    authority_key_id: &[u8],
) -> Result<CertificateParams, PkiError> {
    if req.validity.end <= req.validity.start {
        return Err(PkiError::invalid(
            "validity_end",
            "The validity end must be after the validity start.",
        ));
    }
    let mut params = CertificateParams::default();
    params.not_before = req.validity.start;
    params.not_after = req.validity.end;
    params.serial_number = Some(req.serial.to_rcgen());
    params.distinguished_name = req.subject.to_distinguished_name()?;
    // rcgen writes no extensions of its own: criticality and contents follow django-x509.
    params.is_ca = IsCa::NoCa;
    params.key_usages = Vec::new();
    params.use_authority_key_identifier_extension = false;

    let basic_constraints = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if ca {
                w.next().write_bool(true);
                w.next().write_u8(0);
            }
        })
    });
    // keyUsage bits: digitalSignature(0) keyEncipherment(2) | keyCertSign(5) cRLSign(6).
    let key_usage = if ca {
        yasna::construct_der(|w| w.write_bitvec_bytes(&[0b0000_0110], 7))
    } else {
        yasna::construct_der(|w| w.write_bitvec_bytes(&[0b1010_0000], 3))
    };
    let ski = yasna::construct_der(|w| w.write_bytes(subject_key_id));
    let aki = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_tagged_implicit(yasna::Tag::context(0), |w| w.write_bytes(authority_key_id))
        })
    });
    let mut extensions = vec![
        extension(BASIC_CONSTRAINTS, ca, basic_constraints),
        extension(KEY_USAGE, ca, key_usage),
        extension(SUBJECT_KEY_IDENTIFIER, false, ski),
        extension(AUTHORITY_KEY_IDENTIFIER, false, aki),
    ];
    for requested in &req.extensions {
        extensions.push(requested.to_custom()?);
    }
    params.custom_extensions = extensions;
    Ok(params)
}
