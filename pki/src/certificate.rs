//! Reading and checking certificates: import, "is this signed by that CA", client certificates.
//!
//! django-x509's import (`_validate_pem` + `_import`): the certificate must parse ("Invalid
//! certificate"); the private key must load with the passphrase ("Incorrect Passphrase" when
//! it is encrypted and the passphrase is missing or wrong, "Invalid private key" otherwise);
//! only RSA and EC keys are accepted; key length, digest, validity, subject fields and serial
//! number are then read from the certificate. For an end-entity certificate it also checks
//! (`_verify_ca`) that the issuer matches the CA subject, that it is currently valid, that the
//! CA has basicConstraints CA:TRUE, and the signature. django-x509 does not itself compare the
//! private key with the certificate; this crate does ([`PkiError::KeyMismatch`]), because a
//! mismatched pair cannot work for TLS or signing.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::extension::Extension;
use crate::issuance::{Validity, is_ca};
use crate::key::{Curve, Digest, KeySpec, PrivateKey};
use crate::{PkiError, SerialNumber, Subject};

/// What an imported (or stored) certificate says, to fill the record's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The subject fields.
    pub subject: Subject,
    /// notBefore / notAfter.
    pub validity: Validity,
    /// The serial number.
    pub serial: SerialNumber,
    /// The certificate's key type and size.
    pub key: KeySpec,
    /// The digest of its signature.
    pub digest: Digest,
    /// The extensions OpenWISP's `extensions` JSON can express.
    pub extensions: Vec<Extension>,
    /// Whether basicConstraints says CA:TRUE.
    pub is_ca: bool,
}

/// The DER of a PEM certificate.
pub(crate) fn pem_to_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(pem_text.trim())
        .map_err(|_| PkiError::InvalidCertificate("it is not in PEM format.".into()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::InvalidCertificate(format!(
            "a PEM block of type \"{}\" is not a certificate.",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_der_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::InvalidCertificate(
            "there are bytes after the certificate.".into(),
        )),
        Err(e) => Err(PkiError::InvalidCertificate(format!(
            "it is not a valid X.509 certificate ({e})."
        ))),
    }
}

fn unsupported_key() -> PkiError {
    PkiError::Unsupported(
        "Unsupported key type in certificate. Only RSA and EC keys are supported.".into(),
    )
}

fn key_spec(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeySpec, PkiError> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = u16::try_from(rsa.key_size()).map_err(|_| unsupported_key())?;
            Ok(KeySpec::Rsa { bits })
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .and_then(|oid| Curve::from_oid(&oid.to_id_string()))
                .ok_or_else(|| {
                    PkiError::Unsupported(
                        "Unsupported EC curve: only P-256, P-384 and P-521 are supported.".into(),
                    )
                })?;
            Ok(KeySpec::Ec { curve })
        }
        _ => Err(unsupported_key()),
    }
}

fn signature_digest(cert: &X509Certificate<'_>) -> Result<Digest, PkiError> {
    let digest = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => Digest::Sha1,
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" => Digest::Sha224,
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => Digest::Sha256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Digest::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Digest::Sha512,
        other => {
            return Err(PkiError::Unsupported(format!(
                "Unsupported signature algorithm in certificate: {other}"
            )));
        }
    };
    Ok(digest)
}

fn timestamp(time: x509_parser::time::ASN1Time) -> OffsetDateTime {
    time.to_datetime()
}

fn parsed(cert: &X509Certificate<'_>) -> Result<Parsed, PkiError> {
    Ok(Parsed {
        subject: Subject::from_certificate(cert),
        validity: Validity {
            start: timestamp(cert.validity().not_before),
            end: timestamp(cert.validity().not_after),
        },
        serial: SerialNumber::from_be_bytes(cert.raw_serial()),
        key: key_spec(cert.public_key())?,
        digest: signature_digest(cert)?,
        extensions: Extension::from_certificate(cert),
        is_ca: is_ca(cert),
    })
}

/// Reads what a PEM certificate says, to fill a record's fields.
pub fn parse_certificate(pem: &str) -> Result<Parsed, PkiError> {
    let der = pem_to_der(pem)?;
    parsed(&parse_der_certificate(&der)?)
}

/// Import: parses both, decrypts the key with `passphrase` if given, checks the key matches the
/// certificate's public key; returns the parsed fields and the key as unencrypted PKCS#8 PEM.
pub fn import(
    certificate_pem: &str,
    private_key_pem: &str,
    passphrase: Option<&str>,
) -> Result<(Parsed, String), PkiError> {
    let der = pem_to_der(certificate_pem)?;
    let cert = parse_der_certificate(&der)?;
    let fields = parsed(&cert)?;
    if let KeySpec::Rsa { bits } = fields.key
        && bits < 2048
    {
        return Err(PkiError::Unsupported(format!(
            "{bits}-bit RSA keys are not supported; import a key of at least 2048 bits."
        )));
    }
    let key = PrivateKey::from_pem(private_key_pem, passphrase.filter(|p| !p.is_empty()))?;
    if key.spec != fields.key
        || key.public.as_slice() != cert.public_key().subject_public_key.data.as_ref()
    {
        return Err(PkiError::KeyMismatch);
    }
    Ok((fields, key.to_pem()))
}

