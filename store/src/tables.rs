//! Every redb table, in one place. Values are JSON-encoded domain records; index tables map
//! byte keys built from ids and timestamps so ranges come out in the order lists need.

use crate::Result;
use crate::kv::{Key, TableDefinition, Value};

/// Schema version of the data file this build writes. 2: `telemetry_bytes` keeps each
/// device's history size (a build without it would let the sizes drift). 3: templates and
/// device groups, with indexes a build without them would not keep. 4: configuration checksums
/// and organizations' configuration settings (secret index); a configuration stored by an older
/// build has no checksum until its next change renders it.
/// 5: certificate authorities and certificates (private keys sealed with the server secret),
/// VPN servers and their clients; device groups no longer keep certificates' common names
/// themselves.
/// 6: application software (OTAO): software versions, applications, endpoint filters, devices'
/// software and installations, with indexes (versions, in-progress installations, refused hops)
/// a build without them would not keep. Older files get the new tables, empty, at open.
/// Also in 6: OAuth clients of the OTAO API and their access tokens (hashed).
/// 7: the MQTT broker's retained messages, persistent sessions and their queued messages
/// (`broker_*`); a build without them would lose them. Older files get the new tables, empty,
/// at open.
/// 8: leases (`leases`), which several nodes on one PostgreSQL database take in turn; a build
/// without them would not honour them.
/// 9: devices' briefs (`device_briefs`: organization, key, deactivated, last address, owed
/// configuration), which connects read instead of the device records; the last address is
/// kept there alone between writes of the record. Filled from the devices at open. Also in 9:
/// connections' health as sessions leave it (`connection_health`); devices get their MQTT
/// connection when they are created (older devices at their next connect).
/// 10: devices' presence history (`presence_history`), trimmed and deleted with the device by
/// this build only (a build without it would leave a deleted device's rows behind). Older
/// files get the table, empty, at open: history starts at the next change.
pub const SCHEMA_VERSION: u64 = 10;

/// `"schema_version"` → version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Named counters (`devices`, `devices/<org>`) so counts need no scan.
pub const COUNTERS: TableDefinition<&[u8], u64> = TableDefinition::new("counters");

/// id → organization.
pub const ORGANIZATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("organizations");
/// slug → id.
pub const ORGANIZATION_SLUGS: TableDefinition<&str, u128> =
    TableDefinition::new("organization_slugs");
/// created ‖ id → () (newest-first listing).
pub const ORGANIZATIONS_BY_CREATED: TableDefinition<&[u8], ()> =
    TableDefinition::new("organizations_by_created");

/// id → user.
pub const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// username → id.
pub const USERNAMES: TableDefinition<&str, u128> = TableDefinition::new("usernames");
/// lower-case e-mail → id.
pub const USER_EMAILS: TableDefinition<&str, u128> = TableDefinition::new("user_emails");
/// date_joined ‖ id → ().
pub const USERS_BY_CREATED: TableDefinition<&[u8], ()> = TableDefinition::new("users_by_created");
/// org ‖ user → () (who belongs to an organization).
pub const ORGANIZATION_MEMBERS: TableDefinition<&[u8], ()> =
    TableDefinition::new("organization_members");

/// SHA-256 of a token → user id.
pub const TOKENS: TableDefinition<&[u8], u128> = TableDefinition::new("tokens");
/// user ‖ token hash → () (so a user's tokens go with the user).
pub const USER_TOKENS: TableDefinition<&[u8], ()> = TableDefinition::new("user_tokens");

/// id → device.
pub const DEVICES: TableDefinition<u128, &[u8]> = TableDefinition::new("devices");
/// id → device brief (`DeviceBrief`), written with the device; its `last_ip` is the device's.
pub const DEVICE_BRIEFS: TableDefinition<u128, &[u8]> = TableDefinition::new("device_briefs");
/// created ‖ id → ().
pub const DEVICES_BY_CREATED: TableDefinition<&[u8], ()> =
    TableDefinition::new("devices_by_created");
