//! The storage boundary. api/ and bridge/ only see [`Backend`] through [`crate::Store`]; a second
//! backend (a distributed SQL database, say) implements it (and the traits it is made of) and
//! nothing above it changes.
//!
//! Methods are synchronous and each is one transaction: [`crate::Store::run`] calls them on the
//! blocking thread pool, so an implementation may block (a SQL client in blocking mode fits).

use crate::board::ImageType;
use crate::id::{BatchId, UpgradeId};
use crate::pki::{Ca, CaId, Cert, CertId, CertificateLogin, CertificateRefusal, Draft, Relabel};
use crate::upgrade::{
    Batch, BatchFilter, CancelOutcome, DeviceFirmware, StartedUpgrades, UpdateReport,
    UpgradeFilter, UpgradeOperation, UpgradePlan,
};
use crate::{
    Build, BuildFields, BuildFilter, BuildId, Category, CategoryFields, CategoryId, Command,
    CommandId, CommandStatus, CommandType, ConfigFields, ConnectionFields, ConnectionId,
    Credentials, CredentialsFields, CredentialsId, Device, DeviceConnection, DeviceFields,
    DeviceFilter, DeviceId, DeviceLocation, FloorPlan, FloorPlanId, HistoryPage,
    HistoryPageRequest, Image, ImageId, Location, LocationFields, LocationFilter, LocationId,
    OrgId, Organization, OrganizationFields, Page, PageRequest, Password, Placed, Placement,
    PlanImage, PlanImageId, Point, Result, Scope, TelemetryRange, TelemetrySample, Timestamp,
    Token, User, UserFields, UserId,
};
use crate::{
    ConfigChange, DeviceGroup, GroupFields, GroupFilter, GroupId, Template, TemplateFields,
    TemplateFilter, TemplateId,
};

/// Persistence of fleetmq's domain. Every method is atomic: it happens whole or not at all.
/// Its parts are one trait per concept ([`AccountStore`], [`DeviceStore`], [`DevicePlane`],
/// [`FirmwareStore`], [`UpgradeStore`], [`BrokerStateStore`], ...), so an implementation keeps each in its own file; a
/// `&dyn Backend` (or `impl Backend`) reaches all their methods.
pub trait Backend:
    AccountStore
    + DeviceStore
    + ConfigStore
    + ConfigSettingsStore
    + DevicePlane
    + DevicePlane
    + LocationStore
    + PkiStore
    + VpnStore
    + FirmwareStore
    + UpgradeStore
    + SoftwareStore
    + OAuthStore
    + BrokerStateStore
    + crate::LeaseStore
    + Send
    + Sync
    + 'static
{
    /// Fails unless the backend can read and write right now (health checks).
    fn check(&self) -> Result<()>;
    /// Login-relevant changes committed from now on (see [`crate::revocation`]).
    fn login_changes(&self) -> tokio::sync::broadcast::Receiver<crate::LoginChange>;
    /// Devices whose rendered configuration may have changed, announced after each commit
    /// (see [`crate::configuration`]).
    fn config_changes(&self) -> tokio::sync::broadcast::Receiver<crate::ConfigChange>;
    /// Live events (a device online or offline) committed from now on, here or on another
    /// node (see [`crate::live`]).
    fn live_events(&self) -> tokio::sync::broadcast::Receiver<crate::LiveEvent>;
    /// Tables other nodes sharing the database changed, heard after each of their commits
    /// (see [`crate::remote`]); never anything on a backend no other node shares.
    fn remote_changes(&self) -> tokio::sync::broadcast::Receiver<crate::RemoteChange>;
    /// How much of the data the backend keeps in memory (for `/metrics`).
    fn cache_use(&self) -> CacheUse;
}

/// The backend's in-memory cache of its data, bounded by `--store-cache-mib`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// Bytes held now.
    pub bytes: u64,
    /// Pages dropped to stay within the bound, since the store was opened.
    pub evictions: u64,
}

/// Who may use fleetmq: organizations (tenants), users with their memberships, and API tokens.
/// Same rules as [`Backend`]: every method is one transaction.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an organization; its slug must be unused.
    fn create_organization(&self, fields: OrganizationFields) -> Result<Organization>;
    /// Looks an organization up by id.
    fn organization(&self, id: OrgId) -> Result<Option<Organization>>;
    /// Looks an organization up by slug.
    fn organization_by_slug(&self, slug: &str) -> Result<Option<Organization>>;
    /// Replaces an organization's fields.
    fn update_organization(&self, id: OrgId, fields: OrganizationFields) -> Result<Organization>;
    /// Deletes an organization with its devices, memberships and application software.
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
    /// Revokes a token (a console logout); whether it existed. Every node stops taking it at
    /// once, as for a deleted user.
    fn delete_token(&self, token: &str) -> Result<bool>;
    /// The active or inactive user a token belongs to.
    fn user_for_token(&self, token: &str) -> Result<Option<User>>;
    /// The user of a token if it is known without I/O (a memory cache); never blocks, so it may
    /// be called on an async worker. `None` means "ask [`AccountStore::user_for_token`]".
    fn cached_user_for_token(&self, _token: &str) -> Option<User> {
        None
    }
}

