//! A device's rendered configuration, and the seam where it may have changed.
//!
//! Every write that can change what a device's configuration renders to (its templates, its
//! own config or context, its group or organization, a template it uses, its group's
//! templates or context, its organization's variables) names the affected devices to one
//! function inside its transaction, `kv_backend::configuration_changed`. That function
//! renders each of them ([`render_device`]) and compares the archive's checksum with the stored
//! one: only a device whose checksum changed gets the new checksum and the `modified` status,
//! in the same transaction, and only those devices are announced after the commit as one
//! [`ConfigChange`] on [`ConfigChanges`] ([`crate::Backend::config_changes`]), for the bridge to
//! notify. Affected devices are found through index tables (template → devices, group →
//! devices), never by scanning every device.
//!
//! Delivery is a bounded broadcast: a subscriber that falls behind is told it lagged and must
//! assume that every configuration changed. The stored `modified` status is the durable record
//! a notice is still owed, so nothing depends on the broadcast being heard.
//!
//! Nodes sharing a PostgreSQL database announce each other's changes too: the write hands
//! its change to its transaction, and every other node announces it once the commit's notice
//! arrives. A node whose notice listener lost its connection cannot know which changes it
//! missed, and there is no "every configuration" change to announce: devices connected to it
//! then get their owed notices when they next connect (the `modified` status says so), not at
//! once.

use std::collections::BTreeMap;

use fleetmq_netjson::Backend as Renderer;
/// Where a NetJSON configuration is wrong (a JSON pointer into it) and why.
pub use fleetmq_netjson::Invalid;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::{
    ConfigBackend, ConfigStatus, Device, DeviceConfig, DeviceId, Template, TemplateFields,
};

/// What a device downloads: the configuration archive (deterministic tar.gz) and its
/// checksum (lowercase hex MD5 of the archive, as OpenWISP serves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    /// The tar.gz bytes.
    pub archive: Vec<u8>,
    /// MD5 of `archive`, lowercase hex.
    pub checksum: String,
}

impl RenderedConfig {
    pub(crate) fn of(files: &[fleetmq_netjson::File]) -> Self {
        let archive = fleetmq_netjson::archive(files);
        let checksum = fleetmq_netjson::checksum(&archive);
        Self { archive, checksum }
    }
}

/// What a device reported after applying, or failing to apply, its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOutcome {
    /// [`ConfigStatus::Applied`] or [`ConfigStatus::Error`]; others are refused.
    pub status: ConfigStatus,
    /// The checksum the device applied. `None` (the HTTP agent sends none) means the current
    /// one; a report about an older checksum is ignored, as a newer notice is on its way.
    pub checksum: Option<String>,
    /// Why it failed; empty when applied.
    pub error_reason: String,
}

/// What a device's configuration renders from, besides the device itself.
#[derive(Debug, Clone, Copy)]
pub struct RenderSources<'a> {
    /// The configuration's templates that exist, in the configuration's order.
    pub templates: &'a [&'a Template],
    /// The organization's configuration variables.
    pub organization_context: &'a Map<String, Value>,
    /// The device group's context, when the device has a group.
    pub group_context: Option<&'a Map<String, Value>>,
    /// The variables of the device's VPN clients (certificates, keys, addresses).
    pub vpn_variables: &'a BTreeMap<String, String>,
}

