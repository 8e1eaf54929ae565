//! [`DeviceStore`] on the kv tables: devices with their configuration, per-scope device counts, and the
//! logins the broker checks.

use std::collections::{BTreeSet, HashSet};

use crate::kv::{ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::cluster::carry_login;
use super::configuration::{Known, configuration_changed, renders_differently, settle_device};
use super::paging::{ANCHOR_STRIDE, MergeDesc, created_key, id_of, index_desc, successor};
use super::record::{cat, decode, encode, get_record, get_records};
use super::{KvBackend, device_plane, firmware, software, upgrade};
use crate::tables::*;
use crate::{
    ConfigFields, ConfigStatus, Device, DeviceBrief, DeviceConfig, DeviceFields, DeviceFilter,
    DeviceFirmware, DeviceId, DeviceOrder, DeviceStore, LoginChange, OrgId, Organization, Page,
    PageRequest, Result, Scope, StoreError, Timestamp, Unique,
};

pub(super) fn counter_key(org: Option<OrgId>) -> Vec<u8> {
    match org {
        None => b"devices".to_vec(),
        Some(org) => cat(&[b"devices/", &org.bytes()]),
    }
}

pub(super) fn bump(
    counters: &mut Table<'_, &'static [u8], u64>,
    key: &[u8],
    delta: i64,
) -> Result<()> {
    let current = counters.get(key)?.map(|v| v.value()).unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    counters.insert(key, next)?;
    Ok(())
}

pub(super) fn insert_device_indexes(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let org = device.fields.organization;
    if txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none() {
        return Err(StoreError::NotFound);
    }
    let name_key = cat(&[&org.bytes(), device.fields.name.unique_form().as_bytes()]);
    let mut names = txn.open_table(DEVICE_NAMES)?;
    if names.get(name_key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceName));
    }
    let mac_key = cat(&[&org.bytes(), device.fields.mac_address.as_str().as_bytes()]);
    let mut macs = txn.open_table(DEVICE_MACS)?;
    if macs.get(mac_key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceMac));
    }
    let mut keys = txn.open_table(DEVICE_KEYS)?;
    if keys.get(device.fields.key.as_str())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceKey));
    }
    if let Some(group) = device.fields.group {
        let groups = txn.open_table(GROUPS)?;
        let group: crate::DeviceGroup =
            get_record(&groups, "groups", group.as_u128())?.ok_or(StoreError::NotFound)?;
        if group.fields.organization != org {
            return Err(StoreError::NotFound);
        }
        txn.open_table(GROUP_DEVICES)?
            .insert(cat(&[&group.id.bytes(), &device.id.bytes()]).as_slice(), ())?;
    }
    if let Some(config) = &device.config {
        let mut uses = txn.open_table(TEMPLATE_DEVICES)?;
        for t in &config.fields.templates {
            uses.insert(cat(&[t.as_bytes(), &device.id.bytes()]).as_slice(), ())?;
        }
    }
    let id = device.id.key();
    names.insert(name_key.as_slice(), id)?;
    macs.insert(mac_key.as_slice(), id)?;
    keys.insert(device.fields.key.as_str(), id)?;
    let created = created_key(device.created, device.id.bytes());
    write_device(txn, device)?;
    txn.open_table(DEVICES_BY_CREATED)?
        .insert(created.as_slice(), ())?;
    txn.open_table(DEVICES_BY_ORG)?
        .insert(cat(&[&org.bytes(), &created]).as_slice(), ())?;
    let mut counters = txn.open_table(COUNTERS)?;
    bump(&mut counters, &counter_key(None), 1)?;
    bump(&mut counters, &counter_key(Some(org)), 1)?;
    Ok(())
}

