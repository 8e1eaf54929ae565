//! [`SoftwareStore`] on the kv tables: application software (OTAO) — software versions, applications'
//! settings, endpoint filters, what devices run, and the installations moving them.
//!
//! Indexes keep every read the decision takes a range: an organization's versions
//! (`software_versions`), a device's installation in progress per application
//! (`active_installations`, also what makes "one at a time per application" a lookup), and the
//! hops devices failed or declined (`refused_hops`), so [`SoftwareStore::software_view`] never
//! walks installation history. Installations live with their device: deleting the device
//! deletes them, deactivating it aborts those in progress.

use std::collections::{BTreeMap, HashMap};

use crate::kv::{ReadableTable, WriteTransaction};
use semver::Version;

use super::KvBackend;
use super::paging::{created_key, id_of, index_desc, page_of, visible_keys};
use super::record::{cat, decode, encode, get_record};
use crate::tables::*;
use crate::{
    Application, Device, DeviceId, DeviceLocation, DeviceSoftware, Endpoint, EndpointFilter,
    FilterFields, FilterId, Installation, InstallationId, OrgId, Page, PageRequest, RefusedHop,
    Result, Scope, Software, SoftwareFields, SoftwareId, SoftwareStore, SoftwareView, StoreError,
    Timestamp, Unique, UpgradeStatus, valid_app_name,
};

/// What `create_software`/`update_software` answer for a filter that is not the organization's.
const UNKNOWN_FILTER: StoreError = StoreError::Rule {
    field: "filters",
    message: "Unknown filter.",
};

/// `org ‖ app ‖ 0x00`: the range of one application's versions.
fn app_versions_prefix(org: OrgId, app: &str) -> Vec<u8> {
    cat(&[&org.bytes(), app.as_bytes(), &[0]])
}

fn version_key(org: OrgId, app: &str, version: &Version) -> Vec<u8> {
    cat(&[
        &app_versions_prefix(org, app),
        version.to_string().as_bytes(),
    ])
}

/// `owner ‖ app`: applications (owner: organization), devices' software and installations in
/// progress (owner: device).
fn owned_app_key(owner: [u8; 16], app: &str) -> Vec<u8> {
    cat(&[&owner, app.as_bytes()])
}

fn refused_key(device: DeviceId, software: SoftwareId) -> Vec<u8> {
    cat(&[&device.bytes(), &software.bytes()])
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys and values of an index whose values are ids, for keys starting with `prefix`.
fn ids_with_prefix(
    table: &impl ReadableTable<&'static [u8], u128>,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, u128)>> {
    let range = match prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    range
        .map(|entry| {
            let (key, value) = entry?;
            Ok((key.value().to_vec(), value.value()))
        })
        .collect()
}

/// Keys and records of a table whose values are records, for keys starting with `prefix`.
fn records_with_prefix(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let range = match prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    range
        .map(|entry| {
            let (key, value) = entry?;
            Ok((key.value().to_vec(), value.value().to_vec()))
        })
        .collect()
}

fn uuid_at(bytes: &[u8], at: usize) -> uuid::Uuid {
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[at..at + 16]);
    uuid::Uuid::from_bytes(id)
}

fn find_software(txn: &WriteTransaction, id: SoftwareId) -> Result<Option<Software>> {
    get_record(&txn.open_table(SOFTWARE)?, "software", id.key())
}

fn load_software(txn: &WriteTransaction, id: SoftwareId) -> Result<Software> {
    find_software(txn, id)?.ok_or(StoreError::NotFound)
}

fn save_software(txn: &WriteTransaction, software: &Software) -> Result<()> {
    txn.open_table(SOFTWARE)?
        .insert(software.id.key(), encode("software", software)?.as_slice())?;
    Ok(())
}

fn load_filter(txn: &WriteTransaction, id: FilterId) -> Result<Option<EndpointFilter>> {
    get_record(&txn.open_table(FILTERS)?, "filters", id.key())
}