/// org ‖ created ‖ id → ().
pub const DEVICES_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("devices_by_org");
/// org ‖ lower-case name → id.
pub const DEVICE_NAMES: TableDefinition<&[u8], u128> = TableDefinition::new("device_names");
/// org ‖ MAC → id.
pub const DEVICE_MACS: TableDefinition<&[u8], u128> = TableDefinition::new("device_macs");
/// key → id.
pub const DEVICE_KEYS: TableDefinition<&str, u128> = TableDefinition::new("device_keys");
/// device id → location (filled by the device plane; read by the `with_geo` filter).
pub const DEVICE_LOCATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("device_locations");

/// id → location.
pub const LOCATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("locations");
/// id → floor plan.
pub const FLOORPLANS: TableDefinition<u128, &[u8]> = TableDefinition::new("floorplans");
/// location ‖ floor plan id → () (a location's floors go with it; (location, floor) is unique).
pub const LOCATION_FLOORPLANS: TableDefinition<&[u8], ()> =
    TableDefinition::new("location_floorplans");

/// id → credentials.
pub const CREDENTIALS: TableDefinition<u128, &[u8]> = TableDefinition::new("credentials");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const CREDENTIALS_BY_ORG: TableDefinition<&[u8], ()> =
    TableDefinition::new("credentials_by_org");
/// org → id of the organization's MQTT credentials (created on first use).
pub const MQTT_CREDENTIALS: TableDefinition<u128, u128> = TableDefinition::new("mqtt_credentials");

/// id → device connection.
pub const CONNECTIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("connections");
/// connection id → its health as an MQTT session last left it (`ConnectionHealth`), newer
/// than the record's own; a device's connect writes this small row, not its connection.
pub const CONNECTION_HEALTH: TableDefinition<u128, &[u8]> =
    TableDefinition::new("connection_health");
/// device ‖ created ‖ id → ().
pub const DEVICE_CONNECTIONS: TableDefinition<&[u8], ()> =
    TableDefinition::new("device_connections");
/// device ‖ credentials → connection id ((device, credentials) is unique).
pub const CONNECTION_PAIRS: TableDefinition<&[u8], u128> = TableDefinition::new("connection_pairs");
/// credentials ‖ connection → () (connections go with their credentials).
pub const CREDENTIALS_CONNECTIONS: TableDefinition<&[u8], ()> =
    TableDefinition::new("credentials_connections");

/// id → command.
pub const COMMANDS: TableDefinition<u128, &[u8]> = TableDefinition::new("commands");
/// device ‖ created ‖ id → ().
pub const DEVICE_COMMANDS: TableDefinition<&[u8], ()> = TableDefinition::new("device_commands");
/// created ‖ id → device id, for commands still in progress.
pub const PENDING_COMMANDS: TableDefinition<&[u8], u128> = TableDefinition::new("pending_commands");

/// device → its latest telemetry sample.
pub const TELEMETRY_LATEST: TableDefinition<u128, &[u8]> = TableDefinition::new("telemetry_latest");
/// device ‖ measured ‖ sequence → sample.
pub const TELEMETRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("telemetry");
/// device → bytes of its samples in `telemetry` (its history is bounded by size). Missing for
/// a device whose history predates schema 2: counted from `telemetry` on its next write.
pub const TELEMETRY_BYTES: TableDefinition<u128, u64> = TableDefinition::new("telemetry_bytes");

/// device ‖ sequence (u64, big-endian, from 0) → a change of the device's presence: its MQTT
/// session turning online or offline, written with the change (where its live event is made).
/// Keyed by the order of recording rather than by time, so a device's history is one range
/// read newest first from its end, its oldest row is the range's start, and a wall clock set
/// back cannot reorder it; each row holds its time. At most
/// [`PRESENCE_HISTORY_LEN`](crate::PRESENCE_HISTORY_LEN) per device: the oldest go as new ones
/// come, the rest with the device.
pub const PRESENCE_HISTORY: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("presence_history");