/// Devices themselves (identity, key, configuration) and what the broker needs to let one in.
/// Same rules as [`Backend`]: every method is one transaction.
pub trait DeviceStore: Send + Sync + 'static {
    /// What the broker needs to let a device in: its key, whether it is deactivated, its
    /// organization's slug and whether that organization is active.
    fn device_login(&self, id: DeviceId) -> Result<Option<DeviceLogin>>;
    /// The logins of every device that may connect now (not deactivated, organization
    /// active), read in one transaction: what an external broker's credential files hold.
    fn active_device_logins(&self) -> Result<Vec<(DeviceId, DeviceLogin)>>;
    /// [`DeviceStore::device_login`] if it is known without I/O (a memory cache kept correct by
    /// invalidation on every change of those fields); never blocks.
    fn cached_device_login(&self, _id: DeviceId) -> Option<DeviceLogin> {
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
    /// What connecting and notifying a device needs (organization, key, deactivated, last
    /// address, owed configuration), read from a small row instead of the whole record.
    fn device_brief(&self, id: DeviceId) -> Result<Option<crate::DeviceBrief>>;
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

/// Configuration templates and device groups. Same rules as [`Backend`]: every method is one
/// transaction. Writes that change what devices render return the devices affected (also
/// announced on [`Backend::config_changes`]).
pub trait ConfigStore: Send + Sync + 'static {
    /// Creates a template; a new default or required one joins the existing configurations of
    /// its organization (every organization if shared) with its backend.
    fn create_template(&self, fields: TemplateFields) -> Result<(Template, ConfigChange)>;
    /// Looks a template up.
    fn template(&self, id: TemplateId) -> Result<Option<Template>>;
    /// The templates of `ids` that exist, in the order asked.
    fn templates(&self, ids: &[uuid::Uuid]) -> Result<Vec<Template>>;
    /// Replaces a template's fields; its devices are affected.
    fn update_template(
        &self,
        id: TemplateId,
        fields: TemplateFields,
    ) -> Result<(Template, ConfigChange)>;
    /// Deletes a template and takes it out of every configuration and group.
    fn delete_template(&self, id: TemplateId) -> Result<ConfigChange>;
    /// Templates of the scope's organizations plus shared ones passing the filter, newest
    /// first; with `own`, only that organization's own templates.
    fn list_templates(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        filter: &TemplateFilter,
        page: PageRequest,
    ) -> Result<Page<Template>>;

    /// The archive a device's configuration renders to now, rendered from what is stored;
    /// `None` when the device has no configuration.
    fn device_configuration(&self, id: DeviceId) -> Result<Option<crate::RenderedConfig>>;
    /// Records what a device reported about applying its configuration: `applied` (a
    /// deactivating configuration becomes `deactivated`) or `error` with its reason. Returns
    /// false, changing nothing, when the device has no configuration or the report names a
    /// checksum that is no longer current.
    fn record_config_outcome(&self, id: DeviceId, outcome: crate::ConfigOutcome) -> Result<bool>;

    /// Creates a device group.
    fn create_group(&self, fields: GroupFields) -> Result<DeviceGroup>;
    /// Looks a group up.
    fn group(&self, id: GroupId) -> Result<Option<DeviceGroup>>;
    /// Replaces a group's fields; when its templates change, each of its devices (not
    /// deactivated) swaps the old ones for the new.
    fn update_group(&self, id: GroupId, fields: GroupFields)
    -> Result<(DeviceGroup, ConfigChange)>;
    /// Deletes a group; its devices are left without group (and keep their templates, as in
    /// OpenWISP).
    fn delete_group(&self, id: GroupId) -> Result<ConfigChange>;
    /// Groups of the scope's organizations passing the filter, newest first; with `own`, only
    /// that organization's.
    fn list_groups(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        filter: &GroupFilter,
        page: PageRequest,
    ) -> Result<Page<DeviceGroup>>;
}

