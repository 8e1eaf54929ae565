//! [`ConfigStore`] on the kv tables: templates and device groups with their indexes, the template rules
//! applied to devices inside the write transaction, and [`configuration_changed`], the one
//! place every write names the devices whose rendered configuration may have changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::kv::{ReadableTable, WriteTransaction};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::KvBackend;
use super::devices::{load_device, read_device, store_device_in, write_device};
use super::paging::{
    created_key, id_of, ids_paired_with, ids_under, org_prefix, paged, visible_keys,
};
use super::record::{cat, encode, get_record};
use crate::tables::*;
use crate::{
    ConfigBackend, ConfigChange, ConfigOutcome, ConfigStatus, ConfigStore, Device, DeviceConfig,
    DeviceGroup, DeviceId, GroupFields, GroupFilter, GroupId, OrgId, Page, PageRequest,
    RenderSources, RenderedConfig, Result, Scope, StoreError, Template, TemplateFields,
    TemplateFilter, TemplateId, TemplateRules, Timestamp, Unique, render_device, settle_templates,
};

/// THE seam for re-rendering: called inside every write transaction that may change what the
/// `devices` render to, just before the commit. Each device (with a configuration, not
/// deactivated) is rendered; one whose checksum changed gets the new checksum and the
/// `modified` status in this transaction, and is returned to be announced after the commit.
/// A configuration that no longer renders fails the whole write
/// ([`StoreError::InvalidConfig`]), so nothing unrenderable is ever stored.
pub(super) fn configuration_changed(
    backend: &KvBackend,
    txn: &WriteTransaction,
    devices: BTreeSet<DeviceId>,
) -> Result<ConfigChange> {
    if devices.is_empty() {
        return Ok(ConfigChange::default());
    }
    let mut sources = Sources::new(
        txn.open_table(TEMPLATES)?,
        txn.open_table(GROUPS)?,
        txn.open_table(ORG_CONFIG_SETTINGS)?,
    );
    let mut changed = Vec::new();
    for id in devices {
        let Some(mut device) = read_device(
            &txn.open_table(DEVICES)?,
            &txn.open_table(DEVICE_BRIEFS)?,
            id,
        )?
        else {
            continue;
        };
        if device.is_deactivated {
            // Deactivated devices keep their VPN clients and are not rendered.
            continue;
        }
        // VPN clients follow the VPN-client templates; only devices that have some render
        // with their variables.
        let vpns = sources.vpns_of(&device)?;
        let vpn = if backend.sync_clients(txn, &device, &vpns)? {
            backend.vpn_variables(
                &txn.open_table(VPNS)?,
                &txn.open_table(VPN_CLIENTS)?,
                &txn.open_table(CAS)?,
                &txn.open_table(CERTS)?,
                device.id,
            )?
        } else {
            BTreeMap::new()
        };
        let Some(rendered) = sources.render(&device, &vpn)? else {
            continue;
        };
        let Some(config) = device.config.as_mut() else {
            continue;
        };
        if rendered.checksum == config.checksum {
            continue;
        }
        config.checksum = rendered.checksum;
        config.status = ConfigStatus::Modified;
        config.error_reason.clear();
        write_device(txn, &device)?;
        changed.push(id);
    }
    Ok(ConfigChange { devices: changed })
}

/// What devices render from, read through one transaction's tables (read or write) and kept
/// for the next device: a template shared by 10,000 devices is decoded once.
pub(super) struct Sources<T> {
    templates: T,
    groups: T,
    settings: T,
    template_cache: HashMap<Uuid, Option<Template>>,
    group_cache: HashMap<Uuid, Option<Map<String, Value>>>,
    org_cache: HashMap<OrgId, Map<String, Value>>,
}

