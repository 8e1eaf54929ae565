//! Passphrase-protected private keys.
//!
//! django-x509 keeps a `passphrase` next to the key and, when one is set, stores the private key
//! encrypted with it (`BestAvailableEncryption`): EC keys as encrypted PKCS#8
//! (`ENCRYPTED PRIVATE KEY`, PBES2), RSA keys in the legacy OpenSSL form (`RSA PRIVATE KEY` with
//! `Proc-Type: 4,ENCRYPTED` and `DEK-Info: AES-256-CBC,<iv>`). Importing tells a wrong or missing
//! passphrase ("Incorrect Passphrase") apart from an unreadable key ("Invalid private key").
//!
//! Both forms are read here with aws-lc-rs primitives (PBKDF2, AES-CBC) and yasna for the DER;
//! keys are written as PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), which OpenSSL and Python's
//! `cryptography` read. DES-encrypted keys and scrypt are refused as unsupported.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::pbkdf2;
use md5::{Digest as _, Md5};
use yasna::models::ObjectIdentifier;

use crate::PkiError;
use crate::key::PrivateKey;

const PBES2: &[u64] = &[1, 2, 840, 113549, 1, 5, 13];
const PBKDF2: &[u64] = &[1, 2, 840, 113549, 1, 5, 12];
const HMAC_SHA1: &[u64] = &[1, 2, 840, 113549, 2, 7];
const HMAC_SHA256: &[u64] = &[1, 2, 840, 113549, 2, 9];
const HMAC_SHA384: &[u64] = &[1, 2, 840, 113549, 2, 10];
const HMAC_SHA512: &[u64] = &[1, 2, 840, 113549, 2, 11];
const AES128_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 2];
const AES192_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 22];
const AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];

/// PBKDF2 rounds for keys this server encrypts (OpenSSL 3 uses 2048; more costs little here
/// because it is paid once per download or import).
const ITERATIONS: u32 = 100_000;

/// The private key PEM encrypted with a passphrase (what OpenWISP returns when one is set), as
/// encrypted PKCS#8 so every tool can open it.
pub fn encrypt_private_key(private_key_pem: &str, passphrase: &str) -> Result<String, PkiError> {
    let key = PrivateKey::from_pem(private_key_pem, None)?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| PkiError::Crypto("no randomness".into()))?;
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| PkiError::Crypto("no randomness".into()))?;
    let mut derived = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN),
        &salt,
        passphrase.as_bytes(),
        &mut derived,
    );
    let cipher_key = UnboundCipherKey::new(&AES_256, &derived)
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .map_err(|_| PkiError::Crypto("cannot set up AES-256-CBC".into()))?;
    let mut data = key.pkcs8.clone();
    cipher_key
        .less_safe_encrypt(&mut data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| PkiError::Crypto("AES-256-CBC encryption failed".into()))?;
    let der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(PBES2));
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(PBKDF2));
                        w.next().write_sequence(|w| {
                            w.next().write_bytes(&salt);
                            w.next().write_u32(ITERATIONS);
                            w.next().write_sequence(|w| {
                                w.next()
                                    .write_oid(&ObjectIdentifier::from_slice(HMAC_SHA256));
                                w.next().write_null();
                            });
                        });
                    });
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(AES256_CBC));
                        w.next().write_bytes(&iv);
                    });
                });
            });
            w.next().write_bytes(&data);
        })
    });
    Ok(pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", der)))
}

/// Whether a PEM block holds an encrypted key.
pub(crate) fn is_encrypted(block: &pem::Pem) -> bool {
    block.tag() == "ENCRYPTED PRIVATE KEY"
        || block
            .headers()
            .get("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"))
}

/// The plain DER of a private key PEM block, decrypted with `passphrase` when it is encrypted.
/// A passphrase given for a plain key is ignored.
pub(crate) fn decrypt_pem(block: &pem::Pem, passphrase: Option<&str>) -> Result<Vec<u8>, PkiError> {
    match block.tag() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" if !is_encrypted(block) => {
            Ok(block.contents().to_vec())
        }
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            let passphrase = passphrase.ok_or(PkiError::WrongPassphrase)?;
            decrypt_legacy(block, passphrase)
        }
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or(PkiError::WrongPassphrase)?;
            decrypt_pkcs8(block.contents(), passphrase)
        }
        other => Err(PkiError::InvalidKey(format!(
            "a PEM block of type \"{other}\" is not a private key."
        ))),
    }
}

fn aes_for(key_len: usize) -> Option<&'static aws_lc_rs::cipher::Algorithm> {
    match key_len {
        16 => Some(&AES_128),
        24 => Some(&AES_192),
        32 => Some(&AES_256),
        _ => None,
    }
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, PkiError> {
    let algorithm =
        aes_for(key.len()).ok_or_else(|| PkiError::Crypto("bad AES key length".into()))?;
    let iv: [u8; 16] = iv
        .try_into()
        .map_err(|_| PkiError::InvalidKey("the encryption IV is malformed.".into()))?;
    let cipher_key = UnboundCipherKey::new(algorithm, key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| PkiError::Crypto("cannot set up AES-CBC".into()))?;
    let mut buffer = data.to_vec();
    let plain = cipher_key
        .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| PkiError::WrongPassphrase)?;
    Ok(plain.to_vec())
}

