//! Devices: what they are called, how they authenticate, and the configuration they carry.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{DeviceId, OrgId, Timestamp};

/// A device name: a hostname or a MAC address, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceName(String);

impl DeviceName {
    /// Validates a name the way OpenWISP does.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("This field may not be blank.");
        }
        if s.chars().count() > 64 {
            return Err("Ensure this field has no more than 64 characters.");
        }
        if MacAddress::parse(s).is_ok() || is_hostname(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err("Must be either a valid hostname or mac address.")
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is checked on: names are unique per organization regardless of case.
    pub fn unique_form(&self) -> String {
        self.0.to_lowercase()
    }
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A MAC address, kept in upper case with colons.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MacAddress(String);

impl MacAddress {
    /// Six hex pairs separated by `:` or `-`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let separators_consistent = s.len() == 17;
        if separators_consistent
            && parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Ok(Self(parts.join(":").to_uppercase()))
        } else {
            Err("Enter a valid MAC address.")
        }
    }

    /// Canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A device's secret: its MQTT password and its key for the coordinates endpoint.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceKey(String);

impl DeviceKey {
    /// The fewest characters a key may have: a short key is guessed by brute force (the
    /// generated ones have 32).
    pub const MIN_LENGTH: usize = 16;

    /// 16 to 64 characters, no spaces, dots or slashes.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("This field may not be blank.");
        }
        if s.chars().count() > 64 {
            return Err("Ensure this field has no more than 64 characters.");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c == '.' || c == '/' || c == '\\')
        {
            return Err("Key must not contain spaces, dots or slashes.");
        }
        if s.chars().count() < Self::MIN_LENGTH {
            return Err("Ensure this field has at least 16 characters.");
        }
        Ok(Self(s.to_owned()))
    }

    /// 32 random hex characters, as OpenWISP generates.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison against what a client presented.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if ours.len() != candidate.len() {
            return false;
        }
        ours.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// The configuration backends OpenWISP knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfigBackend {
    /// OpenWrt UCI.
    #[serde(rename = "netjsonconfig.OpenWrt")]
    OpenWrt,
    /// OpenWISP firmware.
    #[serde(rename = "netjsonconfig.OpenWisp")]
    OpenWisp,
}

impl ConfigBackend {
    /// All backends, for validation messages and docs.
    pub const ALL: [ConfigBackend; 2] = [ConfigBackend::OpenWrt, ConfigBackend::OpenWisp];

    /// The dotted name clients send.
    pub fn name(self) -> &'static str {
        match self {
            ConfigBackend::OpenWrt => "netjsonconfig.OpenWrt",
            ConfigBackend::OpenWisp => "netjsonconfig.OpenWisp",
        }
    }

    /// Parses a dotted name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// Where a device's configuration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigStatus {
    /// Changed on the server, not yet applied by the device.
    Modified,
    /// Applied by the device.
    Applied,
    /// The device failed to apply it.
    Error,
    /// The device is being deactivated.
    Deactivating,
    /// The device is deactivated.
    Deactivated,
}

impl ConfigStatus {
    /// All statuses.
    pub const ALL: [ConfigStatus; 5] = [
        ConfigStatus::Modified,
        ConfigStatus::Applied,
        ConfigStatus::Error,
        ConfigStatus::Deactivating,
        ConfigStatus::Deactivated,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ConfigStatus::Modified => "modified",
            ConfigStatus::Applied => "applied",
            ConfigStatus::Error => "error",
            ConfigStatus::Deactivating => "deactivating",
            ConfigStatus::Deactivated => "deactivated",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// What a client may set of a device's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFields {
    /// Renderer.
    pub backend: ConfigBackend,
    /// Ordered template ids.
    pub templates: Vec<Uuid>,
    /// Variables for templates.
    pub context: Map<String, Value>,
    /// NetJSON configuration of the device itself.
    pub config: Map<String, Value>,
}

impl ConfigFields {
    /// OpenWISP creates no config when every field has its default.
    pub fn is_default(&self) -> bool {
        self.backend == ConfigBackend::OpenWrt
            && self.templates.is_empty()
            && self.context.is_empty()
            && self.config.is_empty()
    }
}

/// A device's stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// What the client set.
    pub fields: ConfigFields,
    /// Managed by the server and the device.
    pub status: ConfigStatus,
    /// Why the device failed to apply it.
    pub error_reason: String,
    /// Checksum of the archive it renders to, kept by the store: a write that leaves it
    /// unchanged leaves the status alone. Empty until first rendered.
    #[serde(default)]
    pub checksum: String,
}

