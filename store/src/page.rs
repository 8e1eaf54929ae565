//! Paging and tenancy scope: the two things every list call takes.

use crate::OrgId;

/// Which slice of a newest-first list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items to skip.
    pub offset: u64,
    /// Items to return at most.
    pub limit: u64,
}

/// One slice of a list and the size of the whole list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items in the whole (filtered) list.
    pub count: u64,
    /// The requested slice.
    pub items: Vec<T>,
}

/// Which organizations' objects a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every organization (superusers).
    All,
    /// Only these (the organizations a user manages, possibly narrowed by a filter).
    Orgs(Vec<OrgId>),
}

impl Scope {
    /// Whether an object of `org` is inside the scope.
    pub fn contains(&self, org: OrgId) -> bool {
        match self {
            Scope::All => true,
            Scope::Orgs(orgs) => orgs.contains(&org),
        }
    }
}

/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// Organization slugs are unique.
    OrganizationSlug,
    /// Usernames are unique.
    Username,
    /// Non-empty e-mail addresses are unique.
    UserEmail,
    /// Device names are unique per organization, ignoring case.
    DeviceName,
    /// MAC addresses are unique per organization.
    DeviceMac,
    /// Device keys are unique everywhere.
    DeviceKey,
    /// A device uses given credentials through one connection at most.
    ConnectionCredentials,
    /// (organization, name) of a VPN server.
    VpnName,
    /// Category names are unique per organization.
    CategoryName,
    /// Build versions are unique per category.
    BuildVersion,
    /// A build has one image per type.
    ImageType,
    /// Image type names are unique.
    ImageTypeName,
    /// Template names are unique per organization.
    TemplateName,
    /// A shared template's name is taken by no other template (shared names are unique
    /// everywhere, as every organization sees them).
    SharedTemplateName,
    /// A new shared template's name is taken by a template of some organization.
    TemplateNameOfOrganization,
    /// Device group names are unique per organization.
    GroupName,
    /// A location has one floor plan per floor.
    FloorplanFloor,
    /// Registration secrets are unique across organizations (the secret names its
    /// organization).
    SharedSecret,
    /// Software versions are unique per application.
    SoftwareVersion,
}
