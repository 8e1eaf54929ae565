//! Key types, digests, and loading private keys.
//!
//! django-x509's `key_length` choices are `"256"`, `"384"`, `"521"` (ECDSA on P-256, P-384,
//! P-521) and `"1024"`, `"2048"`, `"4096"` (RSA, public exponent 65537); the default is
//! `"2048"`. `digest` is one of `sha1`, `sha224`, `sha256`, `sha384`, `sha512`, default `sha256`;
//! on import it is read back from the signature algorithm (`sha256WithRSAEncryption` and
//! `ecdsa-with-SHA256` both become `sha256`).
//!
//! What this server can *produce* is narrower than the choices (aws-lc-rs through rcgen):
//! - RSA 1024 keys cannot be generated (aws-lc only generates 2048..8192-bit keys, and 1024-bit
//!   RSA is no longer considered safe); RSA private keys below 2048 bits cannot be loaded either,
//!   so such a CA cannot sign. Certificates with 1024-bit keys can still be parsed and verified.
//! - SHA-1 and SHA-224 signatures cannot be made; with ECDSA the digest must match the curve
//!   (P-256 + sha256, P-384 + sha384, P-521 + sha256/sha384/sha512). Other combinations are
//!   refused with [`PkiError::Unsupported`].
//!
//! Private keys are accepted as PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`, what
//! django-x509 writes for RSA) or SEC1 (`EC PRIVATE KEY`), plain or encrypted (see
//! [`crate::passphrase`]), and always handed back as unencrypted PKCS#8.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use crate::PkiError;

/// An elliptic curve django-x509 offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (`key_length` "256").
    P256,
    /// NIST P-384 (`key_length` "384").
    P384,
    /// NIST P-521 (`key_length` "521").
    P521,
}

impl Curve {
    /// The curve's size in bits, which is what OpenWISP stores as `key_length`.
    pub fn bits(self) -> u16 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    pub(crate) fn from_oid(oid: &str) -> Option<Curve> {
        match oid {
            "1.2.840.10045.3.1.7" => Some(Curve::P256),
            "1.3.132.0.34" => Some(Curve::P384),
            "1.3.132.0.35" => Some(Curve::P521),
            _ => None,
        }
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }
}

/// The kind and size of a key pair: what OpenWISP calls `key_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// RSA with the modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: u16,
    },
    /// ECDSA on a named curve.
    Ec {
        /// The curve.
        curve: Curve,
    },
}

impl KeySpec {
    /// Parses OpenWISP's `key_length` choices ("256", "384", "521", "1024", "2048", "4096").
    pub fn parse(key_length: &str) -> Result<KeySpec, PkiError> {
        match key_length.trim() {
            "256" => Ok(KeySpec::Ec { curve: Curve::P256 }),
            "384" => Ok(KeySpec::Ec { curve: Curve::P384 }),
            "521" => Ok(KeySpec::Ec { curve: Curve::P521 }),
            "1024" => Ok(KeySpec::Rsa { bits: 1024 }),
            "2048" => Ok(KeySpec::Rsa { bits: 2048 }),
            "4096" => Ok(KeySpec::Rsa { bits: 4096 }),
            other => Err(PkiError::invalid(
                "key_length",
                format!("Unsupported key length: {other}"),
            )),
        }
    }

    /// OpenWISP's `key_length` string for this key ("2048", "256", …).
    pub fn key_length(&self) -> String {
        match self {
            KeySpec::Rsa { bits } => bits.to_string(),
            KeySpec::Ec { curve } => curve.bits().to_string(),
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa { bits } => write!(f, "{bits}-bit RSA"),
            KeySpec::Ec { curve } => write!(f, "{}-bit ECDSA", curve.bits()),
        }
    }
}