/// The writable part of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceFields {
    /// Hostname or MAC.
    pub name: DeviceName,
    /// Owning tenant.
    pub organization: OrgId,
    /// Device group (groups arrive with configuration management).
    pub group: Option<Uuid>,
    /// Primary MAC address.
    pub mac_address: MacAddress,
    /// Secret used for MQTT and the coordinates endpoint.
    pub key: DeviceKey,
    /// Last address the device connected from.
    pub last_ip: Option<IpAddr>,
    /// Address the server can reach the device on.
    pub management_ip: Option<IpAddr>,
    /// Hardware model (board); decides firmware compatibility.
    pub model: String,
    /// Operating system identifier.
    pub os: String,
    /// System on chip.
    pub system: String,
    /// Free text.
    pub notes: String,
    /// Serial number or similar.
    pub hardware_id: String,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Identity; also the MQTT client id.
    pub id: DeviceId,
    /// What clients may change.
    pub fields: DeviceFields,
    /// Configuration, if any.
    pub config: Option<DeviceConfig>,
    /// A deactivated device may not connect or be changed, and can then be deleted.
    pub is_deactivated: bool,
    /// When it was registered.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// What connecting and notifying a device needs to know about it, kept beside the full
/// record (small rows: a fleet reconnecting reads and writes these, not every device's
/// record) and written with it. The address a device last connected from lives here alone
/// between writes of the record (a reconnect changes only this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceBrief {
    /// Owning tenant.
    #[serde(rename = "o")]
    pub organization: OrgId,
    /// Its key (MQTT password).
    #[serde(rename = "k")]
    pub key: DeviceKey,
    /// Deactivated devices may not connect.
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
    /// Last address the device connected from.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub last_ip: Option<IpAddr>,
    /// Checksum of a configuration the device is owed: rendered, `modified`, device active.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub config_owed: Option<String>,
}

impl DeviceBrief {
    /// The brief of `device` as it is now.
    pub fn of(device: &Device) -> Self {
        let config_owed = device
            .config
            .as_ref()
            .filter(|c| {
                !device.is_deactivated
                    && c.status == ConfigStatus::Modified
                    && !c.checksum.is_empty()
            })
            .map(|c| c.checksum.clone());
        Self {
            organization: device.fields.organization,
            key: device.fields.key.clone(),
            deactivated: device.is_deactivated,
            last_ip: device.fields.last_ip,
            config_owed,
        }
    }
}

/// Text a device list is searched for: a case-insensitive part of a device's name, MAC
/// address (written with `:`, `-` or no separators) or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSearch {
    /// The text, lower case.
    text: String,
    /// The text without `:` and `-`, when that leaves only hex digits: a MAC address written
    /// any way matches the stored one.
    hex: Option<String>,
}

impl DeviceSearch {
    /// A search for `text`; `None` for empty text (no search).
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim().to_lowercase();
        if text.is_empty() {
            return None;
        }
        let hex: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
        let hex = (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex);
        Some(Self { text, hex })
    }

    /// The text searched for, lower case.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `device` is found by this search.
    pub fn matches(&self, device: &Device) -> bool {
        let mac = device.fields.mac_address.as_str().to_lowercase();
        device
            .fields
            .name
            .as_str()
            .to_lowercase()
            .contains(&self.text)
            || mac.contains(&self.text)
            || self
                .hex
                .as_ref()
                .is_some_and(|hex| mac.replace(':', "").contains(hex.as_str()))
            || device.id.0.to_string().contains(&self.text)
    }
}