/// id → firmware category.
pub const CATEGORIES: TableDefinition<u128, &[u8]> = TableDefinition::new("categories");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const CATEGORIES_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("categories_by_org");
/// org ‖ lower-case name → id.
pub const CATEGORY_NAMES: TableDefinition<&[u8], u128> = TableDefinition::new("category_names");
/// id → firmware build.
pub const BUILDS: TableDefinition<u128, &[u8]> = TableDefinition::new("builds");
/// category ‖ created ‖ id → ().
pub const BUILDS_BY_CATEGORY: TableDefinition<&[u8], ()> =
    TableDefinition::new("builds_by_category");
/// category ‖ version → id.
pub const BUILD_VERSIONS: TableDefinition<&[u8], u128> = TableDefinition::new("build_versions");
/// id → firmware image.
pub const IMAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("images");
/// build ‖ type → id.
pub const IMAGES_BY_BUILD: TableDefinition<&[u8], u128> = TableDefinition::new("images_by_build");

/// id → upgrade operation.
pub const UPGRADES: TableDefinition<u128, &[u8]> = TableDefinition::new("upgrades");
/// created ‖ id → () (every operation, newest first).
pub const UPGRADES_BY_CREATED: TableDefinition<&[u8], ()> =
    TableDefinition::new("upgrades_by_created");
/// device ‖ created ‖ id → ().
pub const DEVICE_UPGRADES: TableDefinition<&[u8], ()> = TableDefinition::new("device_upgrades");
/// batch ‖ created ‖ id → ().
pub const BATCH_UPGRADES: TableDefinition<&[u8], ()> = TableDefinition::new("batch_upgrades");
/// id → () for operations in progress (what the rollout engine resumes).
pub const ACTIVE_UPGRADES: TableDefinition<u128, ()> = TableDefinition::new("active_upgrades");
/// id → batch.
pub const BATCHES: TableDefinition<u128, &[u8]> = TableDefinition::new("batches");
/// created ‖ id → ().
pub const BATCHES_BY_CREATED: TableDefinition<&[u8], ()> =
    TableDefinition::new("batches_by_created");
/// device → the firmware it should run.
pub const DEVICE_FIRMWARE: TableDefinition<u128, &[u8]> = TableDefinition::new("device_firmware");
/// device → its last reported npm.system_update resources.
pub const UPDATE_REPORTS: TableDefinition<u128, &[u8]> = TableDefinition::new("update_reports");
/// name → image type added by operators.
pub const IMAGE_TYPES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_types");
/// name → secret bytes (e.g. the key signing device download links).
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// id → template.
pub const TEMPLATES: TableDefinition<u128, &[u8]> = TableDefinition::new("templates");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const TEMPLATES_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("templates_by_org");
/// (name, org or 0 for shared) → id: names unique per organization, shared names everywhere.
pub const TEMPLATE_NAMES: TableDefinition<(&str, u128), u128> =
    TableDefinition::new("template_names");
/// template ‖ device → (): the devices whose configuration uses a template (what a template
/// change re-renders).
pub const TEMPLATE_DEVICES: TableDefinition<&[u8], ()> = TableDefinition::new("template_devices");
/// template ‖ group → (): the groups listing a template.
pub const TEMPLATE_GROUPS: TableDefinition<&[u8], ()> = TableDefinition::new("template_groups");

/// id → device group.
pub const GROUPS: TableDefinition<u128, &[u8]> = TableDefinition::new("groups");
/// org ‖ created ‖ id → ().
pub const GROUPS_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("groups_by_org");
/// org ‖ name → id.
pub const GROUP_NAMES: TableDefinition<&[u8], u128> = TableDefinition::new("group_names");
/// group ‖ device → (): a group's devices.
pub const GROUP_DEVICES: TableDefinition<&[u8], ()> = TableDefinition::new("group_devices");