/// VPN servers and the clients devices get from VPN-client templates (see [`crate::vpn`]).
/// Same rules as [`Backend`].
pub trait VpnStore: Send + Sync + 'static {
    /// Creates a VPN server: an OpenVPN server gets a server certificate from its CA when none
    /// is given; a WireGuard server a key pair and its address in the subnet.
    fn create_vpn(&self, fields: crate::VpnFields) -> Result<crate::Vpn>;
    /// Looks a VPN server up.
    fn vpn(&self, id: crate::VpnId) -> Result<Option<crate::Vpn>>;
    /// Replaces a VPN server's fields; its clients' devices render again.
    fn update_vpn(
        &self,
        id: crate::VpnId,
        fields: crate::VpnFields,
    ) -> Result<(crate::Vpn, ConfigChange)>;
    /// Deletes a VPN server with its VPN-client templates and clients.
    fn delete_vpn(&self, id: crate::VpnId) -> Result<ConfigChange>;
    /// VPN servers in scope passing the filter, newest first.
    fn list_vpns(
        &self,
        scope: &Scope,
        filter: &crate::VpnFilter,
        page: PageRequest,
    ) -> Result<Page<crate::Vpn>>;
    /// The VPN server's configuration archive (with a peer per WireGuard client).
    fn vpn_configuration(&self, id: crate::VpnId) -> Result<Option<crate::RenderedConfig>>;
    /// The VPN server's clients.
    fn vpn_clients(&self, id: crate::VpnId) -> Result<Vec<crate::VpnClient>>;
    /// The configuration a VPN-client template of this server starts from.
    fn vpn_client_template(
        &self,
        id: crate::VpnId,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>>;
}

/// Certificate authorities and certificates (see [`crate::pki`]). Same rules as [`Backend`]:
/// every method is one transaction; private keys are sealed at rest.
pub trait PkiStore: Send + Sync + 'static {
    /// Creates a CA: generates its key and self-signed certificate, or imports them.
    fn create_ca(&self, draft: Draft) -> Result<Ca>;
    /// Looks a CA up.
    fn ca(&self, id: CaId) -> Result<Option<Ca>>;
    /// Changes a CA's name, organization and notes (all else is fixed after creation).
    fn relabel_ca(&self, id: CaId, relabel: Relabel) -> Result<Ca>;
    /// Deletes a CA with its certificates.
    fn delete_ca(&self, id: CaId) -> Result<()>;
    /// CAs in scope (its organizations' and shared ones), newest first.
    fn list_cas(&self, scope: &Scope, page: PageRequest) -> Result<Page<Ca>>;
    /// New key, serial and validity for a CA, and for every certificate it signed.
    fn renew_ca(&self, id: CaId) -> Result<Ca>;
    /// The CA's current certificate revocation list (PEM).
    fn ca_crl(&self, id: CaId) -> Result<Option<String>>;

    /// Creates a certificate signed by `ca` (or imports one `ca` signed).
    fn create_cert(&self, ca: CaId, draft: Draft) -> Result<Cert>;
    /// Looks a certificate up.
    fn cert(&self, id: CertId) -> Result<Option<Cert>>;
    /// Changes a certificate's name, organization and notes.
    fn relabel_cert(&self, id: CertId, relabel: Relabel) -> Result<Cert>;
    /// Deletes a certificate; its serial is revoked.
    fn delete_cert(&self, id: CertId) -> Result<()>;
    /// Certificates in scope, newest first.
    fn list_certs(&self, scope: &Scope, page: PageRequest) -> Result<Page<Cert>>;
    /// New key, serial and validity for a certificate; the old serial is revoked.
    fn renew_cert(&self, id: CertId) -> Result<Cert>;
    /// Revokes a certificate (and regenerates its CA's CRL).
    fn revoke_cert(&self, id: CertId) -> Result<Cert>;
    /// Issues a certificate whose common name is the device's id, signed by `ca` (one of the
    /// device's organization) or the organization's default CA: its oldest, created when it
    /// has none.
    fn issue_device_certificate(&self, device: DeviceId, ca: Option<CaId>) -> Result<Cert>;
    /// Which device a client certificate (DER) logs in at `now`, or why it does not.
    fn certificate_login(
        &self,
        leaf: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<std::result::Result<CertificateLogin, CertificateRefusal>>;
    /// The group of the device using the certificate with this common name; with `orgs`,
    /// only among those organizations' certificates.
    fn group_by_common_name(
        &self,
        common_name: &str,
        orgs: Option<Vec<OrgId>>,
    ) -> Result<Option<DeviceGroup>>;
}