/// Every filter a version names must be one of its organization's.
fn check_filters(txn: &WriteTransaction, org: OrgId, fields: &SoftwareFields) -> Result<()> {
    for activation in &fields.filters {
        match load_filter(txn, activation.filter)? {
            Some(filter) if filter.fields.organization == org => {}
            _ => return Err(UNKNOWN_FILTER),
        }
    }
    Ok(())
}

fn load_installation(txn: &WriteTransaction, id: InstallationId) -> Result<Option<Installation>> {
    get_record(&txn.open_table(INSTALLATIONS)?, "installations", id.key())
}

/// Status changes of installations, applied to their software's counts once per transaction.
#[derive(Default)]
struct CountChanges(HashMap<SoftwareId, Vec<StatusChange>>);

/// An installation's status before and after (`None`: did not exist / removed).
type StatusChange = (Option<UpgradeStatus>, Option<UpgradeStatus>);

impl CountChanges {
    fn record(
        &mut self,
        software: SoftwareId,
        from: Option<UpgradeStatus>,
        to: Option<UpgradeStatus>,
    ) {
        if from != to {
            self.0.entry(software).or_default().push((from, to));
        }
    }

    fn apply(self, txn: &WriteTransaction) -> Result<()> {
        for (id, changes) in self.0 {
            // The software may be gone with its organization.
            let Some(mut software) = find_software(txn, id)? else {
                continue;
            };
            for (from, to) in changes {
                if let Some(from) = from {
                    software.counts.remove(from);
                }
                if let Some(to) = to {
                    software.counts.add(to);
                }
            }
            save_software(txn, &software)?;
        }
        Ok(())
    }
}

/// Writes an installation (`stored`: its version in the store, if any) and keeps the
/// in-progress and refused-hop indexes in step with its status.
fn save_installation(
    txn: &WriteTransaction,
    stored: Option<&Installation>,
    installation: &Installation,
) -> Result<()> {
    txn.open_table(INSTALLATIONS)?.insert(
        installation.id.key(),
        encode("installations", installation)?.as_slice(),
    )?;
    {
        let mut active = txn.open_table(ACTIVE_INSTALLATIONS)?;
        if let Some(stored) = stored {
            let key = owned_app_key(stored.device.bytes(), &stored.app_name);
            let held = active.get(key.as_slice())?.map(|v| v.value());
            if held == Some(stored.id.key()) {
                active.remove(key.as_slice())?;
            }
        }
        if installation.status == UpgradeStatus::InProgress {
            active.insert(
                owned_app_key(installation.device.bytes(), &installation.app_name).as_slice(),
                installation.id.key(),
            )?;
        }
    }
    let refusal = matches!(
        installation.status,
        UpgradeStatus::Failed | UpgradeStatus::Cancelled
    );
    if refusal || installation.status == UpgradeStatus::Success {
        let key = refused_key(installation.device, installation.software);
        let mut refused = txn.open_table(REFUSED_HOPS)?;
        let current = refused.get(key.as_slice())?.map(|v| v.value());
        // Only a later installation replaces (or clears) the latest refusal.
        let later = match current {
            Some(id) => load_installation(txn, InstallationId(uuid::Uuid::from_u128(id)))?
                .is_none_or(|held| {
                    (held.created, held.id) <= (installation.created, installation.id)
                }),
            None => true,
        };
        if later {
            if refusal {
                refused.insert(key.as_slice(), installation.id.key())?;
            } else {
                refused.remove(key.as_slice())?;
            }
        }
    }
    Ok(())
}

fn insert_installation(txn: &WriteTransaction, installation: &Installation) -> Result<()> {
    save_installation(txn, None, installation)?;
    let created = created_key(installation.created, installation.id.bytes());
    txn.open_table(DEVICE_INSTALLATIONS)?.insert(
        cat(&[&installation.device.bytes(), &created]).as_slice(),
        (),
    )?;
    Ok(())
}

