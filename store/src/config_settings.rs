//! An organization's configuration settings (OpenWISP's `OrganizationConfigSettings`): whether
//! devices may register themselves, the shared secret they register with, and the variables
//! every configuration of the organization is rendered with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// An organization's configuration settings. Every organization has them: they are created
/// with defaults (registration enabled, a random secret, no variables) the first time they
/// are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSettings {
    /// Whether the openwisp-config agent may register new devices with the shared secret.
    pub registration_enabled: bool,
    /// What an agent presents to register a device in this organization; unique across
    /// organizations, since it alone names the organization.
    pub shared_secret: SharedSecret,
    /// Variables every configuration of the organization is rendered with (above template
    /// defaults, below group and device variables).
    pub context: Map<String, Value>,
}

impl ConfigSettings {
    /// The settings an organization starts with: registration enabled, a fresh random
    /// secret, no variables.
    pub fn new_default() -> Self {
        Self {
            registration_enabled: true,
            shared_secret: SharedSecret::generate(),
            context: Map::new(),
        }
    }
}

/// A registration secret: 1 to 32 characters, no spaces, dots or slashes (OpenWISP's
/// `KeyField`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// The most characters a secret may have.
    pub const MAX_LENGTH: usize = 32;

    /// Validates a secret as OpenWISP's form does.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.trim().is_empty() {
            return Err("This field may not be blank.");
        }
        if s.chars().count() > Self::MAX_LENGTH {
            return Err("Ensure this field has no more than 32 characters.");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c == '.' || c == '/' || c == '\\')
        {
            return Err("This value must not contain spaces, dots or slashes.");
        }
        Ok(Self(s.to_owned()))
    }

    /// 32 random hex characters, as OpenWISP generates.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    /// The secret text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_short_and_plain() {
        assert!(SharedSecret::parse("").is_err());
        assert!(SharedSecret::parse("  ").is_err());
        assert!(SharedSecret::parse(&"s".repeat(33)).is_err());
        assert!(SharedSecret::parse(&"s".repeat(32)).is_ok());
        assert!(SharedSecret::parse("a.b").is_err());
        assert_eq!(SharedSecret::generate().as_str().len(), 32);
        assert!(ConfigSettings::new_default().registration_enabled);
    }
}
