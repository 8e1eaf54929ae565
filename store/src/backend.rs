//! The storage boundary. api/ and bridge/ only see [`Backend`] through [`crate::Store`]; a second
//! backend (a distributed SQL database, say) implements this trait and nothing above it changes.
//!
//! Methods are synchronous and each is one transaction: [`crate::Store::run`] calls them on the
//! blocking thread pool, so an implementation may block (a SQL client in blocking mode fits).

use crate::{
    ConfigFields, Device, DeviceFields, DeviceFilter, DeviceId, OrgId, Organization,
    OrganizationFields, Page, PageRequest, Password, Result, Scope, Token, User, UserFields,
    UserId,
};

/// Persistence of fleetmq's domain. Every method is atomic: it happens whole or not at all.
pub trait Backend: Send + Sync + 'static {
    /// Fails unless the backend can read and write right now (health checks).
    fn check(&self) -> Result<()>;

    /// Creates an organization; its slug must be unused.
    fn create_organization(&self, fields: OrganizationFields) -> Result<Organization>;
    /// Looks an organization up by id.
    fn organization(&self, id: OrgId) -> Result<Option<Organization>>;
    /// Looks an organization up by slug.
    fn organization_by_slug(&self, slug: &str) -> Result<Option<Organization>>;
    /// Replaces an organization's fields.
    fn update_organization(&self, id: OrgId, fields: OrganizationFields) -> Result<Organization>;
    /// Deletes an organization with its devices and memberships.
    fn delete_organization(&self, id: OrgId) -> Result<()>;
    /// Organizations in scope, newest first.
    fn list_organizations(&self, scope: &Scope, page: PageRequest) -> Result<Page<Organization>>;

    /// Whether no user exists yet (first start).
    fn has_users(&self) -> Result<bool>;
    /// Creates a user; username and non-empty e-mail must be unused.
    fn create_user(&self, fields: UserFields, password: Password) -> Result<User>;
    /// Looks a user up by id.
    fn user(&self, id: UserId) -> Result<Option<User>>;
    /// Looks a user up by username.
    fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    /// Replaces a user's fields, and the password when one is given.
    fn update_user(
        &self,
        id: UserId,
        fields: UserFields,
        password: Option<Password>,
    ) -> Result<User>;
    /// Deletes a user and their tokens.
    fn delete_user(&self, id: UserId) -> Result<()>;
    /// Users in scope (members of the scope's organizations), newest first.
    fn list_users(&self, scope: &Scope, page: PageRequest) -> Result<Page<User>>;

    /// Issues a new API token for a user; only its hash is kept.
    fn create_token(&self, user: UserId) -> Result<Token>;
    /// The active or inactive user a token belongs to.
    fn user_for_token(&self, token: &str) -> Result<Option<User>>;
    /// The user of a token if it is known without I/O (a memory cache); never blocks, so it may
    /// be called on an async worker. `None` means "ask [`Backend::user_for_token`]".
    fn cached_user_for_token(&self, _token: &str) -> Option<User> {
        None
    }

    /// Registers a device; name and MAC unique in its organization, key unique everywhere.
    fn create_device(&self, fields: DeviceFields, config: Option<ConfigFields>) -> Result<Device>;
    /// Registers many devices in one transaction (imports, benchmarks); all or none.
    fn create_devices(
        &self,
        devices: Vec<(DeviceFields, Option<ConfigFields>)>,
    ) -> Result<Vec<Device>>;
    /// Looks a device up by id.
    fn device(&self, id: DeviceId) -> Result<Option<Device>>;
    /// Looks a device up by its key.
    fn device_by_key(&self, key: &str) -> Result<Option<Device>>;
    /// Replaces a device's fields; `config: None` keeps the current configuration.
    fn update_device(
        &self,
        id: DeviceId,
        fields: DeviceFields,
        config: Option<ConfigFields>,
    ) -> Result<Device>;
    /// Deactivates or reactivates a device.
    fn set_device_deactivated(&self, id: DeviceId, deactivated: bool) -> Result<Device>;
    /// Deletes a device.
    fn delete_device(&self, id: DeviceId) -> Result<()>;
    /// Devices in scope passing the filter, newest first.
    fn list_devices(
        &self,
        scope: &Scope,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> Result<Page<Device>>;
}