/// The device plane's persistence: where devices are, how they are reached, what they were
/// told and what they report. Same rules as [`Backend`]: every method is one transaction.
pub trait DevicePlane: Send + Sync + 'static {
    /// The location a device is placed at.
    fn device_location(&self, device: DeviceId) -> Result<Option<Location>>;
    /// Moves a device: updates its location's point, creating an outdoor, mobile location
    /// named after the device when it has none.
    fn set_device_coordinates(&self, device: DeviceId, point: Point) -> Result<Location>;

    /// Creates credentials.
    fn create_credentials(&self, fields: CredentialsFields) -> Result<Credentials>;
    /// Looks credentials up.
    fn credentials(&self, id: CredentialsId) -> Result<Option<Credentials>>;
    /// Replaces credentials' fields.
    fn update_credentials(
        &self,
        id: CredentialsId,
        fields: CredentialsFields,
    ) -> Result<Credentials>;
    /// Deletes credentials and the connections using them.
    fn delete_credentials(&self, id: CredentialsId) -> Result<()>;
    /// Credentials of the scope's organizations plus shared ones, newest first.
    fn list_credentials(&self, scope: &Scope, page: PageRequest) -> Result<Page<Credentials>>;

    /// Adds a connection to a device; (device, credentials) must be new.
    fn create_connection(
        &self,
        device: DeviceId,
        fields: ConnectionFields,
    ) -> Result<DeviceConnection>;
    /// Looks a connection up.
    fn connection(&self, id: ConnectionId) -> Result<Option<DeviceConnection>>;
    /// Replaces a connection's fields.
    fn update_connection(
        &self,
        id: ConnectionId,
        fields: ConnectionFields,
    ) -> Result<DeviceConnection>;
    /// Deletes a connection.
    fn delete_connection(&self, id: ConnectionId) -> Result<()>;
    /// A device's connections, newest first.
    fn list_connections(
        &self,
        device: DeviceId,
        page: PageRequest,
    ) -> Result<Page<DeviceConnection>>;
    /// Records a device's MQTT session opening or closing: makes sure the device has its MQTT
    /// connection (creating the organization's MQTT credentials on first use) and records
    /// the attempt; on connect also the address and what the device says it is.
    fn record_mqtt_session(&self, device: DeviceId, session: MqttSession) -> Result<()>;
    /// Records many session changes, in order, in one transaction (connect storms); devices
    /// deleted meanwhile are skipped.
    fn record_mqtt_sessions(&self, sessions: Vec<(DeviceId, MqttSession)>) -> Result<()>;
    /// Whether each device is connected now and since when, in their order, read in one
    /// transaction (a page of a device list asks once, not once per device). An unknown
    /// device reads as never connected.
    fn presence_of(&self, devices: &[DeviceId]) -> Result<Vec<crate::Presence>>;
    /// A device's presence history, newest first: each time its MQTT session turned online
    /// or offline (only changes), the last
    /// [`PRESENCE_HISTORY_LEN`](crate::PRESENCE_HISTORY_LEN) of them. An unknown device has
    /// none.
    fn presence_history(
        &self,
        device: DeviceId,
        page: PageRequest,
    ) -> Result<Page<crate::PresenceChange>>;

    /// Stores a new command (in progress) before it is sent.
    fn create_command(&self, command: NewCommand) -> Result<Command>;
    /// Looks a command up.
    fn command(&self, id: CommandId) -> Result<Option<Command>>;
    /// Ends an in-progress command; `None` when it had already ended (a late or repeated
    /// answer), so results are applied at most once.
    fn finish_command(
        &self,
        id: CommandId,
        status: CommandStatus,
        output: String,
    ) -> Result<Option<Command>>;
    /// A device's commands, newest first.
    fn list_commands(&self, device: DeviceId, page: PageRequest) -> Result<Page<Command>>;
    /// Commands still in progress (of one device, or all), oldest first.
    fn pending_commands(&self, device: Option<DeviceId>) -> Result<Vec<Command>>;

    /// Appends a batch of telemetry in one transaction, updates each device's latest sample,
    /// drops history measured before `keep_after`, and then each device's oldest samples
    /// while its history holds more than `max_history_bytes` (stored bytes; the latest
    /// sample is kept apart and stays).
    fn append_telemetry(
        &self,
        batch: Vec<TelemetrySample>,
        keep_after: Timestamp,
        max_history_bytes: u64,
    ) -> Result<()>;
    /// A device's most recent sample.
    fn latest_telemetry(&self, device: DeviceId) -> Result<Option<TelemetrySample>>;
    /// A device's history in a range, newest first.
    fn telemetry_history(
        &self,
        device: DeviceId,
        range: TelemetryRange,
        page: PageRequest,
    ) -> Result<Page<TelemetrySample>>;
    /// A page of a device's history in a range, newest first, bounded in samples and bytes
    /// (what the REST API serves).
    fn telemetry_page(
        &self,
        device: DeviceId,
        range: TelemetryRange,
        page: HistoryPageRequest,
    ) -> Result<HistoryPage>;
}

/// A device's MQTT session opening or closing, as the bridge saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSession {
    /// Connected (true) or gone (false).
    pub online: bool,
    /// Why it went away, if it did not say goodbye.
    pub failure_reason: String,
    /// Address it connected from.
    pub peer_ip: Option<std::net::IpAddr>,
    /// What the device reported about itself on connect.
    pub model: Option<String>,
    /// Its operating system.
    pub os: Option<String>,
    /// Its system on chip.
    pub system: Option<String>,
    /// When it happened.
    pub at: Timestamp,
}