fn renderer(backend: ConfigBackend) -> Renderer {
    match backend {
        ConfigBackend::OpenWrt => Renderer::OpenWrt,
        ConfigBackend::OpenWisp => Renderer::OpenWisp,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `{{ variables }}` a device's configuration is rendered with, lowest precedence first:
/// template default_values (later templates win), organization variables, the device's VPN
/// clients' variables (certificates, keys, addresses, as OpenWISP names them), group context,
/// configuration context, then the device's `id`, `key`, `name` and `mac_address`.
pub fn device_variables(
    device: &Device,
    config: &DeviceConfig,
    sources: RenderSources<'_>,
) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let defaults = sources
        .templates
        .iter()
        .map(|t| &t.fields.default_values)
        .chain([sources.organization_context]);
    for layer in defaults {
        vars.extend(layer.iter().map(|(k, v)| (k.clone(), text(v))));
    }
    vars.extend(
        sources
            .vpn_variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for layer in sources
        .group_context
        .into_iter()
        .chain([&config.fields.context])
    {
        vars.extend(layer.iter().map(|(k, v)| (k.clone(), text(v))));
    }
    vars.insert("id".into(), device.id.to_string());
    vars.insert("key".into(), device.fields.key.as_str().to_owned());
    vars.insert("name".into(), device.fields.name.as_str().to_owned());
    vars.insert(
        "mac_address".into(),
        device.fields.mac_address.as_str().to_owned(),
    );
    vars
}

/// Renders a device's configuration as OpenWISP does: its templates merged in order, then its
/// own config; `{{ variables }}` substituted ([`device_variables`]); a missing
/// `general.hostname` set to the device's name (':' → '-'); validated and rendered for the
/// configuration's backend; archived. The error points into the merged configuration.
pub fn render_device(
    device: &Device,
    config: &DeviceConfig,
    sources: RenderSources<'_>,
) -> Result<RenderedConfig, Invalid> {
    let own = Value::Object(config.fields.config.clone());
    let templates: Vec<Value> = sources
        .templates
        .iter()
        .map(|t| Value::Object(t.fields.config.clone()))
        .collect();
    let layers: Vec<&Value> = templates.iter().chain([&own]).collect();
    let merged = fleetmq_netjson::merge(&layers)?;
    let mut rendered =
        fleetmq_netjson::substitute(&merged, &device_variables(device, config, sources));
    if let Value::Object(root) = &mut rendered {
        let general = root
            .entry("general")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(general) = general
            && !general.contains_key("hostname")
        {
            general.insert(
                "hostname".into(),
                Value::String(fleetmq_netjson::hostname_from_device_name(
                    device.fields.name.as_str(),
                )),
            );
        }
    }
    let files = fleetmq_netjson::render(&rendered, renderer(config.fields.backend))?;
    Ok(RenderedConfig::of(&files))
}

/// A template's config with its own default_values substituted: what OpenWISP validates and
/// what the template's configuration download renders. A template is a fragment: the
/// hostname the OpenWisp backend requires comes from each device, so a template without one
/// is checked and rendered with the placeholder netjsonconfig's OpenWrt backend uses.
fn template_config(fields: &TemplateFields) -> Value {
    // A VPN-client template alone has no device: its per-device variables get sample values
    // of the right shape (as OpenWISP validates it with placeholder context).
    let mut vars: BTreeMap<String, String> = match fields.vpn {
        Some(vpn) if fields.kind == crate::TemplateType::Vpn => {
            crate::vpn::sample_client_variables(crate::VpnId(vpn))
        }
        _ => BTreeMap::new(),
    };
    vars.extend(
        fields
            .default_values
            .iter()
            .map(|(k, v)| (k.clone(), text(v))),
    );
    let mut config = fleetmq_netjson::substitute(&Value::Object(fields.config.clone()), &vars);
    if fields.backend == ConfigBackend::OpenWisp
        && let Value::Object(root) = &mut config
        && let Value::Object(general) = root
            .entry("general")
            .or_insert_with(|| Value::Object(Map::new()))
    {
        general
            .entry("hostname")
            .or_insert_with(|| Value::String("OpenWRT".into()));
    }
    config
}

/// Checks a template's config as OpenWISP does before storing it: valid NetJSON for its
/// backend once its default_values are substituted.
pub fn check_template(fields: &TemplateFields) -> Result<(), Invalid> {
    fleetmq_netjson::validate(&template_config(fields), renderer(fields.backend))
}

/// Renders a template alone, its `{{ variables }}` taken from its default_values (OpenWISP's
/// template configuration download).
pub fn render_template(template: &Template) -> Result<RenderedConfig, Invalid> {
    let config = template_config(&template.fields);
    let files = fleetmq_netjson::render(&config, renderer(template.fields.backend))?;
    Ok(RenderedConfig::of(&files))
}

/// Announcements kept for a slow subscriber before it is told it lagged.
const BACKLOG: usize = 1024;

/// Devices whose rendered configuration may have changed in one committed write.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigChange {
    /// The devices, each once, in id order.
    pub devices: Vec<DeviceId>,
}

impl ConfigChange {
    /// Whether no device is affected.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// The sending side, kept by a backend.
#[derive(Debug, Clone)]
pub struct ConfigChanges(broadcast::Sender<ConfigChange>);

impl Default for ConfigChanges {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl ConfigChanges {
    /// Announces a committed change; an empty one is not sent.
    pub fn announce(&self, change: &ConfigChange) {
        if !change.is_empty() {
            let _ = self.0.send(change.clone());
        }
    }

    /// Changes announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigChange> {
        self.0.subscribe()
    }
}
