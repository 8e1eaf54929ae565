//! Records: domain values JSON-encoded under their id, read back by id or through a unique
//! index, and the byte keys indexes are built from.

use crate::kv::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

pub(super) fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| StoreError::Corrupt { table, source })
}

pub(super) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { table, source })
}

pub(super) fn get_record<T: DeserializeOwned>(
    table: &impl ReadableTable<u128, &'static [u8]>,
    name: &'static str,
    key: u128,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(bytes) => decode(name, bytes.value()).map(Some),
        None => Ok(None),
    }
}

/// The records under `keys` that exist, in the keys' order, read together (one round trip
/// on PostgreSQL instead of one per record).
pub(super) fn get_records<T: DeserializeOwned>(
    table: &impl ReadableTable<u128, &'static [u8]>,
    name: &'static str,
    keys: &[u128],
) -> Result<Vec<T>> {
    let mut records = Vec::with_capacity(keys.len());
    for bytes in table.get_many(keys)?.into_iter().flatten() {
        records.push(decode(name, bytes.value())?);
    }
    Ok(records)
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The record `key` names through a unique index (slug, username, token hash, device key), read
/// in one transaction.
pub(super) fn lookup_by<K: crate::kv::Key, T: DeserializeOwned>(
    db: &Database,
    index: TableDefinition<K, u128>,
    primary: TableDefinition<u128, &'static [u8]>,
    name: &'static str,
    key: K::SelfType<'_>,
) -> Result<Option<T>> {
    let txn = db.begin_read()?;
    let Some(id) = txn.open_table(index)?.get(key)?.map(|v| v.value()) else {
        return Ok(None);
    };
    get_record(&txn.open_table(primary)?, name, id)
}