impl<T: ReadableTable<u128, &'static [u8]>> Sources<T> {
    pub(super) fn new(templates: T, groups: T, settings: T) -> Self {
        Self {
            templates,
            groups,
            settings,
            template_cache: HashMap::new(),
            group_cache: HashMap::new(),
            org_cache: HashMap::new(),
        }
    }

    /// The VPNs of the VPN-client templates in `device`'s configuration, in its order (a VPN
    /// twice when two of its templates are there).
    pub(super) fn vpns_of(&mut self, device: &Device) -> Result<Vec<crate::VpnId>> {
        let Some(config) = device.config.as_ref() else {
            return Ok(Vec::new());
        };
        self.load_templates(&config.fields.templates)?;
        Ok(config
            .fields
            .templates
            .iter()
            .filter_map(|id| self.template_cache.get(id).and_then(Option::as_ref))
            .filter(|t| t.fields.kind == crate::TemplateType::Vpn)
            .filter_map(|t| t.fields.vpn.map(crate::VpnId))
            .collect())
    }

    fn load_templates(&mut self, ids: &[Uuid]) -> Result<()> {
        for id in ids {
            if !self.template_cache.contains_key(id) {
                let template = get_record::<Template>(&self.templates, "templates", id.as_u128())?;
                self.template_cache.insert(*id, template);
            }
        }
        Ok(())
    }

    /// Renders `device`'s configuration with its VPN clients' variables `vpn`; `None` when
    /// it has none.
    pub(super) fn render(
        &mut self,
        device: &Device,
        vpn: &BTreeMap<String, String>,
    ) -> Result<Option<RenderedConfig>> {
        let Some(config) = device.config.as_ref() else {
            return Ok(None);
        };
        for id in &config.fields.templates {
            if !self.template_cache.contains_key(id) {
                let template = get_record::<Template>(&self.templates, "templates", id.as_u128())?;
                self.template_cache.insert(*id, template);
            }
        }
        if let Some(group) = device.fields.group
            && !self.group_cache.contains_key(&group)
        {
            let found = get_record::<DeviceGroup>(&self.groups, "groups", group.as_u128())?;
            self.group_cache
                .insert(group, found.map(|g| g.fields.context));
        }
        let org = device.fields.organization;
        if !self.org_cache.contains_key(&org) {
            let context = super::config_settings::org_context(&self.settings, org)?;
            self.org_cache.insert(org, context);
        }
        let templates: Vec<&Template> = config
            .fields
            .templates
            .iter()
            .filter_map(|id| self.template_cache.get(id).and_then(Option::as_ref))
            .collect();
        let sources = RenderSources {
            templates: &templates,
            organization_context: &self.org_cache[&org],
            group_context: device
                .fields
                .group
                .and_then(|g| self.group_cache.get(&g).and_then(Option::as_ref)),
            vpn_variables: vpn,
        };
        render_device(device, config, sources)
            .map(Some)
            .map_err(|source| StoreError::InvalidConfig {
                device: device.id,
                source,
            })
    }
}

impl KvBackend {
    /// Commits `txn` carrying `change` to the other nodes, then announces it here.
    pub(super) fn commit_config(
        &self,
        txn: WriteTransaction,
        change: ConfigChange,
    ) -> Result<ConfigChange> {
        super::cluster::carry_config(&txn, &change);
        txn.commit()?;
        self.config_changes.announce(&change);
        Ok(change)
    }
}

/// Templates read once per transaction: those named by ids, and each organization's default
/// and required ones.
#[derive(Default)]
pub(super) struct Known {
    pub(super) templates: HashMap<Uuid, Template>,
    orgs: HashSet<[u8; 16]>,
}

impl Known {
    fn ids(&mut self, txn: &WriteTransaction, ids: &[Uuid]) -> Result<()> {
        let table = txn.open_table(TEMPLATES)?;
        for id in ids {
            if !self.templates.contains_key(id)
                && let Some(t) = get_record::<Template>(&table, "templates", id.as_u128())?
            {
                self.templates.insert(*id, t);
            }
        }
        Ok(())
    }