/// CA id → CA (private keys sealed, see [`crate::pki`]).
pub const CAS: TableDefinition<u128, &[u8]> = TableDefinition::new("cas");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const CAS_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("cas_by_org");
/// DER subject name ‖ id → (): the CAs a presented certificate's issuer may be.
pub const CAS_BY_SUBJECT: TableDefinition<&[u8], ()> = TableDefinition::new("cas_by_subject");
/// CA id → its current CRL (PEM), regenerated on every revocation.
pub const CRLS: TableDefinition<u128, &str> = TableDefinition::new("crls");
/// CA ‖ decimal serial → revocation time (µs): revoked, renewed and deleted certificates.
pub const REVOKED_SERIALS: TableDefinition<&[u8], i64> = TableDefinition::new("revoked_serials");
/// cert id → certificate (private keys sealed).
pub const CERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("certs");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const CERTS_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("certs_by_org");
/// CA ‖ cert → () (a CA's certificates are renewed and deleted with it).
pub const CA_CERTS: TableDefinition<&[u8], ()> = TableDefinition::new("ca_certs");
/// (common name, cert id) → () (`/cert/{common_name}/group/`).
pub const CERTS_BY_COMMON_NAME: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("certs_by_common_name");
/// device ‖ cert → (): certificates issued to a device.
pub const DEVICE_CERTS: TableDefinition<&[u8], ()> = TableDefinition::new("device_certs");

/// VPN id → VPN server (WireGuard private key sealed).
pub const VPNS: TableDefinition<u128, &[u8]> = TableDefinition::new("vpns");
/// org (16 zero bytes for shared) ‖ created ‖ id → ().
pub const VPNS_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("vpns_by_org");
/// org (16 zero bytes for shared) ‖ lower-case name → id.
pub const VPN_NAMES: TableDefinition<&[u8], u128> = TableDefinition::new("vpn_names");
/// device ‖ vpn → the device's client of that VPN (private key sealed).
pub const VPN_CLIENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vpn_clients");
/// vpn ‖ device → () (a server's peers).
pub const VPN_PEERS: TableDefinition<&[u8], ()> = TableDefinition::new("vpn_peers");
/// vpn ‖ address (text) → holder (device id, or 0 for the server): no address twice.
pub const VPN_ADDRESSES: TableDefinition<&[u8], u128> = TableDefinition::new("vpn_addresses");

/// organization → its configuration settings (registration, shared secret, variables).
pub const ORG_CONFIG_SETTINGS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("org_config_settings");
/// shared secret → organization (registration finds the organization by its secret).
pub const ORG_SHARED_SECRETS: TableDefinition<&str, u128> =
    TableDefinition::new("org_shared_secrets");

/// software id → software version (OTAO).
pub const SOFTWARE: TableDefinition<u128, &[u8]> = TableDefinition::new("software");
/// org ‖ app name ‖ 0x00 ‖ version (text) → software id: versions are unique per application,
/// and an organization's (or one application's) versions are one range. App names hold no
/// control character, so the 0x00 ends the name.
pub const SOFTWARE_VERSIONS: TableDefinition<&[u8], u128> =
    TableDefinition::new("software_versions");
/// org ‖ app name → application settings.
pub const APPLICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("applications");
/// (app name, org) → (): the organizations having an application of that name.
pub const APPLICATION_ORGS: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("application_orgs");
/// filter id → endpoint filter.
pub const FILTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("filters");
/// org ‖ created ‖ id → ().
pub const FILTERS_BY_ORG: TableDefinition<&[u8], ()> = TableDefinition::new("filters_by_org");
/// device ‖ app name → the version of that application the device runs.
pub const DEVICE_SOFTWARE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("device_software");
/// installation id → installation.
pub const INSTALLATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("installations");
/// device ‖ created ‖ id → ().
pub const DEVICE_INSTALLATIONS: TableDefinition<&[u8], ()> =
    TableDefinition::new("device_installations");