/// A command about to be stored and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    /// Target device.
    pub device: DeviceId,
    /// Connection it goes through.
    pub connection: Option<ConnectionId>,
    /// What it does.
    pub kind: CommandType,
    /// Parameters.
    pub input: serde_json::Value,
}

/// Locations, their floor plans (image files live in [`crate::Store::floorplan_files`]) and
/// where devices are placed. Same rules as [`Backend`]: every method is one transaction.
/// Methods that remove floor plans return the image files no record refers to any more, for
/// the caller to delete after the commit.
pub trait LocationStore: Send + Sync + 'static {
    /// Creates a location.
    fn create_location(&self, fields: LocationFields) -> Result<Location>;
    /// Replaces a location's fields; its floor plans follow its organization, and go (with
    /// the devices' references to them) when it becomes outdoor.
    fn update_location(
        &self,
        id: LocationId,
        fields: LocationFields,
    ) -> Result<(Location, Vec<PlanImageId>)>;
    /// Deletes a location with its floor plans and the devices' links to it.
    fn delete_location(&self, id: LocationId) -> Result<Vec<PlanImageId>>;
    /// Locations in scope passing the filter, newest first.
    fn list_locations(
        &self,
        scope: &Scope,
        filter: &LocationFilter,
        page: PageRequest,
    ) -> Result<Page<Location>>;
    /// A location's floor plans, newest first.
    fn location_floorplans(&self, id: LocationId) -> Result<Vec<FloorPlan>>;

    /// Adds a floor plan to a location; (location, floor) must be unused.
    fn create_floorplan(
        &self,
        location: LocationId,
        floor: i32,
        image: PlanImage,
    ) -> Result<FloorPlan>;
    /// Looks a floor plan up.
    fn floorplan(&self, id: FloorPlanId) -> Result<Option<FloorPlan>>;
    /// Moves a floor plan (location, floor) and replaces its image when one is given.
    fn update_floorplan(
        &self,
        id: FloorPlanId,
        location: LocationId,
        floor: i32,
        image: Option<PlanImage>,
    ) -> Result<(FloorPlan, Vec<PlanImageId>)>;
    /// Deletes a floor plan; devices on it stay at its location.
    fn delete_floorplan(&self, id: FloorPlanId) -> Result<Vec<PlanImageId>>;
    /// Floor plans of locations in scope, newest first.
    fn list_floorplans(&self, scope: &Scope, page: PageRequest) -> Result<Page<FloorPlan>>;
    /// Every image file a floor plan refers to (the start-up sweep).
    fn floorplan_images(&self) -> Result<Vec<PlanImageId>>;

    /// A device's link, location and floor plan.
    fn device_placement(
        &self,
        device: DeviceId,
    ) -> Result<Option<(DeviceLocation, Location, Option<FloorPlan>)>>;
    /// Places a device, creating or changing its location and floor plan as asked, in one
    /// transaction. References must exist (`NotFound`); the caller checks the rules.
    fn place_device(&self, device: DeviceId, placement: Placement) -> Result<Placed>;
    /// Removes a device's link to its location (the location stays).
    fn remove_device_location(&self, device: DeviceId) -> Result<()>;
    /// The devices at a location, newest first, and whether any is on a floor plan.
    fn devices_at(&self, id: LocationId, page: PageRequest) -> Result<(Page<Device>, bool)>;
    /// Locations in scope that devices are placed at, newest first, with their device count.
    fn located(&self, scope: &Scope) -> Result<Vec<(Location, u64)>>;
}

/// Firmware objects' persistence (files themselves live in [`crate::BlobStore`]).
pub trait FirmwareStore: Send + Sync + 'static {
    /// Creates a category; (organization, name) must be unused.
    fn create_category(&self, fields: CategoryFields) -> Result<Category>;
    /// Looks a category up.
    fn category(&self, id: CategoryId) -> Result<Option<Category>>;
    /// Replaces a category's fields.
    fn update_category(&self, id: CategoryId, fields: CategoryFields) -> Result<Category>;
    /// Deletes a category with its builds and images; returns the images whose files to delete.
    fn delete_category(&self, id: CategoryId) -> Result<Vec<ImageId>>;
    /// Categories of the scope's organizations plus shared ones, newest first; with `own`,
    /// only that organization's own categories (shared ones left out).
    fn list_categories(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        page: PageRequest,
    ) -> Result<Page<Category>>;

    /// Creates a build; (category, version) must be unused.
    fn create_build(&self, fields: BuildFields) -> Result<Build>;
    /// Looks a build up.
    fn build(&self, id: BuildId) -> Result<Option<Build>>;
    /// Replaces a build's fields.
    fn update_build(&self, id: BuildId, fields: BuildFields) -> Result<Build>;
    /// Deletes a build with its images; returns the images whose files to delete.
    fn delete_build(&self, id: BuildId) -> Result<Vec<ImageId>>;
    /// Builds of categories in scope (plus shared ones), newest first.
    fn list_builds(
        &self,
        scope: &Scope,
        filter: &BuildFilter,
        page: PageRequest,
    ) -> Result<Page<Build>>;

    /// Records an uploaded image; (build, type) must be unused.
    fn create_image(&self, image: Image) -> Result<Image>;
    /// Looks an image up.
    fn image(&self, id: ImageId) -> Result<Option<Image>>;
    /// Deletes an image's record (the caller removes its file).
    fn delete_image(&self, id: ImageId) -> Result<()>;
    /// A build's images, optionally of one type, newest first.
    fn list_images(
        &self,
        build: BuildId,
        kind: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Image>>;
}

