//! [`UpgradeStore`] on the kv tables: device firmware, upgrade operations, batches, reports, image types.

use std::collections::{BTreeMap, HashMap};

use crate::kv::{ReadableTable, WriteTransaction};

use super::KvBackend;
use super::cluster::carry_live;
use super::paging::{created_key, id_of, index_desc, paged};
use super::record::{cat, decode, encode, get_record, get_records};
use crate::tables::*;
use crate::{
    Batch, BatchFilter, BatchId, CancelOutcome, DeviceFirmware, DeviceId, DeviceLocation,
    ImageType, LiveEvent, Location, LocationId, Page, PageRequest, Result, Scope, StartedUpgrades,
    StoreError, Timestamp, Unique, UpdateReport, UpgradeFilter, UpgradeId, UpgradeOperation,
    UpgradePlan, UpgradeStatus, UpgradeStore, default_image_types,
};

fn load_upgrade(txn: &WriteTransaction, id: UpgradeId) -> Result<Option<UpgradeOperation>> {
    get_record(&txn.open_table(UPGRADES)?, "upgrades", id.key())
}

fn load_batch(txn: &WriteTransaction, id: BatchId) -> Result<Option<Batch>> {
    get_record(&txn.open_table(BATCHES)?, "batches", id.key())
}

fn save_batch(txn: &WriteTransaction, batch: &Batch) -> Result<()> {
    txn.open_table(BATCHES)?
        .insert(batch.id.key(), encode("batches", batch)?.as_slice())?;
    Ok(())
}

/// Writes an operation and keeps the in-progress index in step with its status.
fn save_upgrade(txn: &WriteTransaction, op: &UpgradeOperation) -> Result<()> {
    txn.open_table(UPGRADES)?
        .insert(op.id.key(), encode("upgrades", op)?.as_slice())?;
    let mut active = txn.open_table(ACTIVE_UPGRADES)?;
    if op.status == UpgradeStatus::InProgress {
        active.insert(op.id.key(), ())?;
    } else {
        active.remove(op.id.key())?;
    }
    Ok(())
}

fn insert_upgrade(txn: &WriteTransaction, op: &UpgradeOperation) -> Result<()> {
    save_upgrade(txn, op)?;
    let created = created_key(op.created, op.id.bytes());
    txn.open_table(UPGRADES_BY_CREATED)?
        .insert(created.as_slice(), ())?;
    txn.open_table(DEVICE_UPGRADES)?
        .insert(cat(&[&op.device.bytes(), &created]).as_slice(), ())?;
    if let Some(batch) = op.batch {
        txn.open_table(BATCH_UPGRADES)?
            .insert(cat(&[&batch.bytes(), &created]).as_slice(), ())?;
    }
    Ok(())
}

/// Status changes of operations, applied to their batches' counts once per transaction.
/// Applying them carries one [`LiveEvent::Batch`] per batch whose counts changed with the
/// transaction (to the other nodes) and returns them, for the writer to announce here once
/// it commits: a transaction changing many operations of a batch is one event for it.
#[derive(Default)]
pub(super) struct CountChanges(BTreeMap<BatchId, Vec<StatusChange>>);

/// An operation's status before and after (`None`: did not exist / removed).
type StatusChange = (Option<UpgradeStatus>, Option<UpgradeStatus>);

impl CountChanges {
    fn record(
        &mut self,
        batch: Option<BatchId>,
        from: Option<UpgradeStatus>,
        to: Option<UpgradeStatus>,
    ) {
        if let Some(batch) = batch
            && from != to
        {
            self.0.entry(batch).or_default().push((from, to));
        }
    }

    /// Applies the changes to the batches, carrying their events with `txn`; returns the
    /// events to announce after the commit.
    #[must_use = "the events are announced once the transaction commits"]
    pub(super) fn apply(self, txn: &WriteTransaction) -> Result<Vec<LiveEvent>> {
        let mut events = Vec::new();
        for (id, changes) in self.0 {
            let Some(mut batch) = load_batch(txn, id)? else {
                continue;
            };
            let before = batch.counts;
            for (from, to) in changes {
                if let Some(from) = from {
                    batch.counts.remove(from);
                }
                if let Some(to) = to {
                    batch.counts.add(to);
                }
            }
            batch.modified = Timestamp::now();
            save_batch(txn, &batch)?;
            if batch.counts != before {
                let event = LiveEvent::Batch {
                    batch: batch.id,
                    organization: batch.organization,
                    status: batch.status(),
                    counts: batch.counts,
                    total: batch.counts.total(),
                    at: batch.modified,
                };
                carry_live(txn, &event);
                events.push(event);
            }
        }
        Ok(events)
    }
}