/// Records the version of `app` a device runs (touching `modified` only when it changes).
fn put_device_software(
    txn: &WriteTransaction,
    device: DeviceId,
    app: &str,
    version: &str,
    now: Timestamp,
) -> Result<()> {
    let key = owned_app_key(device.bytes(), app);
    let mut table = txn.open_table(DEVICE_SOFTWARE)?;
    let stored: Option<DeviceSoftware> = match table.get(key.as_slice())? {
        Some(bytes) => Some(decode("device_software", bytes.value())?),
        None => None,
    };
    if stored.is_some_and(|s| s.version == version) {
        return Ok(());
    }
    let record = DeviceSoftware {
        device,
        app_name: app.to_owned(),
        version: version.to_owned(),
        modified: now,
    };
    table.insert(
        key.as_slice(),
        encode("device_software", &record)?.as_slice(),
    )?;
    Ok(())
}

fn read_device_software(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    device: DeviceId,
) -> Result<Vec<DeviceSoftware>> {
    records_with_prefix(table, &device.bytes())?
        .into_iter()
        .map(|(_, bytes)| decode("device_software", &bytes))
        .collect()
}

/// Aborts a device's installations in progress (it was deactivated), moving their software's
/// counts; returns them.
pub(super) fn abort_device_installations_in(
    txn: &WriteTransaction,
    device: DeviceId,
    reason: &str,
) -> Result<Vec<Installation>> {
    let ids = ids_with_prefix(&txn.open_table(ACTIVE_INSTALLATIONS)?, &device.bytes())?;
    let now = Timestamp::now();
    let mut counts = CountChanges::default();
    let mut aborted = Vec::new();
    for (_, id) in ids {
        let Some(stored) = load_installation(txn, InstallationId(uuid::Uuid::from_u128(id)))?
        else {
            continue;
        };
        let mut installation = stored.clone();
        installation.finish(UpgradeStatus::Aborted, reason, now);
        counts.record(
            installation.software,
            Some(stored.status),
            Some(installation.status),
        );
        save_installation(txn, Some(&stored), &installation)?;
        aborted.push(installation);
    }
    counts.apply(txn)?;
    Ok(aborted)
}

/// Removes a device's software, installations (uncounted from their software) and refused
/// hops (the device is being deleted).
pub(super) fn delete_device_software_in(txn: &WriteTransaction, device: DeviceId) -> Result<()> {
    let prefix = device.bytes();
    let software_keys = records_with_prefix(&txn.open_table(DEVICE_SOFTWARE)?, &prefix)?;
    {
        let mut table = txn.open_table(DEVICE_SOFTWARE)?;
        for (key, _) in software_keys {
            table.remove(key.as_slice())?;
        }
    }
    let keys: Vec<[u8; 24]> = {
        let index = txn.open_table(DEVICE_INSTALLATIONS)?;
        index_desc(&index, &prefix, [0; 24], [0xff; 24])?.collect::<Result<_>>()?
    };
    let mut counts = CountChanges::default();
    for key in keys {
        let id = id_of(&key);
        let installation = load_installation(txn, InstallationId(uuid::Uuid::from_u128(id)))?;
        if let Some(installation) = installation {
            counts.record(installation.software, Some(installation.status), None);
        }
        txn.open_table(INSTALLATIONS)?.remove(id)?;
        txn.open_table(DEVICE_INSTALLATIONS)?
            .remove(cat(&[&prefix, &key]).as_slice())?;
    }
    counts.apply(txn)?;
    for table in [ACTIVE_INSTALLATIONS, REFUSED_HOPS] {
        let keys = ids_with_prefix(&txn.open_table(table)?, &prefix)?;
        let mut table = txn.open_table(table)?;
        for (key, _) in keys {
            table.remove(key.as_slice())?;
        }
    }
    Ok(())
}

