//! Firmware: categories of builds, builds of a version, and the image files of a build.

use serde::{Deserialize, Serialize};

use crate::{BuildId, CategoryId, ImageId, OrgId, Timestamp};

/// The writable part of a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryFields {
    /// Owning organization; `None` = shared (superusers only).
    pub organization: Option<OrgId>,
    /// Unique per organization.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// A stored category: a line of firmware (e.g. one product's images across versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Identity.
    pub id: CategoryId,
    /// What users may change.
    pub fields: CategoryFields,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// The writable part of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildFields {
    /// Category it belongs to (and through it, its organization).
    pub category: CategoryId,
    /// Unique per category, at most 32 characters.
    pub version: String,
    /// Operating system identifier the devices report once upgraded.
    pub os: String,
    /// What changed.
    pub changelog: String,
}

/// A stored build: one version of a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Identity.
    pub id: BuildId,
    /// What users may change.
    pub fields: BuildFields,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// A stored image: the file of a build for one board type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Identity; also names its file.
    pub id: ImageId,
    /// Build it belongs to.
    pub build: BuildId,
    /// Board identifier; unique per build.
    pub kind: String,
    /// File size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the file (its ETag, and what devices must report).
    pub sha256: String,
    /// When it was uploaded.
    pub created: Timestamp,
}

/// Which builds a list should return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildFilter {
    /// Of this category.
    pub category: Option<CategoryId>,
    /// Of this exact version.
    pub version: Option<String>,
    /// Of this OS.
    pub os: Option<String>,
    /// Of this organization's own categories only (shared ones left out).
    pub organization: Option<OrgId>,
}
