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

/// Recently authenticated tokens, so most API requests need no database read.
///
/// Emptied after every committed write that could change whom a token belongs to or what that
/// user may do; an epoch keeps a read that raced such a write from caching what it saw.
#[derive(Debug, Default)]
pub struct TokenCache {
    users: std::sync::RwLock<std::collections::HashMap<[u8; 32], crate::User>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// Entries kept at most; past it the cache starts over.
    const CAPACITY: usize = 10_000;

    /// The cached user of a token hash.
    pub fn get(&self, hash: &[u8; 32]) -> Option<crate::User> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(hash).cloned()
    }

    /// The epoch to pass to [`TokenCache::insert`]; read it before reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches what was read, unless the cache was cleared since `epoch` was taken.
    pub fn insert(&self, epoch: u64, hash: [u8; 32], user: crate::User) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch() != epoch {
            return;
        }
        if users.len() >= Self::CAPACITY {
            users.clear();
        }
        users.insert(hash, user);
    }

    /// Forgets everything; call after committing a write that affects users or tokens.
    pub fn clear(&self) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        users.clear();
    }
}