/// Removes an organization's software, applications and filters (its devices, with their
/// software and installations, are deleted on their own).
pub(super) fn delete_org_software_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let prefix = org.bytes();
    let versions = ids_with_prefix(&txn.open_table(SOFTWARE_VERSIONS)?, &prefix)?;
    {
        let mut index = txn.open_table(SOFTWARE_VERSIONS)?;
        let mut table = txn.open_table(SOFTWARE)?;
        for (key, id) in versions {
            index.remove(key.as_slice())?;
            table.remove(id)?;
        }
    }
    let applications = records_with_prefix(&txn.open_table(APPLICATIONS)?, &prefix)?;
    {
        let mut table = txn.open_table(APPLICATIONS)?;
        let mut orgs = txn.open_table(APPLICATION_ORGS)?;
        for (key, bytes) in applications {
            let application: Application = decode("applications", &bytes)?;
            orgs.remove((application.name.as_str(), org.key()))?;
            table.remove(key.as_slice())?;
        }
    }
    let filters: Vec<[u8; 24]> = {
        let index = txn.open_table(FILTERS_BY_ORG)?;
        index_desc(&index, &prefix, [0; 24], [0xff; 24])?.collect::<Result<_>>()?
    };
    let mut index = txn.open_table(FILTERS_BY_ORG)?;
    let mut table = txn.open_table(FILTERS)?;
    for key in filters {
        table.remove(id_of(&key))?;
        index.remove(cat(&[&prefix, &key]).as_slice())?;
    }
    Ok(())
}