fn set_firmware(txn: &WriteTransaction, op: &UpgradeOperation, installed: bool) -> Result<()> {
    let mut table = txn.open_table(DEVICE_FIRMWARE)?;
    let now = Timestamp::now();
    let current: Option<DeviceFirmware> = get_record(&table, "device_firmware", op.device.key())?;
    let firmware = match current {
        // A success of an older operation must not mark a newer image installed.
        Some(f) if installed && f.image != op.image => return Ok(()),
        Some(mut f) => {
            f.image = op.image;
            f.installed = installed;
            f.modified = now;
            f
        }
        None => DeviceFirmware {
            device: op.device,
            image: op.image,
            installed,
            created: now,
            modified: now,
        },
    };
    table.insert(
        op.device.key(),
        encode("device_firmware", &firmware)?.as_slice(),
    )?;
    Ok(())
}

/// Aborts a device's operations in progress (e.g. it was deactivated); their batches'
/// counts change when the caller applies `counts`.
pub(super) fn abort_device_upgrades_in(
    txn: &WriteTransaction,
    device: DeviceId,
    reason: &str,
    counts: &mut CountChanges,
) -> Result<Vec<UpgradeOperation>> {
    let active: Vec<UpgradeId> = {
        let index = txn.open_table(DEVICE_UPGRADES)?;
        let active = txn.open_table(ACTIVE_UPGRADES)?;
        let mut ids = Vec::new();
        for key in index_desc(&index, &device.bytes(), [0; 24], [0xff; 24])? {
            let id = id_of(&key?);
            if active.get(id)?.is_some() {
                ids.push(UpgradeId(uuid::Uuid::from_u128(id)));
            }
        }
        ids
    };
    let mut aborted = Vec::new();
    for id in active {
        if let Some(mut op) = load_upgrade(txn, id)? {
            op.finish(UpgradeStatus::Aborted, reason);
            counts.record(op.batch, Some(UpgradeStatus::InProgress), Some(op.status));
            save_upgrade(txn, &op)?;
            aborted.push(op);
        }
    }
    Ok(aborted)
}

/// Removes a device's operations, firmware and report (the device is being deleted); their
/// batches' counts change when the caller applies `counts`.
pub(super) fn delete_device_upgrades_in(
    txn: &WriteTransaction,
    device: DeviceId,
    counts: &mut CountChanges,
) -> Result<()> {
    let prefix = device.bytes();
    let keys: Vec<[u8; 24]> = {
        let index = txn.open_table(DEVICE_UPGRADES)?;
        index_desc(&index, &prefix, [0; 24], [0xff; 24])?.collect::<Result<_>>()?
    };
    for key in keys {
        let id = UpgradeId(uuid::Uuid::from_u128(id_of(&key)));
        if let Some(op) = load_upgrade(txn, id)? {
            counts.record(op.batch, Some(op.status), None);
            if let Some(batch) = op.batch {
                txn.open_table(BATCH_UPGRADES)?
                    .remove(cat(&[&batch.bytes(), &key]).as_slice())?;
            }
        }
        txn.open_table(UPGRADES)?.remove(id.key())?;
        txn.open_table(ACTIVE_UPGRADES)?.remove(id.key())?;
        txn.open_table(UPGRADES_BY_CREATED)?
            .remove(key.as_slice())?;
        txn.open_table(DEVICE_UPGRADES)?
            .remove(cat(&[&prefix, &key]).as_slice())?;
    }
    txn.open_table(DEVICE_FIRMWARE)?.remove(device.key())?;
    txn.open_table(UPDATE_REPORTS)?.remove(device.key())?;
    Ok(())
}