/// The hash of a certificate's signature: OpenWISP's `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    /// SHA-1 (readable, not producible).
    Sha1,
    /// SHA-224 (readable, not producible).
    Sha224,
    /// SHA-256, OpenWISP's default.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// Parses OpenWISP's `digest` values; like django-x509 it also accepts the OpenSSL names
    /// (`sha256WithRSAEncryption`, `ecdsa-with-SHA256`) older records hold.
    pub fn parse(digest: &str) -> Result<Digest, PkiError> {
        let name = digest
            .trim()
            .to_ascii_lowercase()
            .replace("withrsaencryption", "")
            .replace("ecdsa-with-", "");
        match name.as_str() {
            "sha1" => Ok(Digest::Sha1),
            "sha224" => Ok(Digest::Sha224),
            "sha256" => Ok(Digest::Sha256),
            "sha384" => Ok(Digest::Sha384),
            "sha512" => Ok(Digest::Sha512),
            _ => Err(PkiError::Unsupported(format!(
                "Unsupported digest algorithm: {digest}"
            ))),
        }
    }

    /// OpenWISP's name for the digest ("sha256").
    pub fn as_str(&self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha224 => "sha224",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rcgen signature algorithm for a signing key of `key` with `digest`, or why not.
pub(crate) fn signature_algorithm(
    key: KeySpec,
    digest: Digest,
) -> Result<&'static rcgen::SignatureAlgorithm, PkiError> {
    let algorithm = match (key, digest) {
        (KeySpec::Rsa { .. }, Digest::Sha256) => Some(&rcgen::PKCS_RSA_SHA256),
        (KeySpec::Rsa { .. }, Digest::Sha384) => Some(&rcgen::PKCS_RSA_SHA384),
        (KeySpec::Rsa { .. }, Digest::Sha512) => Some(&rcgen::PKCS_RSA_SHA512),
        (KeySpec::Ec { curve: Curve::P256 }, Digest::Sha256) => {
            Some(&rcgen::PKCS_ECDSA_P256_SHA256)
        }
        (KeySpec::Ec { curve: Curve::P384 }, Digest::Sha384) => {
            Some(&rcgen::PKCS_ECDSA_P384_SHA384)
        }
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha256) => {
            Some(&rcgen::PKCS_ECDSA_P521_SHA256)
        }
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha384) => {
            Some(&rcgen::PKCS_ECDSA_P521_SHA384)
        }
        (KeySpec::Ec { curve: Curve::P521 }, Digest::Sha512) => {
            Some(&rcgen::PKCS_ECDSA_P521_SHA512)
        }
        _ => None,
    };
    algorithm.ok_or_else(|| {
        let choices = match key {
            KeySpec::Rsa { .. } => "sha256, sha384 or sha512",
            KeySpec::Ec { curve: Curve::P256 } => "sha256",
            KeySpec::Ec { curve: Curve::P384 } => "sha384",
            KeySpec::Ec { curve: Curve::P521 } => "sha256, sha384 or sha512",
        };
        PkiError::Unsupported(format!(
            "Signing with a {key} key and the {digest} digest is not supported; choose {choices}."
        ))
    })
}

/// The digest used for CRLs: django-x509 always signs them with SHA-256; P-384 keys can only
/// sign with SHA-384 here.
pub(crate) fn crl_digest(key: KeySpec) -> Digest {
    match key {
        KeySpec::Ec { curve: Curve::P384 } => Digest::Sha384,
        _ => Digest::Sha256,
    }
}

/// A private key read from any accepted form, normalized to PKCS#8.
pub(crate) struct PrivateKey {
    /// Unencrypted PKCS#8 DER.
    pub(crate) pkcs8: Vec<u8>,
    /// Its kind and size.
    pub(crate) spec: KeySpec,
    /// The public key as it appears in a certificate's subjectPublicKey bit string (PKCS#1
    /// RSAPublicKey for RSA, the uncompressed point for EC).
    pub(crate) public: Vec<u8>,
}