/// Upgrades' persistence: device firmware, operations, batches, what devices report, image
/// types. The rollout engine is the only writer of operations in progress besides
/// [`UpgradeStore::cancel_upgrade`]/[`UpgradeStore::cancel_batch`], and its writes are refused for
/// operations that ended meanwhile, so a cancel and a step never both win.
pub trait UpgradeStore: Send + Sync + 'static {
    /// Creates operations (and their batch) in progress, points each device's firmware at the
    /// operation's image (not installed), and aborts the devices' earlier in-progress
    /// operations. Fails with `NotFound` if a device is gone.
    fn start_upgrades(&self, plan: UpgradePlan) -> Result<StartedUpgrades>;
    /// Stores new versions of in-progress operations and devices' reports, in one
    /// transaction. An operation that is no longer in progress (cancelled, deleted) is left
    /// alone; their ids are returned. A success marks the device's firmware installed. A
    /// report's missing resource keeps its stored value.
    fn write_upgrades(
        &self,
        operations: Vec<UpgradeOperation>,
        reports: Vec<(DeviceId, UpdateReport)>,
    ) -> Result<Vec<UpgradeId>>;
    /// Cancels an operation unless flashing began or it ended.
    fn cancel_upgrade(&self, id: UpgradeId) -> Result<CancelOutcome>;
    /// Cancels every operation of a batch that has not begun flashing; returns the batch and
    /// the operations cancelled.
    fn cancel_batch(&self, id: BatchId) -> Result<(Batch, Vec<UpgradeOperation>)>;
    /// Records why a batch stopped early.
    fn note_batch(&self, id: BatchId, note: String) -> Result<()>;
    /// Looks an operation up.
    fn upgrade(&self, id: UpgradeId) -> Result<Option<UpgradeOperation>>;
    /// Operations in scope passing the filter, newest first.
    fn list_upgrades(
        &self,
        scope: &Scope,
        filter: &UpgradeFilter,
        page: PageRequest,
    ) -> Result<Page<UpgradeOperation>>;
    /// Every operation in progress (the engine's work after a restart).
    fn active_upgrades(&self) -> Result<Vec<UpgradeOperation>>;
    /// Looks a batch up.
    fn batch(&self, id: BatchId) -> Result<Option<Batch>>;
    /// Batches of the scope's organizations (all for [`Scope::All`]), newest first.
    fn list_batches(
        &self,
        scope: &Scope,
        filter: &BatchFilter,
        page: PageRequest,
    ) -> Result<Page<Batch>>;
    /// The firmware a device should run.
    fn device_firmware(&self, device: DeviceId) -> Result<Option<DeviceFirmware>>;
    /// Forgets a device's firmware record.
    fn delete_device_firmware(&self, device: DeviceId) -> Result<()>;
    /// The npm.system_update resources a device reported last.
    fn update_report(&self, device: DeviceId) -> Result<Option<UpdateReport>>;
    /// Image types: the defaults plus operators' own, by name.
    fn image_types(&self) -> Result<Vec<ImageType>>;
    /// Adds an operator image type; its name must be unused.
    fn create_image_type(&self, image_type: ImageType) -> Result<ImageType>;
    /// Removes an operator image type (defaults cannot be removed: `NotFound`).
    fn delete_image_type(&self, name: &str) -> Result<()>;
    /// A 32-byte secret named `name`, created at random on first use and kept.
    fn secret(&self, name: &str) -> Result<[u8; 32]>;
    /// Every device's firmware record, in one read (planning a batch).
    fn device_firmwares(&self) -> Result<Vec<DeviceFirmware>>;
    /// Looks a location up (batch filters).
    fn location(&self, id: LocationId) -> Result<Option<Location>>;
    /// The devices placed at a location, in one read (batch filters).
    fn location_devices(&self, id: LocationId) -> Result<Vec<DeviceId>>;
}

