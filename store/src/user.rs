//! Users, their organization memberships and their passwords.

use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

use crate::{Action, Group, OrgId, Resource, StoreError, Timestamp, UserId};

/// A login name: 1–150 of letters, digits and `@ . + - _` (Django's rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Validates a username.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("This field may not be blank.");
        }
        if s.chars().count() > 150 {
            return Err("Ensure this field has no more than 150 characters.");
        }
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
        {
            return Err(
                "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.",
            );
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plaintext password on its way to being hashed; never stored or shown.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// At least 8 characters, like Django's default validator.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.chars().count() < 8 {
            return Err("This password is too short. It must contain at least 8 characters.");
        }
        Ok(Self(s.to_owned()))
    }

    /// Hashes with argon2id and a random salt (PHC string).
    pub fn hash(&self) -> Result<PasswordHashString, StoreError> {
        let mut raw = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
        let salt = SaltString::encode_b64(&raw).map_err(|e| StoreError::Password(e.to_string()))?;
        Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)
            .map(|h| PasswordHashString(h.to_string()))
            .map_err(|e| StoreError::Password(e.to_string()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// An argon2 PHC string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    /// Checks a candidate password in constant time.
    pub fn verify(&self, candidate: &str) -> bool {
        let Ok(hash) = PasswordHash::new(&self.0) else {
            return false;
        };
        verify_with_kept_memory(candidate.as_bytes(), &hash).unwrap_or(false)
    }
}

/// argon2 working memory kept between password checks, at most [`KEPT_MEMORY`] of them.
///
/// A check needs ~19 MiB (the default parameters). Allocated and freed per check, glibc raises
/// its mmap threshold past that size after the first free and then serves the next ones from
/// its heaps, where freed blocks are seldom returned: under a token flood the server's RSS grew
/// by one or two such blocks a minute (each time the per-address throttle's window let the next
/// attempts through). Kept blocks are reused instead; concurrent checks are bounded by the
/// API's `--password-checks`, so so is this memory.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
/// Working memories kept at most (checks beyond that many at once allocate their own).
const KEPT_MEMORY: usize = 8;

/// argon2's own `verify_password`, with working memory from [`MEMORY`].
fn verify_with_kept_memory(
    candidate: &[u8],
    hash: &PasswordHash<'_>,
) -> Result<bool, argon2::password_hash::Error> {
    let algorithm = Algorithm::try_from(hash.algorithm)?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| argon2::password_hash::Error::Version)?
        .unwrap_or_default();
    let params = Params::try_from(hash)?;
    let expected = hash.hash.ok_or(argon2::password_hash::Error::Password)?;
    let salt = hash.salt.ok_or(argon2::password_hash::Error::SaltInvalid(
        argon2::password_hash::errors::InvalidValue::TooShort,
    ))?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut memory = MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .filter(|m| m.len() == blocks)
        .unwrap_or_else(|| vec![Block::default(); blocks]);
    let mut out = vec![0u8; expected.len()];
    let hashed = argon.hash_password_into_with_memory(candidate, salt, &mut out, &mut memory);
    {
        let mut kept = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_MEMORY {
            kept.push(memory);
        }
    }
    hashed?;
    // `Output`'s equality is constant time.
    Ok(Output::new(&out)? == expected)
}

/// A user's place in an organization; `is_admin` makes the user a manager of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The organization.
    pub organization: OrgId,
    /// Manager of the organization.
    pub is_admin: bool,
}

/// The writable part of a user, apart from the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFields {
    /// Login name, unique.
    pub username: Username,
    /// Address, unique when not empty.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Bypasses every permission and tenancy check.
    pub is_superuser: bool,
    /// An inactive user cannot authenticate.
    pub is_active: bool,
    /// Permission groups.
    pub groups: Vec<Group>,
    /// Organizations the user belongs to.
    pub memberships: Vec<Membership>,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Identity.
    pub id: UserId,
    /// What can be changed.
    pub fields: UserFields,
    /// argon2 hash of the password.
    pub password: PasswordHashString,
    /// When the account was created.
    pub date_joined: Timestamp,
}

impl User {
    /// Whether the user may do `action` on `resource` (superusers may do anything).
    pub fn has_perm(&self, resource: Resource, action: Action) -> bool {
        self.fields.is_superuser
            || self
                .fields
                .groups
                .iter()
                .any(|g| g.permits(resource, action))
    }

    /// Organizations this user manages (`is_admin` memberships).
    pub fn managed_orgs(&self) -> Vec<OrgId> {
        self.fields
            .memberships
            .iter()
            .filter(|m| m.is_admin)
            .map(|m| m.organization)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_only_itself() {
        let hash = Password::parse("correct horse").and_then(|p| p.hash().map_err(|_| "hash"));
        let hash = hash.expect("hashing works");
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("wrong horse"));
        // Again, with the working memory the first checks kept.
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("wrong horse"));
    }

    #[test]
    fn hashes_of_other_parameters_and_variants_verify_too() {
        // Stored by another tool (or an older fleetmq) with other costs: argon2i, 8 MiB, t=2.
        let params = Params::new(8 * 1024, 2, 1, None).expect("params");
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        let hash = PasswordHashString(other);
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("correct horsE"));
        assert!(!PasswordHashString("$argon2id$garbage".into()).verify("correct horse"));
    }

    #[test]
    fn usernames_follow_djangos_rule() {
        assert!(Username::parse("ops.team+1@x").is_ok());
        assert!(Username::parse("has space").is_err());
        assert!(Username::parse("").is_err());
    }
}