/// Whether `certificate_pem` is signed by `ca_certificate_pem` (signature + issuer name).
pub fn verify_signed_by(certificate_pem: &str, ca_certificate_pem: &str) -> Result<(), PkiError> {
    let der = pem_to_der(certificate_pem)?;
    let cert = parse_der_certificate(&der)?;
    let ca_der = pem_to_der(ca_certificate_pem)?;
    let ca = parse_der_certificate(&ca_der)?;
    check_signed_by(&cert, &ca)
}

fn check_signed_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> Result<(), PkiError> {
    if !crate::subject::same_name(cert.issuer(), ca.subject()) {
        return Err(PkiError::NotSignedBy);
    }
    verify_signature(cert, ca.public_key())
}

/// Checks the certificate's signature with the issuer's public key.
pub(crate) fn verify_signature(
    cert: &X509Certificate<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
) -> Result<(), PkiError> {
    let digest = signature_digest(cert).map_err(|_| PkiError::NotSignedBy)?;
    let algorithm: &'static dyn VerificationAlgorithm = match (
        key_spec(issuer_key).map_err(|_| PkiError::NotSignedBy)?,
        digest,
    ) {
        (KeySpec::Rsa { .. }, Digest::Sha1) => {
            &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        (KeySpec::Rsa { .. }, Digest::Sha256) => {
            &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
        }
        (KeySpec::Rsa { .. }, Digest::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (KeySpec::Rsa { .. }, Digest::Sha512) => {
            &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
        }
        (KeySpec::Ec { curve: Curve::P256 }, Digest::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
        (KeySpec::Ec { curve: Curve::P256 }, Digest::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::Ec { curve: Curve::P256 }, Digest::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
        (KeySpec::Ec { curve: Curve::P256 }, Digest::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
        (KeySpec::Ec { curve: Curve::P384 }, Digest::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
        (KeySpec::Ec { curve: Curve::P384 }, Digest::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::Ec { curve: Curve::P384 }, Digest::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha1) => &signature::ECDSA_P521_SHA1_ASN1,
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha224) => &signature::ECDSA_P521_SHA224_ASN1,
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha256) => &signature::ECDSA_P521_SHA256_ASN1,
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha384) => &signature::ECDSA_P521_SHA384_ASN1,
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha512) => &signature::ECDSA_P521_SHA512_ASN1,
        _ => return Err(PkiError::NotSignedBy),
    };
    // The outer and inner algorithm identifiers must agree (RFC 5280 4.1.1.2).
    if cert.signature_algorithm.algorithm != cert.tbs_certificate.signature.algorithm {
        return Err(PkiError::NotSignedBy);
    }
    UnparsedPublicKey::new(algorithm, issuer_key.subject_public_key.data.as_ref())
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .map_err(|_| PkiError::NotSignedBy)
}

/// What a login needs from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The serial number, to check against the CA's revoked serials.
    pub serial: SerialNumber,
    /// The subject CN ("" if absent).
    pub common_name: String,
    /// notAfter, to end the session when it expires.
    pub not_after: OffsetDateTime,
}

fn check_time(cert: &X509Certificate<'_>, now: OffsetDateTime) -> Result<(), PkiError> {
    if now < timestamp(cert.validity().not_before) {
        return Err(PkiError::NotYetValid);
    }
    if now > timestamp(cert.validity().not_after) {
        return Err(PkiError::Expired);
    }
    Ok(())
}

/// A client certificate (DER, as presented in a TLS handshake) checked against one CA:
/// signature by the CA, issuer name = CA subject, `now` inside both validities, CA is a CA.
/// Returns what login needs. Revocation is the caller's (it keeps the revoked serials).
pub fn verify_client(
    leaf_der: &[u8],
    ca_certificate_pem: &str,
    now: OffsetDateTime,
) -> Result<ClientCertificate, PkiError> {
    let leaf = parse_der_certificate(leaf_der)?;
    let ca_der = pem_to_der(ca_certificate_pem)?;
    let ca = parse_der_certificate(&ca_der)?;
    if !is_ca(&ca) {
        return Err(PkiError::NotACa);
    }
    check_signed_by(&leaf, &ca)?;
    check_time(&ca, now)?;
    check_time(&leaf, now)?;
    Ok(ClientCertificate {
        serial: SerialNumber::from_be_bytes(leaf.raw_serial()),
        common_name: Subject::from_certificate(&leaf).common_name,
        not_after: timestamp(leaf.validity().not_after),
    })
}

/// The raw DER of a DER certificate's issuer Name, so the caller can find the candidate CA(s)
/// of a presented certificate by comparing with [`subject_key`] of its CAs.
pub fn issuer_key(leaf_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    Ok(parse_der_certificate(leaf_der)?.issuer().as_raw().to_vec())
}

/// The raw DER of a PEM certificate's subject Name (the lookup key of a CA).
pub fn subject_key(certificate_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = pem_to_der(certificate_pem)?;
    Ok(parse_der_certificate(&der)?.subject().as_raw().to_vec())
}