    /// The default and required templates an organization's devices may get (its own and
    /// shared ones).
    fn org(&mut self, txn: &WriteTransaction, org: OrgId) -> Result<()> {
        let index = txn.open_table(TEMPLATES_BY_ORG)?;
        let table = txn.open_table(TEMPLATES)?;
        for prefix in [org_prefix(Some(org)), org_prefix(None)] {
            if !self.orgs.insert(prefix) {
                continue;
            }
            for id in ids_under(&index, &prefix)? {
                if let Some(t) = get_record::<Template>(&table, "templates", id)?
                    && (t.fields.default || t.fields.required)
                {
                    self.templates.insert(t.id.0, t);
                }
            }
        }
        Ok(())
    }
}

fn group_templates(txn: &WriteTransaction, group: Option<Uuid>) -> Result<Vec<Uuid>> {
    let Some(group) = group else {
        return Ok(Vec::new());
    };
    let table = txn.open_table(GROUPS)?;
    Ok(
        get_record::<DeviceGroup>(&table, "groups", group.as_u128())?
            .map(|g| g.fields.templates)
            .unwrap_or_default(),
    )
}

/// Applies the template rules to `device` (after a write; `before` is the device as stored
/// before it, `None` when it is new). A deactivated device is left alone, as OpenWISP leaves
/// deactivating configurations.
pub(super) fn settle_device(
    txn: &WriteTransaction,
    before: Option<&Device>,
    device: &mut Device,
    known: &mut Known,
) -> Result<()> {
    if device.is_deactivated {
        return Ok(());
    }
    let org = device.fields.organization;
    let old_group = before.and_then(|d| d.fields.group);
    let group_changed = before.is_none_or(|_| old_group != device.fields.group);
    let (group_out, group_in) = if group_changed {
        (
            group_templates(txn, old_group)?,
            group_templates(txn, device.fields.group)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    // A group with templates gives a device without configuration one (OpenWISP's
    // create_default_config).
    if device.config.is_none() && !group_in.is_empty() {
        device.config = Some(new_config(ConfigBackend::OpenWrt));
    }
    let Some(config) = device.config.as_mut() else {
        return Ok(());
    };
    let creating = before.is_none_or(|d| d.config.is_none());
    known.ids(txn, &config.fields.templates)?;
    known.ids(txn, &group_out)?;
    known.ids(txn, &group_in)?;
    known.org(txn, org)?;
    let rules = TemplateRules {
        organization: Some(org),
        backend: Some(config.fields.backend),
        creating,
        organization_changed: before.is_some_and(|d| d.fields.organization != org),
        group_out: &group_out,
        group_in: &group_in,
    };
    config.fields.templates = settle_templates(&config.fields.templates, &known.templates, &rules);
    Ok(())
}

fn new_config(backend: ConfigBackend) -> DeviceConfig {
    DeviceConfig {
        fields: crate::ConfigFields {
            backend,
            templates: Vec::new(),
            context: serde_json::Map::new(),
            config: serde_json::Map::new(),
        },
        status: ConfigStatus::Modified,
        error_reason: String::new(),
        checksum: String::new(),
    }
}

/// Whether what `before` and `after` render to may differ: their configuration, or the
/// variables every rendering gets (id, key, name, MAC, organization and group ones).
pub(super) fn renders_differently(before: &Device, after: &Device) -> bool {
    before.config.as_ref().map(|c| &c.fields) != after.config.as_ref().map(|c| &c.fields)
        || before.fields.name != after.fields.name
        || before.fields.mac_address != after.fields.mac_address
        || before.fields.key != after.fields.key
        || before.fields.organization != after.fields.organization
        || before.fields.group != after.fields.group
}

/// Rewrites devices through `change`, then stores them (indexes included) and collects the
/// ones whose rendering may differ.
fn rewrite_devices(
    txn: &WriteTransaction,
    ids: impl IntoIterator<Item = u128>,
    affected: &mut BTreeSet<DeviceId>,
    mut change: impl FnMut(&mut Device) -> Result<()>,
) -> Result<()> {
    for id in ids {
        let id = DeviceId(Uuid::from_u128(id));
        let before = load_device(txn, id)?;
        let mut device = before.clone();
        change(&mut device)?;
        if renders_differently(&before, &device) {
            device.modified = Timestamp::now();
            store_device_in(txn, &before, &device)?;
            affected.insert(id);
        }
    }
    Ok(())
}

fn template_name_key(fields: &TemplateFields) -> u128 {
    fields.organization.map_or(0, |o| o.key())
}

fn insert_template_in(txn: &WriteTransaction, template: &Template) -> Result<()> {
    let f = &template.fields;
    if let Some(org) = f.organization
        && txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none()
    {
        return Err(StoreError::NotFound);
    }
    let mut names = txn.open_table(TEMPLATE_NAMES)?;
    let mut shared_taken = false;
    let mut own_taken = false;
    let mut any_taken = false;
    for entry in names.range((f.name.as_str(), 0u128)..=(f.name.as_str(), u128::MAX))? {
        let (key, _) = entry?;
        let owner = key.value().1;
        any_taken = true;
        shared_taken |= owner == 0;
        own_taken |= owner == template_name_key(f);
    }
    if shared_taken {
        return Err(StoreError::Unique(Unique::SharedTemplateName));
    }
    if own_taken {
        return Err(StoreError::Unique(Unique::TemplateName));
    }
    if f.organization.is_none() && any_taken {
        return Err(StoreError::Unique(Unique::TemplateNameOfOrganization));
    }
    names.insert((f.name.as_str(), template_name_key(f)), template.id.key())?;
    txn.open_table(TEMPLATES)?
        .insert(template.id.key(), encode("templates", template)?.as_slice())?;
    let created = created_key(template.created, template.id.bytes());
    txn.open_table(TEMPLATES_BY_ORG)?
        .insert(cat(&[&org_prefix(f.organization), &created]).as_slice(), ())?;
    Ok(())
}

fn remove_template_in(txn: &WriteTransaction, template: &Template) -> Result<()> {
    let f = &template.fields;
    txn.open_table(TEMPLATE_NAMES)?
        .remove((f.name.as_str(), template_name_key(f)))?;
    txn.open_table(TEMPLATES)?.remove(template.id.key())?;
    let created = created_key(template.created, template.id.bytes());
    txn.open_table(TEMPLATES_BY_ORG)?
        .remove(cat(&[&org_prefix(f.organization), &created]).as_slice())?;
    Ok(())
}

fn load_template(txn: &WriteTransaction, id: TemplateId) -> Result<Template> {
    get_record(&txn.open_table(TEMPLATES)?, "templates", id.key())?.ok_or(StoreError::NotFound)
}

fn load_group(txn: &WriteTransaction, id: GroupId) -> Result<DeviceGroup> {
    get_record(&txn.open_table(GROUPS)?, "groups", id.key())?.ok_or(StoreError::NotFound)
}

/// A template that became default or required joins the existing configurations it applies
/// to (OpenWISP's auto_add_template_to_existing_configs): same backend, its organization's
/// devices (all if shared), not deactivated; appended at the end.
fn add_to_existing_configs(
    txn: &WriteTransaction,
    template: &Template,
    affected: &mut BTreeSet<DeviceId>,
) -> Result<()> {
    let ids = match template.fields.organization {
        Some(org) => ids_under(&txn.open_table(DEVICES_BY_ORG)?, &org.bytes())?,
        None => ids_under(&txn.open_table(DEVICES_BY_CREATED)?, &[])?,
    };
    let id = template.id.0;
    let backend = template.fields.backend;
    rewrite_devices(txn, ids, affected, |device| {
        if device.is_deactivated {
            return Ok(());
        }
        if let Some(config) = device.config.as_mut()
            && config.fields.backend == backend
            && !config.fields.templates.contains(&id)
        {
            config.fields.templates.push(id);
        }
        Ok(())
    })
}

fn insert_group_in(txn: &WriteTransaction, group: &DeviceGroup) -> Result<()> {
    let f = &group.fields;
    if txn
        .open_table(ORGANIZATIONS)?
        .get(f.organization.key())?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let name_key = cat(&[&f.organization.bytes(), f.name.as_bytes()]);
    let mut names = txn.open_table(GROUP_NAMES)?;
    if names.get(name_key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::GroupName));
    }
    names.insert(name_key.as_slice(), group.id.key())?;
    txn.open_table(GROUPS)?
        .insert(group.id.key(), encode("groups", group)?.as_slice())?;
    let created = created_key(group.created, group.id.bytes());
    txn.open_table(GROUPS_BY_ORG)?
        .insert(cat(&[&f.organization.bytes(), &created]).as_slice(), ())?;
    let mut uses = txn.open_table(TEMPLATE_GROUPS)?;
    for t in &f.templates {
        uses.insert(cat(&[t.as_bytes(), &group.id.bytes()]).as_slice(), ())?;
    }
    Ok(())
}

