//! WireGuard key pairs: x25519, base64 as `wg genkey` / `wg pubkey` print them.
//!
//! The curve comes from aws-lc-rs, which the workspace already builds for rustls; a second
//! curve25519 crate (x25519-dalek) would add code to audit for the same 30 lines.

use aws_lc_rs::agreement::{PrivateKey, X25519};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A private key that is not 32 bytes of base64, so no public key can be derived from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key (base64 of 32 bytes)")]
pub struct InvalidKey;

/// A WireGuard key pair, both halves base64 (44 characters), ready for a config's `private_key`
/// and a peer's `public_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key, as `wg genkey` prints it (already clamped).
    pub private_key: String,
    /// Its public key, as `wg pubkey` prints it.
    pub public_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private half into logs.
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from the system's random source, as OpenWISP generates one for each
    /// WireGuard server and client. Fails only if the random source does.
    pub fn generate() -> Result<Self, InvalidKey> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| InvalidKey)?;
        // `wg genkey` clamps the scalar before printing it; do the same so keys look alike.
        secret[0] &= 248;
        secret[31] = (secret[31] & 127) | 64;
        let private_key = STANDARD.encode(secret);
        let public_key = public_key(&private_key)?;
        Ok(Self {
            private_key,
            public_key,
        })
    }
}

/// The public key of a base64 private key (what `wg pubkey` answers), e.g. to check a key pair a
/// user pasted.
pub fn public_key(private_key: &str) -> Result<String, InvalidKey> {
    let secret = STANDARD
        .decode(private_key.trim())
        .map_err(|_| InvalidKey)?;
    if secret.len() != 32 {
        return Err(InvalidKey);
    }
    let key = PrivateKey::from_private_key(&X25519, &secret).map_err(|_| InvalidKey)?;
    let public = key.compute_public_key().map_err(|_| InvalidKey)?;
    Ok(STANDARD.encode(public.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_44_characters_and_differ() {
        let a = KeyPair::generate().expect("key pair");
        let b = KeyPair::generate().expect("key pair");
        assert_eq!(a.private_key.len(), 44);
        assert_eq!(a.public_key.len(), 44);
        assert_ne!(a.private_key, b.private_key);
        assert_eq!(public_key(&a.private_key), Ok(a.public_key.clone()));
        assert!(!format!("{a:?}").contains(&a.private_key));
    }

    #[test]
    fn a_key_that_is_not_32_bytes_is_refused() {
        assert_eq!(public_key("AAAA"), Err(InvalidKey));
        assert_eq!(public_key("not base64!"), Err(InvalidKey));
    }
}