/// The order of a device list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceOrder {
    /// Newest first (the index order: the fast, default one).
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// By name, A to Z, ignoring case (equal names newest first).
    NameAscending,
    /// By name, Z to A, ignoring case (equal names newest first).
    NameDescending,
}

impl DeviceOrder {
    /// Every order.
    pub const ALL: [DeviceOrder; 4] = [
        DeviceOrder::NewestFirst,
        DeviceOrder::OldestFirst,
        DeviceOrder::NameAscending,
        DeviceOrder::NameDescending,
    ];

    /// The API's spelling (Django's `ordering`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceOrder::NewestFirst => "-created",
            DeviceOrder::OldestFirst => "created",
            DeviceOrder::NameAscending => "name",
            DeviceOrder::NameDescending => "-name",
        }
    }

    /// Parses the API's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// Whether a device is connected over MQTT now, and since when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Its MQTT session is open.
    pub online: bool,
    /// When its session last opened or ended (when the current state began); `None` for a
    /// device never connected.
    pub since: Option<Timestamp>,
}

/// How many presence changes a device's history keeps: the newest; each change past it drops
/// the oldest, so a device flapping for weeks costs no more than this.
pub const PRESENCE_HISTORY_LEN: u64 = 1_000;

/// One change of a device's presence: its MQTT session opened or ended (what the console's
/// presence history lists). Only changes are kept: a session recorded twice in one state
/// makes one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// Online (the session opened) or offline (it ended).
    pub online: bool,
    /// When the bridge saw it.
    pub at: Timestamp,
    /// Why the session ended when it did not say goodbye; empty when online.
    pub reason: String,
    /// The address it connected from (online only, when known).
    pub peer_ip: Option<IpAddr>,
}

/// Which devices a list should return (all conditions must hold), and in which order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    /// Configuration status.
    pub config_status: Option<ConfigStatus>,
    /// Configuration backend.
    pub config_backend: Option<ConfigBackend>,
    /// Uses this template.
    pub template: Option<Uuid>,
    /// Belongs to this group.
    pub group: Option<Uuid>,
    /// Has (true) or lacks (false) a location.
    pub with_geo: Option<bool>,
    /// Created at exactly this instant.
    pub created: Option<Timestamp>,
    /// Created at or after.
    pub created_gte: Option<Timestamp>,
    /// Created before.
    pub created_lt: Option<Timestamp>,
    /// Found by this search (name, MAC address or id).
    pub search: Option<DeviceSearch>,
    /// Of exactly this model.
    pub model: Option<String>,
    /// Connected over MQTT now (true) or not (false; a device never seen is not).
    pub is_online: Option<bool>,
    /// Runs a build of this version: its device firmware is installed and of such a build.
    pub firmware_version: Option<String>,
    /// The order of the list.
    pub order: DeviceOrder,
}

impl DeviceFilter {
    /// True when only the creation-time conditions (served from the index alone) are set.
    pub fn needs_records(&self) -> bool {
        self.config_status.is_some()
            || self.config_backend.is_some()
            || self.template.is_some()
            || self.group.is_some()
            || self.with_geo.is_some()
            || self.needs_scan()
    }

    /// True when the list is searched, ordered otherwise than newest first, or filtered on
    /// something besides the record (presence, firmware): the whole scope is walked.
    pub fn needs_scan(&self) -> bool {
        self.search.is_some()
            || self.model.is_some()
            || self.is_online.is_some()
            || self.firmware_version.is_some()
            || self.order != DeviceOrder::NewestFirst
    }

