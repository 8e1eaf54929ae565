//! OAuth 2.0 clients (RFC 6749 §4.4, client credentials) for the OTAO API: a client belongs
//! to one organization, holds a set of scopes, and exchanges its id and secret for short-lived
//! bearer tokens carrying a subset of them.
//!
//! Secrets and access tokens are 32 random bytes: high-entropy, so a SHA-256 of each is all the
//! store keeps (a slow password hash buys nothing against a 256-bit secret), and a copied data
//! file grants no access.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{OrgId, Timestamp};

/// What an OAuth access token may do on the OTAO routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OAuthScope {
    /// Read the software catalogue, applications and filters.
    #[serde(rename = "application:software:read")]
    SoftwareRead,
    /// Publish and change software, applications' settings and filters.
    #[serde(rename = "application:software:update")]
    SoftwareUpdate,
    /// Read endpoints: what they run, their installations, filter matches.
    #[serde(rename = "endpoint:read")]
    EndpointRead,
    /// Set what an endpoint runs over REST.
    #[serde(rename = "endpoint:update")]
    EndpointUpdate,
}

impl OAuthScope {
    /// Every scope, in the order they are shown.
    pub const ALL: [OAuthScope; 4] = [
        OAuthScope::SoftwareRead,
        OAuthScope::SoftwareUpdate,
        OAuthScope::EndpointRead,
        OAuthScope::EndpointUpdate,
    ];

    /// The scope's name on the wire (RFC 6749 `scope` token).
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthScope::SoftwareRead => "application:software:read",
            OAuthScope::SoftwareUpdate => "application:software:update",
            OAuthScope::EndpointRead => "endpoint:read",
            OAuthScope::EndpointUpdate => "endpoint:update",
        }
    }
}

impl fmt::Display for OAuthScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OAuthScope {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OAuthScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or(())
    }
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    /// The `client_id` it authenticates with.
    pub client_id: Uuid,
    /// A name for people.
    pub name: String,
    /// Whose software and endpoints its tokens reach.
    pub organization: OrgId,
    /// The most its tokens may be granted.
    pub scopes: Vec<OAuthScope>,
    /// SHA-256 of its secret.
    pub secret_hash: [u8; 32],
    /// When it was registered.
    pub created: Timestamp,
}

impl OAuthClient {
    /// Whether `secret` is this client's, compared in constant time.
    pub fn verify_secret(&self, secret: &str) -> bool {
        let given = secret_hash(secret);
        given
            .iter()
            .zip(self.secret_hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A fresh secret (or access token): 32 random bytes, hex encoded.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store keeps of a secret or an access token.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What an access token grants, as stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    /// The client it was issued to.
    pub client_id: Uuid,
    /// The client's organization.
    pub organization: OrgId,
    /// Granted scopes (a subset of the client's).
    pub scopes: Vec<OAuthScope>,
    /// When it stops working.
    pub expires: Timestamp,
}

impl AccessGrant {
    /// Whether it grants `scope`.
    pub fn allows(&self, scope: OAuthScope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_wire_names() {
        for scope in OAuthScope::ALL {
            assert_eq!(scope.as_str().parse::<OAuthScope>(), Ok(scope));
            assert_eq!(
                serde_json::to_value(scope).expect("serializes"),
                serde_json::json!(scope.as_str())
            );
        }
        assert!("endpoint:write".parse::<OAuthScope>().is_err());
    }

    #[test]
    fn only_the_clients_own_secret_verifies() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 64);
        let client = OAuthClient {
            client_id: Uuid::new_v4(),
            name: "ci".into(),
            organization: OrgId::new(),
            scopes: vec![OAuthScope::SoftwareRead],
            secret_hash: secret_hash(&secret),
            created: Timestamp::now(),
        };
        assert!(client.verify_secret(&secret));
        assert!(!client.verify_secret(&generate_secret()));
        assert!(!client.verify_secret(""));
    }
}