/// device ‖ app name → id of the device's installation of that application in progress (at
/// most one).
pub const ACTIVE_INSTALLATIONS: TableDefinition<&[u8], u128> =
    TableDefinition::new("active_installations");
/// device ‖ software → id of the device's latest failed or declined installation of that
/// software; gone once a later one succeeds (what the decision must not offer again).
pub const REFUSED_HOPS: TableDefinition<&[u8], u128> = TableDefinition::new("refused_hops");

// OAuth 2.0 clients (OTAO API, otao-api branch).
/// client id → OAuth client (secret hashed).
pub const OAUTH_CLIENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("oauth_clients");
/// org ‖ created ‖ client id → () (an organization's clients, newest first).
pub const OAUTH_CLIENTS_BY_ORG: TableDefinition<&[u8], ()> =
    TableDefinition::new("oauth_clients_by_org");
/// SHA-256 of an access token → its grant (client, organization, scopes, expiry).
pub const OAUTH_TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("oauth_tokens");
/// client ‖ token hash → () (a client's tokens go with it).
pub const OAUTH_CLIENT_TOKENS: TableDefinition<&[u8], ()> =
    TableDefinition::new("oauth_client_tokens");

// The MQTT broker's state (broker persistence). Records are the broker's own opaque bytes.
/// topic → retained-message record.
pub const BROKER_RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("broker_retained");
/// persistent session key → session record.
pub const BROKER_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("broker_sessions");
/// (session key, sequence number) → queued-message record. Tuple keys compare the whole key
/// first, so one session's rows are one range (`(key, 0)..=(key, u64::MAX)`) that no other
/// session's rows fall into, whatever their keys share as a prefix.
pub const BROKER_QUEUED: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("broker_queued");

/// lease name → lease record (see [`crate::lease`]).
pub const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// Something done to every table in turn: creating them at open, copying a store, comparing
/// two copies.
pub trait EveryTable {
    /// Called once per table, in the order of [`every_table`].
    fn table<K: Key, V: Value + 'static>(
        &mut self,
        definition: TableDefinition<K, V>,
    ) -> Result<()>;
}