/// OpenSSL's traditional encrypted PEM: key = EVP_BytesToKey(MD5, passphrase, iv[..8], 1).
fn decrypt_legacy(block: &pem::Pem, passphrase: &str) -> Result<Vec<u8>, PkiError> {
    let dek = block
        .headers()
        .get("DEK-Info")
        .ok_or_else(|| PkiError::InvalidKey("the DEK-Info header is missing.".into()))?;
    let (cipher, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| PkiError::InvalidKey("the DEK-Info header is malformed.".into()))?;
    let key_len = match cipher.trim().to_ascii_uppercase().as_str() {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        other => {
            return Err(PkiError::Unsupported(format!(
                "Private keys encrypted with {other} are not supported; re-encrypt the key with AES."
            )));
        }
    };
    let iv = hex::decode(iv_hex.trim())
        .map_err(|_| PkiError::InvalidKey("the DEK-Info header is malformed.".into()))?;
    if iv.len() < 8 {
        return Err(PkiError::InvalidKey(
            "the DEK-Info header is malformed.".into(),
        ));
    }
    let mut key = Vec::with_capacity(key_len + 16);
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < key_len {
        let mut hasher = Md5::new();
        hasher.update(&previous);
        hasher.update(passphrase.as_bytes());
        hasher.update(&iv[..8]);
        previous = hasher.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(key_len);
    cbc_decrypt(&key, &iv, block.contents())
}

struct Pbes2 {
    salt: Vec<u8>,
    iterations: u64,
    prf: Vec<u64>,
    cipher: Vec<u64>,
    iv: Vec<u8>,
    data: Vec<u8>,
}

fn read_algorithm_oid(der: &[u8]) -> Result<Vec<u64>, yasna::ASN1Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let oid = r.next().read_oid()?;
            let _ = r.read_optional(|r| r.read_der())?;
            Ok(oid.components().to_vec())
        })
    })
}

fn parse_pbes2(der: &[u8]) -> Result<Pbes2, yasna::ASN1Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let (salt, iterations, prf, cipher, iv) = r.next().read_sequence(|r| {
                let scheme = r.next().read_oid()?;
                if scheme.components().as_slice() != PBES2 {
                    return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                }
                r.next().read_sequence(|r| {
                    let (salt, iterations, prf) = r.next().read_sequence(|r| {
                        let kdf = r.next().read_oid()?;
                        if kdf.components().as_slice() != PBKDF2 {
                            return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                        }
                        r.next().read_sequence(|r| {
                            let salt = r.next().read_bytes()?;
                            let iterations = r.next().read_u64()?;
                            let mut prf = HMAC_SHA1.to_vec();
                            // Optional keyLength (INTEGER) then optional prf (SEQUENCE).
                            while let Some(element) = r.read_optional(|r| r.read_der())? {
                                if element.first() == Some(&0x30) {
                                    prf = read_algorithm_oid(&element)?;
                                }
                            }
                            Ok((salt, iterations, prf))
                        })
                    })?;
                    let (cipher, iv) = r.next().read_sequence(|r| {
                        let cipher = r.next().read_oid()?;
                        let iv = r.next().read_bytes()?;
                        Ok((cipher.components().to_vec(), iv))
                    })?;
                    Ok((salt, iterations, prf, cipher, iv))
                })
            })?;
            let data = r.next().read_bytes()?;
            Ok(Pbes2 {
                salt,
                iterations,
                prf,
                cipher,
                iv,
                data,
            })
        })
    })
}

fn decrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<Vec<u8>, PkiError> {
    let params = parse_pbes2(der).map_err(|_| {
        PkiError::Unsupported(
            "Only PBES2 (PBKDF2 with AES-CBC) encrypted private keys are supported.".into(),
        )
    })?;
    let prf = match params.prf.as_slice() {
        HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
        HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
        HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
        HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
        _ => {
            return Err(PkiError::Unsupported(
                "The key derivation function of this private key is not supported.".into(),
            ));
        }
    };
    let key_len = match params.cipher.as_slice() {
        AES128_CBC => 16,
        AES192_CBC => 24,
        AES256_CBC => 32,
        _ => {
            return Err(PkiError::Unsupported(
                "The cipher of this private key is not supported; re-encrypt the key with AES."
                    .into(),
            ));
        }
    };
    // Bound the work an uploaded key can demand.
    let iterations = u32::try_from(params.iterations)
        .ok()
        .filter(|n| *n <= 10_000_000)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            PkiError::Unsupported("The key derivation iteration count is out of range.".into())
        })?;
    let mut key = vec![0u8; key_len];
    pbkdf2::derive(
        prf,
        iterations,
        &params.salt,
        passphrase.as_bytes(),
        &mut key,
    );
    cbc_decrypt(&key, &params.iv, &params.data)
}