fn remove_device_indexes(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let org = device.fields.organization;
    let name_key = cat(&[&org.bytes(), device.fields.name.unique_form().as_bytes()]);
    txn.open_table(DEVICE_NAMES)?.remove(name_key.as_slice())?;
    let mac_key = cat(&[&org.bytes(), device.fields.mac_address.as_str().as_bytes()]);
    txn.open_table(DEVICE_MACS)?.remove(mac_key.as_slice())?;
    txn.open_table(DEVICE_KEYS)?
        .remove(device.fields.key.as_str())?;
    if let Some(group) = device.fields.group {
        txn.open_table(GROUP_DEVICES)?
            .remove(cat(&[group.as_bytes(), &device.id.bytes()]).as_slice())?;
    }
    if let Some(config) = &device.config {
        let mut uses = txn.open_table(TEMPLATE_DEVICES)?;
        for t in &config.fields.templates {
            uses.remove(cat(&[t.as_bytes(), &device.id.bytes()]).as_slice())?;
        }
    }
    let created = created_key(device.created, device.id.bytes());
    txn.open_table(DEVICES)?.remove(device.id.key())?;
    txn.open_table(DEVICE_BRIEFS)?.remove(device.id.key())?;
    txn.open_table(DEVICES_BY_CREATED)?
        .remove(created.as_slice())?;
    txn.open_table(DEVICES_BY_ORG)?
        .remove(cat(&[&org.bytes(), &created]).as_slice())?;
    let mut counters = txn.open_table(COUNTERS)?;
    bump(&mut counters, &counter_key(None), -1)?;
    bump(&mut counters, &counter_key(Some(org)), -1)?;
    Ok(())
}

/// Replaces a stored device (`before`) by `after`, indexes included.
pub(super) fn store_device_in(
    txn: &WriteTransaction,
    before: &Device,
    after: &Device,
) -> Result<()> {
    remove_device_indexes(txn, before)?;
    insert_device_indexes(txn, after)
}

pub(super) fn load_device(txn: &WriteTransaction, id: DeviceId) -> Result<Device> {
    read_device(
        &txn.open_table(DEVICES)?,
        &txn.open_table(DEVICE_BRIEFS)?,
        id,
    )?
    .ok_or(StoreError::NotFound)
}

/// Writes a device's record and its brief; the brief's last address is the record's. Every
/// write of a device goes through here, after a read through [`read_device`].
pub(super) fn write_device(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let id = device.id.key();
    txn.open_table(DEVICES)?
        .insert(id, encode("devices", device)?.as_slice())?;
    txn.open_table(DEVICE_BRIEFS)?.insert(
        id,
        encode("device_briefs", &DeviceBrief::of(device))?.as_slice(),
    )?;
    Ok(())
}

/// A device's brief.
pub(super) fn read_brief(
    briefs: &impl ReadableTable<u128, &'static [u8]>,
    id: DeviceId,
) -> Result<Option<DeviceBrief>> {
    get_record(briefs, "device_briefs", id.key())
}

/// A device as it is: its record with the last address from its brief (a connect updates
/// only the brief).
pub(super) fn read_device(
    devices: &impl ReadableTable<u128, &'static [u8]>,
    briefs: &impl ReadableTable<u128, &'static [u8]>,
    id: DeviceId,
) -> Result<Option<Device>> {
    let Some(mut device) = get_record::<Device>(devices, "devices", id.key())? else {
        return Ok(None);
    };
    if let Some(brief) = read_brief(briefs, id)? {
        device.fields.last_ip = brief.last_ip;
    }
    Ok(Some(device))
}

/// [`read_device`] for many ids, in their order (two round trips on PostgreSQL).
fn read_devices(
    devices: &impl ReadableTable<u128, &'static [u8]>,
    briefs: &impl ReadableTable<u128, &'static [u8]>,
    ids: &[u128],
) -> Result<Vec<Device>> {
    let mut items: Vec<Device> = get_records(devices, "devices", ids)?;
    let found: Vec<u128> = items.iter().map(|d| d.id.key()).collect();
    for (device, brief) in items.iter_mut().zip(briefs.get_many(&found)?) {
        if let Some(brief) = brief {
            let brief: DeviceBrief = decode("device_briefs", brief.value())?;
            device.fields.last_ip = brief.last_ip;
        }
    }
    Ok(items)
}

/// Writes the brief of every device (a store from before briefs, schema < 9).
pub(super) fn fill_briefs(txn: &WriteTransaction) -> Result<()> {
    let devices = txn.open_table(DEVICES)?;
    let mut briefs = txn.open_table(DEVICE_BRIEFS)?;
    for entry in devices.iter()? {
        let (id, bytes) = entry?;
        let device: Device = decode("devices", bytes.value())?;
        briefs.insert(
            id.value(),
            encode("device_briefs", &DeviceBrief::of(&device))?.as_slice(),
        )?;
    }
    Ok(())
}

