//! API tokens: 40 hex characters handed out once; only their SHA-256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A plaintext API token as given to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// 20 random bytes, hex encoded (the length of a Django REST framework token).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 20];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// What the store keeps of a token: a copied data file grants no API access.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