fn require_org(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    if txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The organization's devices (deactivated too), newest first.
fn org_devices(txn: &crate::kv::ReadTransaction, org: OrgId) -> Result<Vec<Device>> {
    let index = txn.open_table(DEVICES_BY_ORG)?;
    let devices = txn.open_table(DEVICES)?;
    let mut out = Vec::new();
    for key in index_desc(&index, &org.bytes(), [0; 24], [0xff; 24])? {
        if let Some(device) = get_record(&devices, "devices", id_of(&key?))? {
            out.push(device);
        }
    }
    Ok(out)
}

fn device_location(
    links: &impl ReadableTable<u128, &'static [u8]>,
    device: DeviceId,
) -> Result<Option<crate::LocationId>> {
    Ok(get_record::<DeviceLocation>(links, "device_locations", device.key())?.map(|l| l.location))
}

/// The view of `org` over `devices` (its catalogue, applications and filters whole).
fn view_of(
    txn: &crate::kv::ReadTransaction,
    org: OrgId,
    devices: Vec<Device>,
) -> Result<SoftwareView> {
    let mut view = SoftwareView::default();

    let versions = ids_with_prefix(&txn.open_table(SOFTWARE_VERSIONS)?, &org.bytes())?;
    let software = txn.open_table(SOFTWARE)?;
    for (_, id) in versions {
        if let Some(s) = get_record::<Software>(&software, "software", id)? {
            view.catalogue.push(s);
        }
    }
    view.catalogue
        .sort_by(|a, b| (&a.app_name, &a.version).cmp(&(&b.app_name, &b.version)));

    for (_, bytes) in records_with_prefix(&txn.open_table(APPLICATIONS)?, &org.bytes())? {
        let application: Application = decode("applications", &bytes)?;
        view.applications
            .insert(application.name.clone(), application);
    }

    {
        let index = txn.open_table(FILTERS_BY_ORG)?;
        let filters = txn.open_table(FILTERS)?;
        for key in index_desc(&index, &org.bytes(), [0; 24], [0xff; 24])? {
            if let Some(filter) = get_record::<EndpointFilter>(&filters, "filters", id_of(&key?))? {
                view.filters.insert(filter.id, filter.fields.query);
            }
        }
    }

    let links = txn.open_table(DEVICE_LOCATIONS)?;
    let device_software = txn.open_table(DEVICE_SOFTWARE)?;
    let active = txn.open_table(ACTIVE_INSTALLATIONS)?;
    let refused = txn.open_table(REFUSED_HOPS)?;
    let installations = txn.open_table(INSTALLATIONS)?;
    for device in devices {
        for (_, id) in ids_with_prefix(&active, &device.id.bytes())? {
            if let Some(installation) = get_record(&installations, "installations", id)? {
                view.in_progress.push(installation);
            }
        }
        for (key, id) in ids_with_prefix(&refused, &device.id.bytes())? {
            if let Some(installation) =
                get_record::<Installation>(&installations, "installations", id)?
            {
                view.refused.push(RefusedHop {
                    device: device.id,
                    software: SoftwareId(uuid_at(&key, 16)),
                    at: installation.modified,
                });
            }
        }
        if device.is_deactivated {
            continue;
        }
        let software = read_device_software(&device_software, device.id)?
            .into_iter()
            .map(|s| (s.app_name, s.version))
            .collect();
        view.endpoints.push(Endpoint {
            location: device_location(&links, device.id)?,
            device,
            software,
        });
    }
    view.in_progress.sort_by_key(|i| (i.created, i.id));
    Ok(view)
}

impl SoftwareStore for KvBackend {
    fn create_software(
        &self,
        org: OrgId,
        app_name: &str,
        version: Version,
        fields: SoftwareFields,
    ) -> Result<Software> {
        if !valid_app_name(app_name) {
            return Err(StoreError::Rule {
                field: "app_name",
                message: "Invalid application name.",
            });
        }
        let txn = self.db.begin_write()?;
        require_org(&txn, org)?;
        check_filters(&txn, org, &fields)?;
        let key = version_key(org, app_name, &version);
        let now = Timestamp::now();
        let software = Software {
            id: SoftwareId::new(),
            organization: org,
            app_name: app_name.to_owned(),
            version,
            fields,
            counts: Default::default(),
            note: String::new(),
            created: now,
            modified: now,
        };
        {
            let mut versions = txn.open_table(SOFTWARE_VERSIONS)?;
            if versions.get(key.as_slice())?.is_some() {
                return Err(StoreError::Unique(Unique::SoftwareVersion));
            }
            versions.insert(key.as_slice(), software.id.key())?;
        }
        save_software(&txn, &software)?;
        let app_key = owned_app_key(org.bytes(), app_name);
        let mut applications = txn.open_table(APPLICATIONS)?;
        if applications.get(app_key.as_slice())?.is_none() {
            let application = Application {
                organization: org,
                name: app_name.to_owned(),
                consent_required: false,
                created: now,
                modified: now,
            };
            applications.insert(
                app_key.as_slice(),
                encode("applications", &application)?.as_slice(),
            )?;
            txn.open_table(APPLICATION_ORGS)?
                .insert((app_name, org.key()), ())?;
        }
        drop(applications);
        txn.commit()?;
        Ok(software)
    }

    fn software(&self, org: OrgId, app_name: &str, version: &Version) -> Result<Option<Software>> {
        let txn = self.db.begin_read()?;
        let key = version_key(org, app_name, version);
        let Some(id) = txn
            .open_table(SOFTWARE_VERSIONS)?
            .get(key.as_slice())?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        get_record(&txn.open_table(SOFTWARE)?, "software", id)
    }

    fn list_software(&self, org: OrgId, app_name: &str) -> Result<Vec<Software>> {
        let txn = self.db.begin_read()?;
        let ids = ids_with_prefix(
            &txn.open_table(SOFTWARE_VERSIONS)?,
            &app_versions_prefix(org, app_name),
        )?;
        let table = txn.open_table(SOFTWARE)?;
        let mut out: Vec<Software> = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            if let Some(software) = get_record(&table, "software", id)? {
                out.push(software);
            }
        }
        out.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(out)
    }

    fn update_software(&self, id: SoftwareId, mut fields: SoftwareFields) -> Result<Software> {
        let txn = self.db.begin_write()?;
        let mut software = load_software(&txn, id)?;
        check_filters(&txn, software.organization, &fields)?;
        // The specification is fixed once published.
        fields.specification = std::mem::take(&mut software.fields.specification);
        software.fields = fields;
        software.note.clear();
        software.modified = Timestamp::now();
        save_software(&txn, &software)?;
        txn.commit()?;
        Ok(software)
    }

    fn suspend_software(&self, id: SoftwareId, note: String) -> Result<()> {
        let txn = self.db.begin_write()?;
        let mut software = load_software(&txn, id)?;
        software.fields.rollout_strategy = crate::RolloutStrategy::Suspended;
        software.note = note;
        software.modified = Timestamp::now();
        save_software(&txn, &software)?;
        txn.commit()?;
        Ok(())
    }

    fn application_organizations(&self, scope: &Scope, app_name: &str) -> Result<Vec<OrgId>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(APPLICATION_ORGS)?;
        let mut orgs = Vec::new();
        for entry in index.range((app_name, 0u128)..=(app_name, u128::MAX))? {
            let (key, _) = entry?;
            let org = OrgId(uuid::Uuid::from_u128(key.value().1));
            if scope.contains(org) {
                orgs.push(org);
            }
        }
        Ok(orgs)
    }

    fn application(&self, org: OrgId, app_name: &str) -> Result<Option<Application>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(APPLICATIONS)?;
        let key = owned_app_key(org.bytes(), app_name);
        match table.get(key.as_slice())? {
            Some(bytes) => decode("applications", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_application(&self, mut application: Application) -> Result<Application> {
        if !valid_app_name(&application.name) {
            return Err(StoreError::Rule {
                field: "app_name",
                message: "Invalid application name.",
            });
        }
        let org = application.organization;
        let txn = self.db.begin_write()?;
        require_org(&txn, org)?;
        let key = owned_app_key(org.bytes(), &application.name);
        {
            let mut table = txn.open_table(APPLICATIONS)?;
            let stored: Option<Application> = match table.get(key.as_slice())? {
                Some(bytes) => Some(decode("applications", bytes.value())?),
                None => None,
            };
            let now = Timestamp::now();
            application.created = stored.map_or(now, |s| s.created);
            application.modified = now;
            table.insert(
                key.as_slice(),
                encode("applications", &application)?.as_slice(),
            )?;
            txn.open_table(APPLICATION_ORGS)?
                .insert((application.name.as_str(), org.key()), ())?;
        }
        txn.commit()?;
        Ok(application)
    }

    fn create_filter(&self, fields: FilterFields) -> Result<EndpointFilter> {
        let now = Timestamp::now();
        let filter = EndpointFilter {
            id: FilterId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        let org = filter.fields.organization;
        require_org(&txn, org)?;
        txn.open_table(FILTERS)?
            .insert(filter.id.key(), encode("filters", &filter)?.as_slice())?;
        txn.open_table(FILTERS_BY_ORG)?.insert(
            cat(&[&org.bytes(), &created_key(now, filter.id.bytes())]).as_slice(),
            (),
        )?;
        txn.commit()?;
        Ok(filter)
    }

    fn filter(&self, id: FilterId) -> Result<Option<EndpointFilter>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(FILTERS)?, "filters", id.key())
    }

    fn list_filters(&self, scope: &Scope, page: PageRequest) -> Result<Page<EndpointFilter>> {
        let txn = self.db.begin_read()?;
        let keys = visible_keys(&txn.open_table(FILTERS_BY_ORG)?, scope)?;
        let ids = keys.iter().map(id_of).collect();
        page_of(&txn.open_table(FILTERS)?, "filters", ids, page)
    }

    fn update_filter(&self, id: FilterId, fields: FilterFields) -> Result<EndpointFilter> {
        let txn = self.db.begin_write()?;
        let mut filter = load_filter(&txn, id)?.ok_or(StoreError::NotFound)?;
        if fields.organization != filter.fields.organization {
            return Err(StoreError::Rule {
                field: "organization",
                message: "A filter cannot move to another organization.",
            });
        }
        filter.fields = fields;
        filter.modified = Timestamp::now();
        txn.open_table(FILTERS)?
            .insert(id.key(), encode("filters", &filter)?.as_slice())?;
        txn.commit()?;
        Ok(filter)
    }

    fn delete_filter(&self, id: FilterId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let filter = load_filter(&txn, id)?.ok_or(StoreError::NotFound)?;
        let org = filter.fields.organization;
        // Only the organization's own versions may name it.
        let versions = ids_with_prefix(&txn.open_table(SOFTWARE_VERSIONS)?, &org.bytes())?;
        {
            let table = txn.open_table(SOFTWARE)?;
            for (_, software) in versions {
                let Some(software) = get_record::<Software>(&table, "software", software)? else {
                    continue;
                };
                if software.fields.filters.iter().any(|a| a.filter == id) {
                    return Err(StoreError::InUse);
                }
            }
        }
        txn.open_table(FILTERS)?.remove(id.key())?;
        txn.open_table(FILTERS_BY_ORG)?
            .remove(cat(&[&org.bytes(), &created_key(filter.created, id.bytes())]).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn filter_endpoints(&self, id: FilterId, page: PageRequest) -> Result<Page<Device>> {
        let txn = self.db.begin_read()?;
        let filter: EndpointFilter = get_record(&txn.open_table(FILTERS)?, "filters", id.key())?
            .ok_or(StoreError::NotFound)?;
        let index = txn.open_table(DEVICES_BY_ORG)?;
        let devices = txn.open_table(DEVICES)?;
        let links = txn.open_table(DEVICE_LOCATIONS)?;
        let mut count = 0u64;
        let mut items = Vec::new();
        for key in index_desc(
            &index,
            &filter.fields.organization.bytes(),
            [0; 24],
            [0xff; 24],
        )? {
            let Some(device) = get_record::<Device>(&devices, "devices", id_of(&key?))? else {
                continue;
            };
            if device.is_deactivated {
                continue;
            }
            // A query does not look at what the device runs: its software is not read.
            let endpoint = Endpoint {
                location: device_location(&links, device.id)?,
                device,
                software: BTreeMap::new(),
            };
            if !filter.fields.query.matches(&endpoint) {
                continue;
            }
            if count >= page.offset && (items.len() as u64) < page.limit {
                items.push(endpoint.device);
            }
            count += 1;
        }
        Ok(Page { count, items })
    }

    fn device_software(&self, device: DeviceId) -> Result<Vec<DeviceSoftware>> {
        let txn = self.db.begin_read()?;
        read_device_software(&txn.open_table(DEVICE_SOFTWARE)?, device)
    }

    fn set_device_software(
        &self,
        device: DeviceId,
        applications: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<Vec<DeviceSoftware>> {
        let txn = self.db.begin_write()?;
        if txn.open_table(DEVICES)?.get(device.key())?.is_none() {
            return Err(StoreError::NotFound);
        }
        if replace {
            let stored = records_with_prefix(&txn.open_table(DEVICE_SOFTWARE)?, &device.bytes())?;
            let mut table = txn.open_table(DEVICE_SOFTWARE)?;
            for (key, _) in stored {
                let app = String::from_utf8_lossy(&key[16..]);
                if !applications.contains_key(app.as_ref()) {
                    table.remove(key.as_slice())?;
                }
            }
        }
        let now = Timestamp::now();
        for (app, version) in &applications {
            put_device_software(&txn, device, app, version, now)?;
        }
        let out = read_device_software(&txn.open_table(DEVICE_SOFTWARE)?, device)?;
        txn.commit()?;
        Ok(out)
    }

    fn software_view(&self, org: OrgId) -> Result<SoftwareView> {
        let txn = self.db.begin_read()?;
        let devices = org_devices(&txn, org)?;
        view_of(&txn, org, devices)
    }

    fn software_view_of(&self, org: OrgId, devices: &[DeviceId]) -> Result<SoftwareView> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let mut found = Vec::with_capacity(devices.len());
        for id in devices {
            if let Some(device) = get_record::<Device>(&table, "devices", id.key())?
                && device.fields.organization == org
            {
                found.push(device);
            }
        }
        view_of(&txn, org, found)
    }

    fn set_inventories(
        &self,
        inventories: Vec<(DeviceId, BTreeMap<String, String>)>,
    ) -> Result<Vec<DeviceId>> {
        let txn = self.db.begin_write()?;
        let mut missing = Vec::new();
        let now = Timestamp::now();
        for (device, applications) in inventories {
            if txn.open_table(DEVICES)?.get(device.key())?.is_none() {
                missing.push(device);
                continue;
            }
            let stored = records_with_prefix(&txn.open_table(DEVICE_SOFTWARE)?, &device.bytes())?;
            {
                let mut table = txn.open_table(DEVICE_SOFTWARE)?;
                for (key, _) in stored {
                    let app = String::from_utf8_lossy(&key[16..]);
                    if !applications.contains_key(app.as_ref()) {
                        table.remove(key.as_slice())?;
                    }
                }
            }
            for (app, version) in &applications {
                put_device_software(&txn, device, app, version, now)?;
            }
        }
        txn.commit()?;
        Ok(missing)
    }

    fn software_organizations(&self) -> Result<Vec<OrgId>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(SOFTWARE_VERSIONS)?;
        let mut orgs = Vec::new();
        // One seek per organization: skip past each one's versions.
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(entry) = index.range::<&[u8]>(from.as_slice()..)?.next() else {
                break;
            };
            let (key, _) = entry?;
            let org = uuid_at(key.value(), 0);
            orgs.push(OrgId(org));
            match prefix_end(org.as_bytes()) {
                Some(end) => from = end,
                None => break,
            }
        }
        Ok(orgs)
    }

    fn start_installations(&self, installations: Vec<Installation>) -> Result<Vec<Installation>> {
        let txn = self.db.begin_write()?;
        let mut counts = CountChanges::default();
        let mut stored = Vec::with_capacity(installations.len());
        for installation in installations {
            let device: Option<Device> = get_record(
                &txn.open_table(DEVICES)?,
                "devices",
                installation.device.key(),
            )?;
            if device.is_none_or(|d| d.is_deactivated) {
                continue;
            }
            let busy = txn
                .open_table(ACTIVE_INSTALLATIONS)?
                .get(owned_app_key(installation.device.bytes(), &installation.app_name).as_slice())?
                .is_some();
            if busy || load_installation(&txn, installation.id)?.is_some() {
                continue;
            }
            insert_installation(&txn, &installation)?;
            counts.record(installation.software, None, Some(installation.status));
            stored.push(installation);
        }
        counts.apply(&txn)?;
        txn.commit()?;
        Ok(stored)
    }

    fn write_installations(&self, installations: Vec<Installation>) -> Result<Vec<InstallationId>> {
        let txn = self.db.begin_write()?;
        let mut left_alone = Vec::new();
        let mut counts = CountChanges::default();
        let now = Timestamp::now();
        for installation in installations {
            match load_installation(&txn, installation.id)? {
                Some(stored) if stored.status == UpgradeStatus::InProgress => {
                    counts.record(
                        installation.software,
                        Some(stored.status),
                        Some(installation.status),
                    );
                    save_installation(&txn, Some(&stored), &installation)?;
                    if installation.status == UpgradeStatus::Success
                        && txn
                            .open_table(DEVICES)?
                            .get(installation.device.key())?
                            .is_some()
                    {
                        put_device_software(
                            &txn,
                            installation.device,
                            &installation.app_name,
                            &installation.version.to_string(),
                            now,
                        )?;
                    }
                }
                _ => left_alone.push(installation.id),
            }
        }
        counts.apply(&txn)?;
        txn.commit()?;
        Ok(left_alone)
    }

    fn installation(&self, id: InstallationId) -> Result<Option<Installation>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(INSTALLATIONS)?, "installations", id.key())
    }

    fn active_installations(&self) -> Result<Vec<Installation>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INSTALLATIONS)?;
        let mut out: Vec<Installation> = Vec::new();
        for entry in txn.open_table(ACTIVE_INSTALLATIONS)?.iter()? {
            let (_, id) = entry?;
            if let Some(installation) = get_record(&table, "installations", id.value())? {
                out.push(installation);
            }
        }
        out.sort_by_key(|i| (i.created, i.id));
        Ok(out)
    }

    fn device_installations(&self, device: DeviceId) -> Result<Vec<Installation>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(DEVICE_INSTALLATIONS)?;
        let table = txn.open_table(INSTALLATIONS)?;
        let mut out = Vec::new();
        for key in index_desc(&index, &device.bytes(), [0; 24], [0xff; 24])? {
            if let Some(installation) = get_record(&table, "installations", id_of(&key?))? {
                out.push(installation);
            }
        }
        Ok(out)
    }
}