/// Removes a device with everything that belongs to it; the counts of its operations'
/// batches change when the caller applies `counts`.
pub(super) fn delete_device_in(
    txn: &WriteTransaction,
    device: &Device,
    counts: &mut upgrade::CountChanges,
) -> Result<()> {
    remove_device_indexes(txn, device)?;
    upgrade::delete_device_upgrades_in(txn, device.id, counts)?;
    software::delete_device_software_in(txn, device.id)?;
    device_plane::delete_device_plane_in(txn, device)
}

/// Stores a new device with its indexes and its MQTT connection (the device key's, as
/// OpenWISP adds `auto_add` credentials to new devices).
fn add_device(txn: &WriteTransaction, device: &mut Device, known: &mut Known) -> Result<()> {
    settle_device(txn, None, device, known)?;
    insert_device_indexes(txn, device)?;
    device_plane::mqtt_connection_in(txn, device.id, device.fields.organization, device.created)?;
    Ok(())
}

fn device_id(key: u128) -> DeviceId {
    DeviceId(uuid::Uuid::from_u128(key))
}

fn new_device(fields: DeviceFields, config: Option<ConfigFields>) -> Device {
    let now = Timestamp::now();
    Device {
        id: DeviceId::new(),
        fields,
        config: config
            .filter(|c| !c.is_default())
            .map(|fields| DeviceConfig {
                fields,
                status: ConfigStatus::Modified,
                error_reason: String::new(),
                checksum: String::new(),
            }),
        is_deactivated: false,
        created: now,
        modified: now,
    }
}

/// Records read (and filtered) at a time by [`scan_devices`]: a few round trips on
/// PostgreSQL per chunk, not per device.
const SCAN_CHUNK: usize = 512;