fn remove_group_in(txn: &WriteTransaction, group: &DeviceGroup) -> Result<()> {
    let f = &group.fields;
    txn.open_table(GROUP_NAMES)?
        .remove(cat(&[&f.organization.bytes(), f.name.as_bytes()]).as_slice())?;
    txn.open_table(GROUPS)?.remove(group.id.key())?;
    let created = created_key(group.created, group.id.bytes());
    txn.open_table(GROUPS_BY_ORG)?
        .remove(cat(&[&f.organization.bytes(), &created]).as_slice())?;
    let mut uses = txn.open_table(TEMPLATE_GROUPS)?;
    for t in &f.templates {
        uses.remove(cat(&[t.as_bytes(), &group.id.bytes()]).as_slice())?;
    }
    Ok(())
}

/// Deletes an organization's templates and groups (its devices are already gone).
pub(super) fn delete_org_configuration_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let groups = ids_under(&txn.open_table(GROUPS_BY_ORG)?, &org.bytes())?;
    for id in groups {
        let group = load_group(txn, GroupId(Uuid::from_u128(id)))?;
        remove_group_in(txn, &group)?;
    }
    let templates = ids_under(&txn.open_table(TEMPLATES_BY_ORG)?, &org.bytes())?;
    for id in templates {
        let template = load_template(txn, TemplateId(Uuid::from_u128(id)))?;
        remove_template_in(txn, &template)?;
    }
    Ok(())
}

