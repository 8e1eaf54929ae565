//! Private keys at rest.
//!
//! CA and certificate private keys are stored sealed: AES-256-GCM (aws-lc-rs) under a key
//! derived with HKDF-SHA256 from a server secret, with a fresh random 96-bit nonce per seal and
//! the record's identity (e.g. `"ca:7"`) as associated data, so a sealed key copied onto another
//! record does not open. The sealed text is `"v1:" + base64(nonce || ciphertext || tag)`; the
//! version prefix lets the scheme change later without guessing.
//!
//! The server secret lives in its own file (hex, 32 random bytes, mode 0600), created on first
//! start, so a copy of the database alone does not reveal the keys.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::PkiError;

const PREFIX: &str = "v1:";
const HKDF_SALT: &[u8] = b"fleetmq-pki key vault";
const HKDF_INFO: &[u8] = b"private keys at rest v1";
/// The minimum size of a server secret.
pub const SECRET_LEN: usize = 32;

/// Seals and opens private keys with a key derived from the server secret.
pub struct KeyVault {
    key: LessSafeKey,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault { .. }")
    }
}

impl KeyVault {
    /// A vault keyed by `secret` (use [`load_or_create_secret`], which guarantees ≥ 32 bytes).
    pub fn new(secret: &[u8]) -> KeyVault {
        let prk = Salt::new(HKDF_SALT_ALG, HKDF_SALT).extract(secret);
        let mut key = [0u8; 32];
        prk.expand(&[HKDF_INFO], &AES_256_GCM)
            .and_then(|okm| okm.fill(&mut key))
            .expect("HKDF-SHA256 can expand 32 bytes");
        let unbound = UnboundKey::new(&AES_256_GCM, &key).expect("32 bytes is an AES-256 key");
        KeyVault {
            key: LessSafeKey::new(unbound),
        }
    }

    /// `plaintext` sealed and bound to `aad`, as `"v1:" + base64(nonce || ciphertext)`.
    pub fn seal(&self, plaintext: &str, aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the operating system random source works");
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .expect("AES-GCM seals any in-memory text");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// The plaintext of a sealed text, if it was sealed by this secret for this `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<String, PkiError> {
        let encoded = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| PkiError::Crypto("the sealed key has an unknown format".into()))?;
        let mut data = STANDARD
            .decode(encoded)
            .map_err(|_| PkiError::Crypto("the sealed key is not valid base64".into()))?;
        if data.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(PkiError::Crypto("the sealed key is truncated".into()));
        }
        let ciphertext = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data)
            .map_err(|_| PkiError::Crypto("the sealed key is truncated".into()))?;
        let mut ciphertext = ciphertext;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut ciphertext)
            .map_err(|_| {
                PkiError::Crypto(
                    "the sealed key does not open (another server secret or another record)".into(),
                )
            })?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| PkiError::Crypto("the sealed key is not text".into()))
    }
}

const HKDF_SALT_ALG: aws_lc_rs::hkdf::Algorithm = HKDF_SHA256;

/// The server secret: read `path` (must be mode 0600 on unix; refuse group/other-readable), or
/// generate 32 random bytes there (create_new, 0600) on first start. Hex in the file.
pub fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut secret = [0u8; SECRET_LEN];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| PkiError::Crypto("no randomness".into()))?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            Ok(secret.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret(path),
        Err(e) => Err(io(e)),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, PkiError> {
    let refuse = |reason: &str| PkiError::Secret {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(refuse(&format!(
                "it is readable by group or others (mode {:o}); make it 0600",
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let secret = hex::decode(text.trim()).map_err(|_| refuse("it is not hex"))?;
    if secret.len() < SECRET_LEN {
        return Err(refuse("it holds fewer than 32 bytes"));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_record() {
        let vault = KeyVault::new(&[7u8; 32]);
        let sealed = vault.seal(PEM, b"ca:7");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("PRIVATE KEY") && !sealed.contains("MIGHAgEA"));
        assert_ne!(
            sealed,
            vault.seal(PEM, b"ca:7"),
            "every seal has a fresh nonce"
        );
        assert_eq!(vault.open(&sealed, b"ca:7").unwrap(), PEM);

        assert!(vault.open(&sealed, b"ca:8").is_err());
        assert!(KeyVault::new(&[8u8; 32]).open(&sealed, b"ca:7").is_err());
        assert!(vault.open("v1:AAAA", b"ca:7").is_err());
        assert!(vault.open(PEM, b"ca:7").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_secret_is_created_private_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let first = load_or_create_secret(&path).unwrap();
        assert_eq!(first.len(), SECRET_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, hex::encode([1u8; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_secret(&path).unwrap_err();
        assert!(matches!(err, PkiError::Secret { .. }), "{err}");
        assert!(err.to_string().contains("0600"), "{err}");
    }
}