impl PrivateKey {
    /// Reads a PEM private key, decrypting it with `passphrase` if it is encrypted.
    pub(crate) fn from_pem(
        pem_text: &str,
        passphrase: Option<&str>,
    ) -> Result<PrivateKey, PkiError> {
        let block = pem::parse(pem_text.trim())
            .map_err(|_| PkiError::InvalidKey("the private key is not in PEM format.".into()))?;
        let der = crate::passphrase::decrypt_pem(&block, passphrase)?;
        let encrypted = crate::passphrase::is_encrypted(&block);
        PrivateKey::from_der(&der).map_err(|e| match e {
            // A wrong passphrase can pass the padding check and yield garbage.
            PkiError::InvalidKey(_) if encrypted => PkiError::WrongPassphrase,
            other => other,
        })
    }

    /// Reads a DER private key in PKCS#8, PKCS#1 or SEC1 form.
    pub(crate) fn from_der(der: &[u8]) -> Result<PrivateKey, PkiError> {
        if let Ok(rsa) = RsaKeyPair::from_pkcs8(der).or_else(|_| RsaKeyPair::from_der(der)) {
            let pkcs8: Pkcs8V1Der<'static> = rsa
                .as_der()
                .map_err(|_| PkiError::Crypto("cannot encode the RSA key as PKCS#8".into()))?;
            let bits = u16::try_from(rsa.public_modulus_len() * 8).map_err(|_| {
                PkiError::Unsupported("RSA keys longer than 8192 bits are not supported.".into())
            })?;
            return Ok(PrivateKey {
                pkcs8: pkcs8.as_ref().to_vec(),
                spec: KeySpec::Rsa { bits },
                public: rsa.public_key().as_ref().to_vec(),
            });
        }
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            if let Ok(ec) = EcdsaKeyPair::from_private_key_der(curve.signing(), der) {
                let pkcs8 = ec
                    .to_pkcs8v1()
                    .map_err(|_| PkiError::Crypto("cannot encode the EC key as PKCS#8".into()))?;
                return Ok(PrivateKey {
                    pkcs8: pkcs8.as_ref().to_vec(),
                    spec: KeySpec::Ec { curve },
                    public: ec.public_key().as_ref().to_vec(),
                });
            }
        }
        Err(PkiError::InvalidKey(
            "it is not an RSA (2048 to 8192 bits) or P-256/P-384/P-521 EC private key.".into(),
        ))
    }

    /// The key as unencrypted PKCS#8 PEM.
    pub(crate) fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// An rcgen signing key for this key with `digest`.
    pub(crate) fn signing_key(&self, digest: Digest) -> Result<rcgen::KeyPair, PkiError> {
        let algorithm = signature_algorithm(self.spec, digest)?;
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&self.pkcs8.as_slice().into(), algorithm)
            .map_err(|e| PkiError::Crypto(format!("cannot load the signing key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_round_trip() {
        for text in ["256", "384", "521", "1024", "2048", "4096"] {
            assert_eq!(KeySpec::parse(text).unwrap().key_length(), text);
        }
        assert!(KeySpec::parse("512").is_err());
    }

    #[test]
    fn digests_accept_openssl_names() {
        assert_eq!(
            Digest::parse("sha256WithRSAEncryption").unwrap(),
            Digest::Sha256
        );
        assert_eq!(Digest::parse("ecdsa-with-SHA384").unwrap(), Digest::Sha384);
        assert!(Digest::parse("md5").is_err());
    }

    #[test]
    fn digests_that_cannot_sign_are_refused() {
        let p256 = KeySpec::Ec { curve: Curve::P256 };
        assert!(signature_algorithm(p256, Digest::Sha256).is_ok());
        assert!(matches!(
            signature_algorithm(p256, Digest::Sha512),
            Err(PkiError::Unsupported(_))
        ));
        assert!(signature_algorithm(KeySpec::Rsa { bits: 2048 }, Digest::Sha1).is_err());
    }
}