fn group_device_count_nonzero(
    table: &impl ReadableTable<&'static [u8], ()>,
    group: GroupId,
) -> Result<bool> {
    let lo = cat(&[&group.bytes(), &[0u8; 16]]);
    let hi = cat(&[&group.bytes(), &[0xffu8; 16]]);
    Ok(table
        .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
        .next()
        .is_some())
}

/// Deletes a template in `txn`: it leaves every configuration and group using it. Returns
/// the devices whose configuration lost it (to render again).
pub(super) fn delete_template_in(
    txn: &WriteTransaction,
    id: TemplateId,
) -> Result<BTreeSet<DeviceId>> {
    let template = load_template(txn, id)?;
    let devices = ids_paired_with(&txn.open_table(TEMPLATE_DEVICES)?, &id.bytes())?;
    let mut affected = BTreeSet::new();
    rewrite_devices(txn, devices, &mut affected, |device| {
        if let Some(config) = device.config.as_mut() {
            config.fields.templates.retain(|t| *t != id.0);
        }
        Ok(())
    })?;
    let groups = ids_paired_with(&txn.open_table(TEMPLATE_GROUPS)?, &id.bytes())?;
    for group in groups {
        let before = load_group(txn, GroupId(Uuid::from_u128(group)))?;
        remove_group_in(txn, &before)?;
        let mut group = before;
        group.fields.templates.retain(|t| *t != id.0);
        group.modified = Timestamp::now();
        insert_group_in(txn, &group)?;
    }
    remove_template_in(txn, &template)?;
    Ok(affected)
}