impl UpgradeStore for KvBackend {
    fn start_upgrades(&self, plan: UpgradePlan) -> Result<StartedUpgrades> {
        let txn = self.db.begin_write()?;
        let mut counts = CountChanges::default();
        let mut superseded = Vec::new();
        let mut batch = plan.batch;
        if let Some(batch) = &mut batch {
            batch.counts = Default::default();
            save_batch(&txn, batch)?;
            txn.open_table(BATCHES_BY_CREATED)?
                .insert(created_key(batch.created, batch.id.bytes()).as_slice(), ())?;
        }
        for op in &plan.operations {
            if txn.open_table(DEVICES)?.get(op.device.key())?.is_none() {
                return Err(StoreError::NotFound);
            }
            // The device's earlier upgrades still running give way to this one.
            superseded.extend(abort_device_upgrades_in(
                &txn,
                op.device,
                &format!("Aborted: superseded by upgrade operation {}", op.id),
                &mut counts,
            )?);
            insert_upgrade(&txn, op)?;
            counts.record(op.batch, None, Some(op.status));
            set_firmware(&txn, op, false)?;
        }
        let events = counts.apply(&txn)?;
        let batch = match batch {
            Some(b) => load_batch(&txn, b.id)?,
            None => None,
        };
        txn.commit()?;
        self.announce_live(events);
        Ok(StartedUpgrades {
            batch,
            operations: plan.operations,
            superseded,
        })
    }

    fn write_upgrades(
        &self,
        operations: Vec<UpgradeOperation>,
        reports: Vec<(DeviceId, UpdateReport)>,
    ) -> Result<Vec<UpgradeId>> {
        let txn = self.db.begin_write()?;
        let mut refused = Vec::new();
        let mut counts = CountChanges::default();
        // Every operation's stored status, read together, then kept current as the pass
        // writes (an operation may come twice).
        let mut statuses: HashMap<UpgradeId, UpgradeStatus> = {
            let ids: Vec<u128> = operations.iter().map(|op| op.id.key()).collect();
            get_records::<UpgradeOperation>(&txn.open_table(UPGRADES)?, "upgrades", &ids)?
                .into_iter()
                .map(|op| (op.id, op.status))
                .collect()
        };
        for op in operations {
            match statuses.get(&op.id) {
                Some(&stored) if stored == UpgradeStatus::InProgress => {
                    counts.record(op.batch, Some(stored), Some(op.status));
                    if op.status == UpgradeStatus::Success {
                        set_firmware(&txn, &op, true)?;
                    }
                    save_upgrade(&txn, &op)?;
                    statuses.insert(op.id, op.status);
                }
                _ => refused.push(op.id),
            }
        }
        let events = counts.apply(&txn)?;
        {
            let devices = txn.open_table(DEVICES)?;
            let mut table = txn.open_table(UPDATE_REPORTS)?;
            // Which devices exist and their stored reports, read together.
            let keys: Vec<u128> = reports.iter().map(|(device, _)| device.key()).collect();
            let exists: Vec<bool> = devices
                .get_many(&keys)?
                .iter()
                .map(Option::is_some)
                .collect();
            let mut stored_reports: HashMap<u128, UpdateReport> = HashMap::new();
            for (key, bytes) in keys.iter().zip(table.get_many(&keys)?) {
                if let Some(bytes) = bytes {
                    stored_reports.insert(*key, decode("update_reports", bytes.value())?);
                }
            }
            for ((device, report), exists) in reports.into_iter().zip(exists) {
                if !exists {
                    continue;
                }
                // A report carries one resource or both; the other keeps its stored value.
                let stored = stored_reports.remove(&device.key());
                let merged = match stored {
                    Some(stored) => UpdateReport {
                        update: report.update.or(stored.update),
                        images: report.images.or(stored.images),
                        modified: report.modified.or(stored.modified),
                    },
                    None => report,
                };
                table.insert(device.key(), encode("update_reports", &merged)?.as_slice())?;
                stored_reports.insert(device.key(), merged);
            }
        }
        txn.commit()?;
        self.announce_live(events);
        Ok(refused)
    }

    fn cancel_upgrade(&self, id: UpgradeId) -> Result<CancelOutcome> {
        let txn = self.db.begin_write()?;
        let mut op = load_upgrade(&txn, id)?.ok_or(StoreError::NotFound)?;
        if !op.cancellable() {
            return Ok(CancelOutcome::TooLate(op));
        }
        op.finish(UpgradeStatus::Cancelled, "Cancelled by user");
        let mut counts = CountChanges::default();
        counts.record(op.batch, Some(UpgradeStatus::InProgress), Some(op.status));
        save_upgrade(&txn, &op)?;
        let events = counts.apply(&txn)?;
        txn.commit()?;
        self.announce_live(events);
        Ok(CancelOutcome::Cancelled(op))
    }