/// A list that walks its whole scope ([`DeviceFilter::needs_scan`]): `ids` (the scope's
/// devices in the creation range, newest first) are read a chunk at a time with what the
/// filter asks about them (presence, firmware, location), the matches sorted in the
/// filter's order, and the page's records read last.
fn scan_devices(
    txn: &ReadTransaction,
    ids: &[u128],
    filter: &DeviceFilter,
    page: PageRequest,
) -> Result<Page<Device>> {
    let images = match &filter.firmware_version {
        Some(version) => Some(firmware::images_of_version(txn, version)?),
        None => None,
    };
    if images.as_ref().is_some_and(HashSet::is_empty) {
        return Ok(Page {
            count: 0,
            items: Vec::new(),
        });
    }
    let records = txn.open_table(DEVICES)?;
    let locations = txn.open_table(DEVICE_LOCATIONS)?;
    let firmwares = txn.open_table(DEVICE_FIRMWARE)?;
    let by_name = matches!(
        filter.order,
        DeviceOrder::NameAscending | DeviceOrder::NameDescending
    );
    // Each match's sort key (its name, lower case, when sorted by name) and id, newest first.
    let mut matched: Vec<(String, u128)> = Vec::new();
    for chunk in ids.chunks(SCAN_CHUNK) {
        let devices: Vec<Device> = get_records(&records, "devices", chunk)?;
        let keys: Vec<u128> = devices.iter().map(|d| d.id.key()).collect();
        let presence = match filter.is_online {
            Some(_) => {
                let pairs: Vec<(DeviceId, OrgId)> = devices
                    .iter()
                    .map(|d| (d.id, d.fields.organization))
                    .collect();
                device_plane::presence_in(txn, &pairs)?
            }
            None => Vec::new(),
        };
        let located: Vec<bool> = match filter.with_geo {
            Some(_) => locations
                .get_many(&keys)?
                .iter()
                .map(Option::is_some)
                .collect(),
            None => Vec::new(),
        };
        let running: Vec<bool> = match &images {
            Some(images) => firmwares
                .get_many(&keys)?
                .into_iter()
                .map(|row| match row {
                    Some(row) => decode::<DeviceFirmware>("device_firmware", row.value())
                        .map(|f| f.installed && images.contains(&f.image.key())),
                    None => Ok(false),
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        for (i, device) in devices.into_iter().enumerate() {
            let has_location = located.get(i).copied().unwrap_or(false);
            let wanted = filter.matches(&device, has_location)
                && filter
                    .is_online
                    .is_none_or(|online| presence.get(i).is_some_and(|p| p.online == online))
                && (images.is_none() || running.get(i).copied().unwrap_or(false));
            if wanted {
                let key = if by_name {
                    device.fields.name.as_str().to_lowercase()
                } else {
                    String::new()
                };
                matched.push((key, device.id.key()));
            }
        }
    }
    // Sorts are stable: equal names stay newest first.
    match filter.order {
        DeviceOrder::NewestFirst => {}
        DeviceOrder::OldestFirst => matched.reverse(),
        DeviceOrder::NameAscending => matched.sort_by(|a, b| a.0.cmp(&b.0)),
        DeviceOrder::NameDescending => matched.sort_by(|a, b| b.0.cmp(&a.0)),
    }
    let count = matched.len() as u64;
    let page_ids: Vec<u128> = matched
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
        .map(|(_, id)| id)
        .collect();
    let items = read_devices(&records, &txn.open_table(DEVICE_BRIEFS)?, &page_ids)?;
    Ok(Page { count, items })
}

impl DeviceStore for KvBackend {
    fn device_login(&self, id: DeviceId) -> Result<Option<crate::DeviceLogin>> {
        if let Some(login) = self.logins.get(&id) {
            return Ok(Some(login));
        }
        let epoch = self.logins.epoch();
        let txn = self.db.begin_read()?;
        let Some(device) = read_brief(&txn.open_table(DEVICE_BRIEFS)?, id)? else {
            return Ok(None);
        };
        let org: Option<Organization> = get_record(
            &txn.open_table(ORGANIZATIONS)?,
            "organizations",
            device.organization.key(),
        )?;
        let login = crate::DeviceLogin {
            key: device.key,
            deactivated: device.deactivated,
            org_slug: org
                .as_ref()
                .map(|o| o.fields.slug.as_str().to_owned())
                .unwrap_or_default(),
            org_active: org.is_some_and(|o| o.fields.is_active),
        };
        self.logins.insert(epoch, id, login.clone());
        Ok(Some(login))
    }

    fn active_device_logins(&self) -> Result<Vec<(DeviceId, crate::DeviceLogin)>> {
        let txn = self.db.begin_read()?;
        let mut orgs = std::collections::HashMap::new();
        for entry in txn.open_table(ORGANIZATIONS)?.iter()? {
            let (_, bytes) = entry?;
            let org: Organization = super::record::decode("organizations", bytes.value())?;
            if org.fields.is_active {
                orgs.insert(org.id, org.fields.slug.as_str().to_owned());
            }
        }
        let mut logins = Vec::new();
        for entry in txn.open_table(DEVICE_BRIEFS)?.iter()? {
            let (id, bytes) = entry?;
            let device: DeviceBrief = decode("device_briefs", bytes.value())?;
            let Some(slug) = orgs.get(&device.organization) else {
                continue;
            };
            if device.deactivated {
                continue;
            }
            logins.push((
                device_id(id.value()),
                crate::DeviceLogin {
                    key: device.key,
                    deactivated: false,
                    org_slug: slug.clone(),
                    org_active: true,
                },
            ));
        }
        Ok(logins)
    }

    fn cached_device_login(&self, id: DeviceId) -> Option<crate::DeviceLogin> {
        self.logins.get(&id)
    }

    fn create_device(&self, fields: DeviceFields, config: Option<ConfigFields>) -> Result<Device> {
        let mut device = new_device(fields, config);
        let txn = self.db.begin_write()?;
        add_device(&txn, &mut device, &mut Known::default())?;
        let change = configuration_changed(self, &txn, BTreeSet::from([device.id]))?;
        let device = load_device(&txn, device.id)?;
        carry_login(&txn, &LoginChange::DevicesAdded);
        self.commit_config(txn, change)?;
        self.anchors.invalidate();
        self.changes.announce(LoginChange::DevicesAdded);
        Ok(device)
    }

    fn create_devices(
        &self,
        devices: Vec<(DeviceFields, Option<ConfigFields>)>,
    ) -> Result<Vec<Device>> {
        let txn = self.db.begin_write()?;
        let mut out = Vec::with_capacity(devices.len());
        let mut known = Known::default();
        for (fields, config) in devices {
            let mut device = new_device(fields, config);
            add_device(&txn, &mut device, &mut known)?;
            out.push(device);
        }
        let change = configuration_changed(self, &txn, out.iter().map(|d| d.id).collect())?;
        let out = out
            .iter()
            .map(|d| load_device(&txn, d.id))
            .collect::<Result<Vec<_>>>()?;
        carry_login(&txn, &LoginChange::DevicesAdded);
        self.commit_config(txn, change)?;
        self.anchors.invalidate();
        self.changes.announce(LoginChange::DevicesAdded);
        Ok(out)
    }

    fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        let txn = self.db.begin_read()?;
        read_device(
            &txn.open_table(DEVICES)?,
            &txn.open_table(DEVICE_BRIEFS)?,
            id,
        )
    }

    fn device_brief(&self, id: DeviceId) -> Result<Option<DeviceBrief>> {
        let txn = self.db.begin_read()?;
        read_brief(&txn.open_table(DEVICE_BRIEFS)?, id)
    }

    fn device_by_key(&self, key: &str) -> Result<Option<Device>> {
        let txn = self.db.begin_read()?;
        let Some(id) = txn.open_table(DEVICE_KEYS)?.get(key)?.map(|v| v.value()) else {
            return Ok(None);
        };
        read_device(
            &txn.open_table(DEVICES)?,
            &txn.open_table(DEVICE_BRIEFS)?,
            device_id(id),
        )
    }

    fn update_device(
        &self,
        id: DeviceId,
        fields: DeviceFields,
        config: Option<ConfigFields>,
    ) -> Result<Device> {
        let txn = self.db.begin_write()?;
        let before = load_device(&txn, id)?;
        let mut device = before.clone();
        device.fields = fields;
        if let Some(fields) = config {
            device.config = match device.config.take() {
                Some(current) => Some(DeviceConfig { fields, ..current }),
                None if fields.is_default() => None,
                None => Some(DeviceConfig {
                    fields,
                    status: ConfigStatus::Modified,
                    error_reason: String::new(),
                    checksum: String::new(),
                }),
            };
        }
        settle_device(&txn, Some(&before), &mut device, &mut Known::default())?;
        device.modified = Timestamp::now();
        store_device_in(&txn, &before, &device)?;
        let affected = if renders_differently(&before, &device) {
            BTreeSet::from([id])
        } else {
            BTreeSet::new()
        };
        let change = configuration_changed(self, &txn, affected)?;
        let device = load_device(&txn, id)?;
        carry_login(&txn, &LoginChange::Device(id));
        self.commit_config(txn, change)?;
        self.logins.invalidate(&id);
        self.changes.announce(LoginChange::Device(id));
        self.anchors.invalidate();
        Ok(device)
    }

    fn set_device_deactivated(&self, id: DeviceId, deactivated: bool) -> Result<Device> {
        let txn = self.db.begin_write()?;
        let mut device = load_device(&txn, id)?;
        device.is_deactivated = deactivated;
        if let Some(config) = device.config.as_mut() {
            config.status = if deactivated {
                ConfigStatus::Deactivating
            } else {
                ConfigStatus::Modified
            };
            // Forgotten, so that reactivating renders it afresh and the device is notified.
            config.checksum.clear();
        }
        device.modified = Timestamp::now();
        write_device(&txn, &device)?;
        let mut counts = upgrade::CountChanges::default();
        if deactivated {
            // Deactivated devices may not be upgraded (nor connect to finish an upgrade).
            upgrade::abort_device_upgrades_in(
                &txn,
                id,
                "Aborted: the device was deactivated",
                &mut counts,
            )?;
            // Nor may it install application software.
            software::abort_device_installations_in(&txn, id, "The device was deactivated")?;
        }
        let affected = if deactivated {
            BTreeSet::new()
        } else {
            BTreeSet::from([id])
        };
        let events = counts.apply(&txn)?;
        let change = configuration_changed(self, &txn, affected)?;
        let device = load_device(&txn, id)?;
        carry_login(&txn, &LoginChange::Device(id));
        self.commit_config(txn, change)?;
        self.logins.invalidate(&id);
        self.changes.announce(LoginChange::Device(id));
        self.announce_live(events);
        Ok(device)
    }

    fn delete_device(&self, id: DeviceId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let device = load_device(&txn, id)?;
        self.delete_device_clients_in(&txn, id)?;
        let mut counts = upgrade::CountChanges::default();
        delete_device_in(&txn, &device, &mut counts)?;
        let events = counts.apply(&txn)?;
        carry_login(&txn, &LoginChange::Device(id));
        txn.commit()?;
        self.logins.invalidate(&id);
        self.changes.announce(LoginChange::Device(id));
        self.anchors.invalidate();
        self.announce_live(events);
        Ok(())
    }

    fn list_devices(
        &self,
        scope: &Scope,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> Result<Page<Device>> {
        let generation = self.anchors.generation();
        let txn = self.db.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        let briefs = txn.open_table(DEVICE_BRIEFS)?;
        let locations = txn.open_table(DEVICE_LOCATIONS)?;
        let by_created = txn.open_table(DEVICES_BY_CREATED)?;
        let by_org = txn.open_table(DEVICES_BY_ORG)?;

        // Creation-time conditions become the index range [lo, hi).
        let mut from = filter.created_gte;
        let mut until = filter.created_lt;
        if let Some(exact) = filter.created {
            from = from.max(Some(exact));
            let next = Timestamp::from_micros(exact.as_micros() + 1);
            until = Some(until.map_or(next, |u| u.min(next)));
        }
        let lo = created_key(from.unwrap_or(Timestamp::from_micros(0)), [0; 16]);
        let hi = match until {
            Some(t) => created_key(t, [0; 16]),
            None => [0xff; 24],
        };
        let streams = match scope {
            Scope::All => vec![index_desc(&by_created, &[], lo, hi)?.peekable()],
            Scope::Orgs(orgs) => orgs
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|org| index_desc(&by_org, &org.bytes(), lo, hi).map(Iterator::peekable))
                .collect::<Result<_>>()?,
        };
        let mut keys = MergeDesc { streams };

        if filter.needs_scan() {
            let ids = keys
                .map(|key| key.map(|k| id_of(&k)))
                .collect::<Result<Vec<_>>>()?;
            return scan_devices(&txn, &ids, filter, page);
        }

        let unfiltered = from.is_none() && until.is_none() && !filter.needs_records();
        if unfiltered {
            let counters = txn.open_table(COUNTERS)?;
            let count = match scope {
                Scope::All => counters
                    .get(counter_key(None).as_slice())?
                    .map_or(0, |v| v.value()),
                Scope::Orgs(orgs) => {
                    let mut total = 0;
                    for org in orgs.iter().collect::<BTreeSet<_>>() {
                        total += counters
                            .get(counter_key(Some(*org)).as_slice())?
                            .map_or(0, |v| v.value());
                    }
                    total
                }
            };
            // A deep page of one index starts at its nearest anchor.
            let single: Option<Option<OrgId>> = match scope {
                Scope::All => Some(None),
                Scope::Orgs(orgs) if orgs.iter().collect::<BTreeSet<_>>().len() == 1 => {
                    orgs.first().copied().map(Some)
                }
                Scope::Orgs(_) => None,
            };
            let mut skip = page.offset;
            if let Some(single) = single
                && page.offset >= ANCHOR_STRIDE
            {
                let prefix = single.map(|org| org.bytes().to_vec()).unwrap_or_default();
                let seeked = match single {
                    None => {
                        self.anchors
                            .seek(generation, None, &by_created, &prefix, page.offset)?
                    }
                    Some(org) => {
                        self.anchors
                            .seek(generation, Some(org), &by_org, &prefix, page.offset)?
                    }
                };
                if let Some((anchor, rest)) = seeked {
                    let index = if single.is_none() {
                        &by_created
                    } else {
                        &by_org
                    };
                    keys = MergeDesc {
                        streams: vec![
                            index_desc(index, &prefix, [0; 24], successor(anchor))?.peekable(),
                        ],
                    };
                    skip = rest;
                }
            }
            let ids = keys
                .by_ref()
                .skip(skip as usize)
                .take(page.limit as usize)
                .map(|key| key.map(|k| id_of(&k)))
                .collect::<Result<Vec<_>>>()?;
            let items = read_devices(&devices, &briefs, &ids)?;
            return Ok(Page { count, items });
        }

        let mut count = 0u64;
        let mut items = Vec::new();
        for key in keys {
            let id = id_of(&key?);
            let wanted = count >= page.offset && (items.len() as u64) < page.limit;
            if !filter.needs_records() {
                if wanted && let Some(device) = read_device(&devices, &briefs, device_id(id))? {
                    items.push(device);
                }
                count += 1;
                continue;
            }
            let Some(device) = read_device(&devices, &briefs, device_id(id))? else {
                continue;
            };
            let has_location = filter.with_geo.is_some() && locations.get(id)?.is_some();
            if filter.matches(&device, has_location) {
                if wanted {
                    items.push(device);
                }
                count += 1;
            }
        }
        Ok(Page { count, items })
    }
}