/// Calls `visit` with every table fleetmq keeps ([`META`] first). A new table goes here too.
pub fn every_table(visit: &mut impl EveryTable) -> Result<()> {
    visit.table(META)?;
    visit.table(COUNTERS)?;
    visit.table(ORGANIZATIONS)?;
    visit.table(ORGANIZATION_SLUGS)?;
    visit.table(ORGANIZATIONS_BY_CREATED)?;
    visit.table(USERS)?;
    visit.table(USERNAMES)?;
    visit.table(USER_EMAILS)?;
    visit.table(USERS_BY_CREATED)?;
    visit.table(ORGANIZATION_MEMBERS)?;
    visit.table(TOKENS)?;
    visit.table(USER_TOKENS)?;
    visit.table(DEVICES)?;
    visit.table(DEVICE_BRIEFS)?;
    visit.table(DEVICES_BY_CREATED)?;
    visit.table(DEVICES_BY_ORG)?;
    visit.table(DEVICE_NAMES)?;
    visit.table(DEVICE_MACS)?;
    visit.table(DEVICE_KEYS)?;
    visit.table(DEVICE_LOCATIONS)?;
    visit.table(LOCATIONS)?;
    visit.table(FLOORPLANS)?;
    visit.table(LOCATION_FLOORPLANS)?;
    visit.table(CREDENTIALS)?;
    visit.table(CREDENTIALS_BY_ORG)?;
    visit.table(MQTT_CREDENTIALS)?;
    visit.table(CONNECTIONS)?;
    visit.table(CONNECTION_HEALTH)?;
    visit.table(DEVICE_CONNECTIONS)?;
    visit.table(CONNECTION_PAIRS)?;
    visit.table(CREDENTIALS_CONNECTIONS)?;
    visit.table(COMMANDS)?;
    visit.table(DEVICE_COMMANDS)?;
    visit.table(PENDING_COMMANDS)?;
    visit.table(TELEMETRY_LATEST)?;
    visit.table(TELEMETRY)?;
    visit.table(TELEMETRY_BYTES)?;
    visit.table(PRESENCE_HISTORY)?;
    visit.table(CATEGORIES)?;
    visit.table(CATEGORIES_BY_ORG)?;
    visit.table(CATEGORY_NAMES)?;
    visit.table(BUILDS)?;
    visit.table(BUILDS_BY_CATEGORY)?;
    visit.table(BUILD_VERSIONS)?;
    visit.table(IMAGES)?;
    visit.table(IMAGES_BY_BUILD)?;
    visit.table(UPGRADES)?;
    visit.table(UPGRADES_BY_CREATED)?;
    visit.table(DEVICE_UPGRADES)?;
    visit.table(BATCH_UPGRADES)?;
    visit.table(ACTIVE_UPGRADES)?;
    visit.table(BATCHES)?;
    visit.table(BATCHES_BY_CREATED)?;
    visit.table(DEVICE_FIRMWARE)?;
    visit.table(UPDATE_REPORTS)?;
    visit.table(IMAGE_TYPES)?;
    visit.table(SECRETS)?;
    visit.table(TEMPLATES)?;
    visit.table(TEMPLATES_BY_ORG)?;
    visit.table(TEMPLATE_NAMES)?;
    visit.table(TEMPLATE_DEVICES)?;
    visit.table(TEMPLATE_GROUPS)?;
    visit.table(GROUPS)?;
    visit.table(GROUPS_BY_ORG)?;
    visit.table(GROUP_NAMES)?;
    visit.table(GROUP_DEVICES)?;
    visit.table(CAS)?;
    visit.table(CAS_BY_ORG)?;
    visit.table(CAS_BY_SUBJECT)?;
    visit.table(CRLS)?;
    visit.table(REVOKED_SERIALS)?;
    visit.table(CERTS)?;
    visit.table(CERTS_BY_ORG)?;
    visit.table(CA_CERTS)?;
    visit.table(CERTS_BY_COMMON_NAME)?;
    visit.table(DEVICE_CERTS)?;
    visit.table(VPNS)?;
    visit.table(VPNS_BY_ORG)?;
    visit.table(VPN_NAMES)?;
    visit.table(VPN_CLIENTS)?;
    visit.table(VPN_PEERS)?;
    visit.table(VPN_ADDRESSES)?;
    visit.table(ORG_CONFIG_SETTINGS)?;
    visit.table(ORG_SHARED_SECRETS)?;
    visit.table(SOFTWARE)?;
    visit.table(SOFTWARE_VERSIONS)?;
    visit.table(APPLICATIONS)?;
    visit.table(APPLICATION_ORGS)?;
    visit.table(FILTERS)?;
    visit.table(FILTERS_BY_ORG)?;
    visit.table(DEVICE_SOFTWARE)?;
    visit.table(INSTALLATIONS)?;
    visit.table(DEVICE_INSTALLATIONS)?;
    visit.table(ACTIVE_INSTALLATIONS)?;
    visit.table(REFUSED_HOPS)?;
    visit.table(OAUTH_CLIENTS)?;
    visit.table(OAUTH_CLIENTS_BY_ORG)?;
    visit.table(OAUTH_TOKENS)?;
    visit.table(OAUTH_CLIENT_TOKENS)?;
    visit.table(BROKER_RETAINED)?;
    visit.table(BROKER_SESSIONS)?;
    visit.table(BROKER_QUEUED)?;
    visit.table(LEASES)?;
    Ok(())
}