    fn cancel_batch(&self, id: BatchId) -> Result<(Batch, Vec<UpgradeOperation>)> {
        let txn = self.db.begin_write()?;
        if load_batch(&txn, id)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let keys: Vec<[u8; 24]> = {
            let index = txn.open_table(BATCH_UPGRADES)?;
            index_desc(&index, &id.bytes(), [0; 24], [0xff; 24])?.collect::<Result<_>>()?
        };
        let mut cancelled = Vec::new();
        let mut counts = CountChanges::default();
        for key in keys {
            let op_id = UpgradeId(uuid::Uuid::from_u128(id_of(&key)));
            if let Some(mut op) = load_upgrade(&txn, op_id)?
                && op.cancellable()
            {
                op.finish(UpgradeStatus::Cancelled, "Cancelled with its batch");
                counts.record(op.batch, Some(UpgradeStatus::InProgress), Some(op.status));
                save_upgrade(&txn, &op)?;
                cancelled.push(op);
            }
        }
        let events = counts.apply(&txn)?;
        let batch = load_batch(&txn, id)?.ok_or(StoreError::NotFound)?;
        txn.commit()?;
        self.announce_live(events);
        Ok((batch, cancelled))
    }

    fn note_batch(&self, id: BatchId, note: String) -> Result<()> {
        let txn = self.db.begin_write()?;
        let mut batch = load_batch(&txn, id)?.ok_or(StoreError::NotFound)?;
        batch.note = note;
        batch.modified = Timestamp::now();
        save_batch(&txn, &batch)?;
        txn.commit()?;
        Ok(())
    }