/// Application software (OTAO, see [`crate::software`]): the catalogue, applications'
/// settings, endpoint filters, what devices run and the installations moving them. Same rules
/// as [`Backend`]: every method is one transaction. Tenancy: every software, application and
/// filter belongs to one organization; callers pass the organization they resolved for the
/// caller, and an object of another organization is `NotFound`.
pub trait SoftwareStore: Send + Sync + 'static {
    /// Publishes a version of application `app_name` of `org` (creating the application with
    /// default settings on its first version). `Unique::SoftwareVersion` if the version
    /// exists; `Rule { field: "filters", .. }` if a filter is not one of `org`'s.
    fn create_software(
        &self,
        org: OrgId,
        app_name: &str,
        version: semver::Version,
        fields: crate::SoftwareFields,
    ) -> Result<crate::Software>;
    /// One version of an application of `org`.
    fn software(
        &self,
        org: OrgId,
        app_name: &str,
        version: &semver::Version,
    ) -> Result<Option<crate::Software>>;
    /// Every version of an application of `org`, lowest version first (empty: no such
    /// application).
    fn list_software(&self, org: OrgId, app_name: &str) -> Result<Vec<crate::Software>>;
    /// Replaces what may change of a version (metadata, upgradable_from, strategy, filters,
    /// rollout limits; the specification stays) and clears its engine note. Same checks as
    /// [`SoftwareStore::create_software`].
    fn update_software(
        &self,
        id: crate::SoftwareId,
        fields: crate::SoftwareFields,
    ) -> Result<crate::Software>;
    /// Suspends a version's rollout, recording why (the engine's abort threshold tripped).
    fn suspend_software(&self, id: crate::SoftwareId, note: String) -> Result<()>;
    /// The organizations in `scope` that have an application named `app_name`.
    fn application_organizations(&self, scope: &Scope, app_name: &str) -> Result<Vec<OrgId>>;
    /// An application's settings.
    fn application(&self, org: OrgId, app_name: &str) -> Result<Option<crate::Application>>;
    /// Creates or replaces an application's settings.
    fn put_application(&self, application: crate::Application) -> Result<crate::Application>;

    /// Creates a filter.
    fn create_filter(&self, fields: crate::FilterFields) -> Result<crate::EndpointFilter>;
    /// Looks a filter up.
    fn filter(&self, id: crate::FilterId) -> Result<Option<crate::EndpointFilter>>;
    /// Filters of the scope's organizations, newest first.
    fn list_filters(&self, scope: &Scope, page: PageRequest)
    -> Result<Page<crate::EndpointFilter>>;
    /// Replaces a filter's fields (its organization may not change: `Rule`).
    fn update_filter(
        &self,
        id: crate::FilterId,
        fields: crate::FilterFields,
    ) -> Result<crate::EndpointFilter>;
    /// Deletes a filter; `InUse` while a software version names it.
    fn delete_filter(&self, id: crate::FilterId) -> Result<()>;
    /// The devices a filter matches now, in the devices' list order (newest first), paged.
    fn filter_endpoints(&self, id: crate::FilterId, page: PageRequest) -> Result<Page<Device>>;

    /// The applications a device runs, by name.
    fn device_software(&self, device: DeviceId) -> Result<Vec<crate::DeviceSoftware>>;
    /// Records what a device runs: with `replace`, `applications` is the whole inventory
    /// (the device's `up/software`); without, only those applications change (REST).
    /// `NotFound` if the device is gone.
    fn set_device_software(
        &self,
        device: DeviceId,
        applications: std::collections::BTreeMap<String, String>,
        replace: bool,
    ) -> Result<Vec<crate::DeviceSoftware>>;

    /// Everything deciding `org`'s installations takes, in one read: the catalogue, the
    /// applications' settings, the filters, the active devices with what they run and where
    /// they are, installations in progress, and the hops devices failed or declined.
    fn software_view(&self, org: OrgId) -> Result<crate::SoftwareView>;
    /// [`SoftwareStore::software_view`] over only `devices` (those of `org`; others are left
    /// out): deciding a few devices again costs a read of those devices, not of the fleet.
    fn software_view_of(&self, org: OrgId, devices: &[DeviceId]) -> Result<crate::SoftwareView>;
    /// Records many devices' whole inventories (their `up/software`) in one transaction;
    /// returns the devices that do not exist (left out).
    fn set_inventories(
        &self,
        inventories: Vec<(DeviceId, std::collections::BTreeMap<String, String>)>,
    ) -> Result<Vec<DeviceId>>;
    /// Organizations that have at least one software version.
    fn software_organizations(&self) -> Result<Vec<OrgId>>;
    /// Stores new installations (queued), skipping any whose device already has one in
    /// progress for the same application or is gone or deactivated; returns those stored.
    fn start_installations(
        &self,
        installations: Vec<crate::Installation>,
    ) -> Result<Vec<crate::Installation>>;
    /// Stores new versions of in-progress installations in one transaction, counting status
    /// changes into their software. An installation no longer in progress (its device was
    /// deleted or deactivated) is left alone; their ids are returned. `installed` (success)
    /// sets the device's version of the application in the same transaction.
    fn write_installations(
        &self,
        installations: Vec<crate::Installation>,
    ) -> Result<Vec<crate::InstallationId>>;
    /// Looks an installation up.
    fn installation(&self, id: crate::InstallationId) -> Result<Option<crate::Installation>>;
    /// Every installation in progress (the engine's work after a restart).
    fn active_installations(&self) -> Result<Vec<crate::Installation>>;
    /// A device's installations, newest first.
    fn device_installations(&self, device: DeviceId) -> Result<Vec<crate::Installation>>;
}