    /// Whether a device passes the record-level conditions.
    pub fn matches(&self, device: &Device, has_location: bool) -> bool {
        let config = device.config.as_ref();
        self.config_status
            .is_none_or(|s| config.is_some_and(|c| c.status == s))
            && self
                .config_backend
                .is_none_or(|b| config.is_some_and(|c| c.fields.backend == b))
            && self
                .template
                .is_none_or(|t| config.is_some_and(|c| c.fields.templates.contains(&t)))
            && self.group.is_none_or(|g| device.fields.group == Some(g))
            && self.with_geo.is_none_or(|w| w == has_location)
            && self.search.as_ref().is_none_or(|s| s.matches(device))
            && self
                .model
                .as_ref()
                .is_none_or(|m| device.fields.model == *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hostnames_or_macs() {
        assert!(DeviceName::parse("router-1.example.com").is_ok());
        assert!(DeviceName::parse("00:11:22:33:44:55").is_ok());
        assert!(DeviceName::parse("-bad").is_err());
        assert!(DeviceName::parse("has space").is_err());
        assert!(DeviceName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn macs_are_normalized_to_upper_case_colons() {
        let mac = MacAddress::parse("aa-bb-cc-dd-ee-0f").map(|m| m.0);
        assert_eq!(mac, Ok("AA:BB:CC:DD:EE:0F".to_owned()));
        assert!(MacAddress::parse("aa:bb:cc:dd:ee").is_err());
        assert!(MacAddress::parse("zz:bb:cc:dd:ee:ff").is_err());
    }

    fn device(name: &str, mac: &str) -> Device {
        let now = Timestamp::now();
        Device {
            id: DeviceId::new(),
            fields: DeviceFields {
                name: DeviceName::parse(name).expect("name"),
                organization: OrgId::new(),
                group: None,
                mac_address: MacAddress::parse(mac).expect("mac"),
                key: DeviceKey::generate(),
                last_ip: None,
                management_ip: None,
                model: String::new(),
                os: String::new(),
                system: String::new(),
                notes: String::new(),
                hardware_id: String::new(),
            },
            config: None,
            is_deactivated: false,
            created: now,
            modified: now,
        }
    }

    #[test]
    fn a_search_finds_part_of_a_name_mac_or_id_ignoring_case() {
        let router = device("Lobby-Router", "aa:bb:cc:dd:ee:0f");
        let found = |text: &str| DeviceSearch::new(text).is_some_and(|s| s.matches(&router));
        assert!(found("lobby"));
        assert!(found("BY-ROU"));
        assert!(found("DD:EE"));
        assert!(found("cc-dd-ee"));
        assert!(found("ccddee0f"));
        let id = router.id.0.to_string();
        assert!(found(&id[9..18]));
        assert!(found(&id.to_uppercase()));
        assert!(!found("kitchen"));
        assert!(!found("ab:cd"));
        assert!(DeviceSearch::new("  ").is_none(), "blank is no search");
    }

    #[test]
    fn orders_parse_from_their_api_names() {
        for order in DeviceOrder::ALL {
            assert_eq!(DeviceOrder::parse(order.name()), Some(order));
        }
        assert_eq!(DeviceOrder::default().name(), "-created");
        assert_eq!(DeviceOrder::parse("mac_address"), None);
    }

    #[test]
    fn keys_refuse_spaces_dots_and_slashes() {
        assert!(DeviceKey::parse("a.b").is_err());
        assert!(DeviceKey::parse("a b").is_err());
        assert!(DeviceKey::parse("a/b").is_err());
        assert_eq!(DeviceKey::generate().as_str().len(), 32);
        let key = "abc-0123456789ab";
        assert!(
            DeviceKey::parse(key)
                .is_ok_and(|k| k.matches(key.as_bytes()) && !k.matches(b"abd-0123456789ab"))
        );
    }

    #[test]
    fn keys_shorter_than_16_characters_are_refused() {
        assert_eq!(
            DeviceKey::parse("k"),
            Err("Ensure this field has at least 16 characters.")
        );
        assert!(DeviceKey::parse(&"k".repeat(15)).is_err());
        assert!(DeviceKey::parse(&"k".repeat(16)).is_ok());
        // The character rule is named first: it is the one a longer key would not fix.
        assert_eq!(
            DeviceKey::parse("a.b"),
            Err("Key must not contain spaces, dots or slashes.")
        );
    }
}