    fn upgrade(&self, id: UpgradeId) -> Result<Option<UpgradeOperation>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(UPGRADES)?, "upgrades", id.key())
    }

    fn list_upgrades(
        &self,
        scope: &Scope,
        filter: &UpgradeFilter,
        page: PageRequest,
    ) -> Result<Page<UpgradeOperation>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(UPGRADES)?;
        let keys: Vec<[u8; 24]> = if let Some(device) = filter.device {
            let index = txn.open_table(DEVICE_UPGRADES)?;
            index_desc(&index, &device.bytes(), [0; 24], [0xff; 24])?.collect::<Result<_>>()?
        } else if let Some(batch) = filter.batch {
            let index = txn.open_table(BATCH_UPGRADES)?;
            index_desc(&index, &batch.bytes(), [0; 24], [0xff; 24])?.collect::<Result<_>>()?
        } else {
            let index = txn.open_table(UPGRADES_BY_CREATED)?;
            index_desc(&index, &[], [0; 24], [0xff; 24])?.collect::<Result<_>>()?
        };
        let ids: Vec<u128> = keys.iter().map(id_of).collect();
        let mut matching = Vec::new();
        for op in get_records::<UpgradeOperation>(&table, "upgrades", &ids)? {
            if scope.contains(op.organization)
                && filter.organization.is_none_or(|o| o == op.organization)
                && filter.device.is_none_or(|d| d == op.device)
                && filter.image.is_none_or(|i| i == op.image)
                && filter.status.is_none_or(|s| s == op.status)
                && filter.batch.is_none_or(|b| Some(b) == op.batch)
            {
                matching.push(op);
            }
        }
        Ok(paged(matching, page))
    }

    fn active_upgrades(&self) -> Result<Vec<UpgradeOperation>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(UPGRADES)?;
        let ids = txn
            .open_table(ACTIVE_UPGRADES)?
            .iter()?
            .map(|entry| entry.map(|(id, _)| id.value()))
            .collect::<Result<Vec<u128>>>()?;
        let mut ops = get_records::<UpgradeOperation>(&table, "upgrades", &ids)?;
        ops.sort_by_key(|o| (o.created, o.id));
        Ok(ops)
    }

    fn batch(&self, id: BatchId) -> Result<Option<Batch>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(BATCHES)?, "batches", id.key())
    }

    fn list_batches(
        &self,
        scope: &Scope,
        filter: &BatchFilter,
        page: PageRequest,
    ) -> Result<Page<Batch>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        let index = txn.open_table(BATCHES_BY_CREATED)?;
        let mut matching = Vec::new();
        for key in index_desc(&index, &[], [0; 24], [0xff; 24])? {
            let Some(batch) = get_record::<Batch>(&table, "batches", id_of(&key?))? else {
                continue;
            };
            let visible = match (scope, batch.organization) {
                (Scope::All, _) => true,
                (_, Some(org)) => scope.contains(org),
                (_, None) => false,
            };
            if visible
                && filter.build.is_none_or(|b| b == batch.build)
                && filter.status.is_none_or(|s| s == batch.status())
            {
                matching.push(batch);
            }
        }
        Ok(paged(matching, page))
    }

    fn device_firmware(&self, device: DeviceId) -> Result<Option<DeviceFirmware>> {
        let txn = self.db.begin_read()?;
        get_record(
            &txn.open_table(DEVICE_FIRMWARE)?,
            "device_firmware",
            device.key(),
        )
    }

    fn delete_device_firmware(&self, device: DeviceId) -> Result<()> {
        let txn = self.db.begin_write()?;
        if txn
            .open_table(DEVICE_FIRMWARE)?
            .take(device.key())?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        txn.commit()?;
        Ok(())
    }

    fn update_report(&self, device: DeviceId) -> Result<Option<UpdateReport>> {
        let txn = self.db.begin_read()?;
        get_record(
            &txn.open_table(UPDATE_REPORTS)?,
            "update_reports",
            device.key(),
        )
    }

    fn image_types(&self) -> Result<Vec<ImageType>> {
        let mut types = default_image_types();
        let txn = self.db.begin_read()?;
        for entry in txn.open_table(IMAGE_TYPES)?.iter()? {
            let (_, bytes) = entry?;
            types.push(decode("image_types", bytes.value())?);
        }
        types.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(types)
    }

    fn create_image_type(&self, mut image_type: ImageType) -> Result<ImageType> {
        image_type.builtin = false;
        if default_image_types()
            .iter()
            .any(|t| t.name == image_type.name)
        {
            return Err(StoreError::Unique(Unique::ImageTypeName));
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IMAGE_TYPES)?;
            if table.get(image_type.name.as_str())?.is_some() {
                return Err(StoreError::Unique(Unique::ImageTypeName));
            }
            table.insert(
                image_type.name.as_str(),
                encode("image_types", &image_type)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(image_type)
    }

    fn delete_image_type(&self, name: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut types = txn.open_table(IMAGE_TYPES)?;
            if types.get(name)?.is_none() {
                return Err(StoreError::NotFound);
            }
            types.remove(name)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn secret(&self, name: &str) -> Result<[u8; 32]> {
        {
            let txn = self.db.begin_read()?;
            if let Some(bytes) = txn.open_table(SECRETS)?.get(name)?
                && let Ok(secret) = <[u8; 32]>::try_from(bytes.value())
            {
                return Ok(secret);
            }
        }
        let txn = self.db.begin_write()?;
        let secret = {
            let mut table = txn.open_table(SECRETS)?;
            let existing = table
                .get(name)?
                .and_then(|b| <[u8; 32]>::try_from(b.value()).ok());
            match existing {
                Some(secret) => secret,
                None => {
                    let secret: [u8; 32] = rand::random();
                    table.insert(name, secret.as_slice())?;
                    secret
                }
            }
        };
        txn.commit()?;
        Ok(secret)
    }

    fn device_firmwares(&self) -> Result<Vec<DeviceFirmware>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(DEVICE_FIRMWARE)?.iter()? {
            let (_, bytes) = entry?;
            out.push(decode("device_firmware", bytes.value())?);
        }
        Ok(out)
    }

    fn location(&self, id: LocationId) -> Result<Option<Location>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(LOCATIONS)?, "locations", id.key())
    }

    fn location_devices(&self, id: LocationId) -> Result<Vec<DeviceId>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(DEVICE_LOCATIONS)?.iter()? {
            let (_, bytes) = entry?;
            let link: DeviceLocation = decode("device_locations", bytes.value())?;
            if link.location == id {
                out.push(link.device);
            }
        }
        Ok(out)
    }
}