/// OAuth 2.0 clients and their access tokens (see [`crate::oauth`]). Same rules as
/// [`Backend`]: every method is one transaction.
pub trait OAuthStore: Send + Sync + 'static {
    /// Registers a client of `organization` (which must exist) with a fresh secret; returns
    /// it with the secret, which is shown once and kept only hashed.
    fn create_oauth_client(
        &self,
        name: String,
        organization: OrgId,
        scopes: Vec<crate::OAuthScope>,
    ) -> Result<(crate::OAuthClient, String)>;
    /// Looks a client up.
    fn oauth_client(&self, client_id: uuid::Uuid) -> Result<Option<crate::OAuthClient>>;
    /// Clients of the scope's organizations, newest first.
    fn list_oauth_clients(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> Result<Page<crate::OAuthClient>>;
    /// Deletes a client and every token issued to it.
    fn delete_oauth_client(&self, client_id: uuid::Uuid) -> Result<()>;
    /// Issues an access token to a client for `scopes`, valid `lifetime_secs`; returns the
    /// token (kept only hashed) and what it grants. Also forgets the client's expired tokens.
    /// `NotFound` if the client is gone.
    fn issue_access_token(
        &self,
        client_id: uuid::Uuid,
        scopes: Vec<crate::OAuthScope>,
        lifetime_secs: u64,
    ) -> Result<(String, crate::AccessGrant)>;
    /// What an access token grants now: `None` when unknown, expired, or its client or the
    /// client's organization is gone (so deleting either revokes its tokens at once).
    fn access_grant(&self, token: &str) -> Result<Option<crate::AccessGrant>>;
}

/// The MQTT broker's retained messages and persistent sessions, as opaque rows (see
/// [`crate::broker_state`]). Same rules as [`Backend`]: every method is one transaction.
pub trait BrokerStateStore: Send + Sync + 'static {
    /// Every broker row; read once, when the broker starts.
    fn load_broker_state(&self) -> Result<crate::BrokerRows>;
    /// Applies `changes` in order, in one durable write transaction: all of them or none.
    /// Deleting a session deletes its queued rows too, by a range over its key alone.
    fn apply_broker_state(&self, changes: Vec<crate::BrokerRowChange>) -> Result<()>;
}

/// Organizations' configuration settings (see [`crate::config_settings`]). Same rules as
/// [`Backend`]: every method is one transaction.
pub trait ConfigSettingsStore: Send + Sync + 'static {
    /// An organization's settings, created with defaults (and a random secret) when it has
    /// none yet; `NotFound` when the organization does not exist.
    fn config_settings(&self, org: OrgId) -> Result<crate::ConfigSettings>;
    /// Replaces an organization's settings; the secret must be no other organization's
    /// ([`crate::Unique::SharedSecret`]). When the variables change, every device of the
    /// organization is affected.
    fn replace_config_settings(
        &self,
        org: OrgId,
        settings: crate::ConfigSettings,
    ) -> Result<(crate::ConfigSettings, ConfigChange)>;
    /// The organization whose secret `secret` is, with its settings (device registration).
    fn organization_by_secret(
        &self,
        secret: &str,
    ) -> Result<Option<(Organization, crate::ConfigSettings)>>;
    /// Registers a device for the openwisp-config agent, or with `existing` replaces that
    /// device's fields. Unlike [`DeviceStore::create_device`] the device always ends up with
    /// a configuration (`config` when it has none, default templates applied), as OpenWISP's
    /// registration creates one.
    fn register_device(
        &self,
        existing: Option<DeviceId>,
        fields: DeviceFields,
        config: ConfigFields,
    ) -> Result<Device>;
}

/// What deciding a device's MQTT login takes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLogin {
    /// The device's key (its MQTT password).
    pub key: crate::DeviceKey,
    /// Deactivated devices may not connect.
    pub deactivated: bool,
    /// Its organization's slug (the topic level).
    pub org_slug: String,
    /// Devices of inactive organizations may not connect.
    pub org_active: bool,
}