impl ConfigStore for KvBackend {
    fn create_template(&self, fields: TemplateFields) -> Result<(Template, ConfigChange)> {
        let now = Timestamp::now();
        let template = Template {
            id: TemplateId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        insert_template_in(&txn, &template)?;
        let mut affected = BTreeSet::new();
        if template.fields.default || template.fields.required {
            add_to_existing_configs(&txn, &template, &mut affected)?;
        }
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok((template, change))
    }

    fn template(&self, id: TemplateId) -> Result<Option<Template>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(TEMPLATES)?, "templates", id.key())
    }

    fn templates(&self, ids: &[Uuid]) -> Result<Vec<Template>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TEMPLATES)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = get_record(&table, "templates", id.as_u128())? {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn update_template(
        &self,
        id: TemplateId,
        fields: TemplateFields,
    ) -> Result<(Template, ConfigChange)> {
        let txn = self.db.begin_write()?;
        let before = load_template(&txn, id)?;
        remove_template_in(&txn, &before)?;
        let template = Template {
            fields,
            modified: Timestamp::now(),
            ..before.clone()
        };
        insert_template_in(&txn, &template)?;
        let mut affected: BTreeSet<DeviceId> =
            ids_paired_with(&txn.open_table(TEMPLATE_DEVICES)?, &id.bytes())?
                .into_iter()
                .map(|d| DeviceId(Uuid::from_u128(d)))
                .collect();
        let (f, b) = (&template.fields, &before.fields);
        if (f.default && !b.default) || (f.required && !b.required) {
            add_to_existing_configs(&txn, &template, &mut affected)?;
        }
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        Ok((template, change))
    }

    fn delete_template(&self, id: TemplateId) -> Result<ConfigChange> {
        let txn = self.db.begin_write()?;
        let affected = delete_template_in(&txn, id)?;
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok(change)
    }

    fn list_templates(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        filter: &TemplateFilter,
        page: PageRequest,
    ) -> Result<Page<Template>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(TEMPLATES_BY_ORG)?;
        let scope = match own {
            Some(org) => Scope::Orgs(vec![org]),
            None => scope.clone(),
        };
        let keys = visible_keys(&index, &scope)?;
        let table = txn.open_table(TEMPLATES)?;
        let mut items = Vec::new();
        for key in keys {
            if let Some(t) = get_record::<Template>(&table, "templates", id_of(&key))?
                && filter.matches(&t)
                && own.is_none_or(|org| t.fields.organization == Some(org))
            {
                items.push(t);
            }
        }
        Ok(paged(items, page))
    }

    fn device_configuration(&self, id: DeviceId) -> Result<Option<RenderedConfig>> {
        let txn = self.db.begin_read()?;
        let Some(device) = get_record::<Device>(&txn.open_table(DEVICES)?, "devices", id.key())?
        else {
            return Err(StoreError::NotFound);
        };
        let vpn = self.vpn_variables(
            &txn.open_table(VPNS)?,
            &txn.open_table(VPN_CLIENTS)?,
            &txn.open_table(CAS)?,
            &txn.open_table(CERTS)?,
            device.id,
        )?;
        Sources::new(
            txn.open_table(TEMPLATES)?,
            txn.open_table(GROUPS)?,
            txn.open_table(ORG_CONFIG_SETTINGS)?,
        )
        .render(&device, &vpn)
    }

    fn record_config_outcome(&self, id: DeviceId, outcome: ConfigOutcome) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let mut device = load_device(&txn, id)?;
        let Some(config) = device.config.as_mut() else {
            return Ok(false);
        };
        if outcome
            .checksum
            .as_ref()
            .is_some_and(|c| *c != config.checksum)
        {
            return Ok(false);
        }
        match outcome.status {
            ConfigStatus::Applied => {
                config.status = if config.status == ConfigStatus::Deactivating {
                    ConfigStatus::Deactivated
                } else {
                    ConfigStatus::Applied
                };
                config.error_reason.clear();
            }
            ConfigStatus::Error => {
                config.status = ConfigStatus::Error;
                config.error_reason = outcome.error_reason;
            }
            _ => return Ok(false),
        }
        write_device(&txn, &device)?;
        txn.commit()?;
        Ok(true)
    }

    fn create_group(&self, fields: GroupFields) -> Result<DeviceGroup> {
        let now = Timestamp::now();
        let group = DeviceGroup {
            id: GroupId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        insert_group_in(&txn, &group)?;
        txn.commit()?;
        Ok(group)
    }

    fn group(&self, id: GroupId) -> Result<Option<DeviceGroup>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(GROUPS)?, "groups", id.key())
    }

    fn update_group(
        &self,
        id: GroupId,
        fields: GroupFields,
    ) -> Result<(DeviceGroup, ConfigChange)> {
        let txn = self.db.begin_write()?;
        let before = load_group(&txn, id)?;
        remove_group_in(&txn, &before)?;
        let group = DeviceGroup {
            fields,
            modified: Timestamp::now(),
            ..before.clone()
        };
        insert_group_in(&txn, &group)?;
        let devices = ids_paired_with(&txn.open_table(GROUP_DEVICES)?, &id.bytes())?;
        let mut affected = BTreeSet::new();
        if group.fields.templates != before.fields.templates {
            let (old, new) = (&before.fields.templates, &group.fields.templates);
            let mut known = Known::default();
            rewrite_devices(&txn, devices.iter().copied(), &mut affected, |device| {
                if device.is_deactivated {
                    return Ok(());
                }
                if device.config.is_none() && !new.is_empty() {
                    device.config = Some(new_config(ConfigBackend::OpenWrt));
                }
                let Some(config) = device.config.as_mut() else {
                    return Ok(());
                };
                known.ids(&txn, &config.fields.templates)?;
                known.ids(&txn, old)?;
                known.ids(&txn, new)?;
                known.org(&txn, device.fields.organization)?;
                let rules = TemplateRules {
                    organization: Some(device.fields.organization),
                    backend: Some(config.fields.backend),
                    creating: false,
                    organization_changed: false,
                    group_out: old,
                    group_in: new,
                };
                config.fields.templates =
                    settle_templates(&config.fields.templates, &known.templates, &rules);
                Ok(())
            })?;
        }
        if group.fields.context != before.fields.context {
            affected.extend(devices.iter().map(|d| DeviceId(Uuid::from_u128(*d))));
        }
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        Ok((group, change))
    }

    fn delete_group(&self, id: GroupId) -> Result<ConfigChange> {
        let txn = self.db.begin_write()?;
        let group = load_group(&txn, id)?;
        let devices = ids_paired_with(&txn.open_table(GROUP_DEVICES)?, &id.bytes())?;
        let mut affected = BTreeSet::new();
        rewrite_devices(&txn, devices, &mut affected, |device| {
            device.fields.group = None;
            Ok(())
        })?;
        remove_group_in(&txn, &group)?;
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok(change)
    }

    fn list_groups(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        filter: &GroupFilter,
        page: PageRequest,
    ) -> Result<Page<DeviceGroup>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(GROUPS_BY_ORG)?;
        let scope = match own {
            Some(org) => Scope::Orgs(vec![org]),
            None => scope.clone(),
        };
        // Groups are never shared: the zero prefix `visible_keys` adds holds none.
        let keys = visible_keys(&index, &scope)?;
        let table = txn.open_table(GROUPS)?;
        let members = txn.open_table(GROUP_DEVICES)?;
        let mut items = Vec::new();
        for key in keys {
            let Some(g) = get_record::<DeviceGroup>(&table, "groups", id_of(&key))? else {
                continue;
            };
            if let Some(empty) = filter.empty
                && group_device_count_nonzero(&members, g.id)? != empty
            {
                continue;
            }
            items.push(g);
        }
        Ok(paged(items, page))
    }
}
