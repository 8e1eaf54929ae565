//! Organizations: the tenants every device, template and firmware object belongs to.

use serde::{Deserialize, Serialize};

use crate::{OrgId, Timestamp};

/// A URL-safe, unique organization handle; it is also the organization's segment in MQTT topics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Letters, digits, `-` and `_`, 1 to 200 characters (Django's slug rule).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.len() > 200 {
            return Err("Ensure this field has no more than 200 characters.");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.",
            );
        }
        Ok(Self(s.to_owned()))
    }

    /// Derives a slug from a display name ("ACME Corp." → "acme-corp"), as django's slugify does.
    pub fn from_name(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.trim().to_lowercase().chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                out.push(c);
            } else if (c.is_whitespace() || c == '-') && !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-');
        Self::parse(out).ok()
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The writable part of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationFields {
    /// Display name.
    pub name: String,
    /// Unique handle.
    pub slug: Slug,
    /// Free text.
    pub description: String,
    /// Contact address.
    pub email: String,
    /// Web site.
    pub url: String,
    /// An inactive organization's devices may not connect.
    pub is_active: bool,
}

/// A stored organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Identity.
    pub id: OrgId,
    /// What users may change.
    pub fields: OrganizationFields,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_from_name_is_lowercase_and_hyphenated() {
        assert_eq!(
            Slug::from_name("ACME Corp. West").map(|s| s.0),
            Some("acme-corp-west".into())
        );
        assert!(Slug::from_name("!!!").is_none());
    }

    #[test]
    fn slug_rejects_slashes_and_spaces() {
        assert!(Slug::parse("a/b").is_err());
        assert!(Slug::parse("a b").is_err());
        assert!(Slug::parse("").is_err());
        assert!(Slug::parse("default_org-1").is_ok());
    }
}
