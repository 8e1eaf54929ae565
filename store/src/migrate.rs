//! Copying a whole store from one engine to another (`fleetmq store migrate`): every table,
//! entry by entry, into an empty target in one transaction, then verified by comparing each
//! table's entry count and SHA-256 on both sides.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::kv::{
    Database, Key, ReadTransaction, ReadableTable, TableDefinition, Value, WriteTransaction,
};
use crate::kv_backend::DATA_FILE;
use crate::tables::{EveryTable, every_table};
use crate::{KvBackend, PostgresOptions, Result, StoreError, StoreOptions};

/// Where a store's tables are.
#[derive(Debug, Clone)]
pub enum Location {
    /// The redb file in this data directory.
    Redb(PathBuf),
    /// This PostgreSQL database.
    Postgres(PostgresOptions),
}

impl Location {
    /// `redb:DIR` or `postgres://…` (`postgresql://…`).
    pub fn parse(text: &str) -> Option<Location> {
        if let Some(dir) = text.strip_prefix("redb:") {
            return (!dir.is_empty()).then(|| Location::Redb(PathBuf::from(dir)));
        }
        (text.starts_with("postgres://") || text.starts_with("postgresql://"))
            .then(|| Location::Postgres(PostgresOptions::new(text)))
    }

    /// Opens the store there as a backend once, which creates missing tables and brings an
    /// older schema up to this build's (and refuses a newer one).
    fn prepare(&self) -> Result<()> {
        // The sealing secret is not used to open a store; a placeholder keeps the data
        // directory free of a generated one.
        let options = StoreOptions {
            pki_secret: Some(vec![0; 32]),
            ..StoreOptions::default()
        };
        let scratch = std::env::temp_dir();
        match self {
            Location::Redb(dir) => KvBackend::open_with(dir, &options).map(drop),
            Location::Postgres(postgres) => {
                KvBackend::connect(postgres, &scratch, &options).map(drop)
            }
        }
    }

    fn open(&self) -> Result<Database> {
        match self {
            Location::Redb(dir) => Ok(Database::redb(redb::Database::open(dir.join(DATA_FILE))?)),
            Location::Postgres(postgres) => Database::postgres(postgres),
        }
    }
}

/// One table as copied: its name, entries and the SHA-256 of its entries in key order (the
/// same on both sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    /// The table's name.
    pub name: String,
    /// Its entries.
    pub entries: u64,
    /// SHA-256 over each entry's byte-ordered key and value, length-prefixed, in key order.
    pub sha256: [u8; 32],
}

impl TableCopy {
    /// The checksum in hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Copies every table of `from` into `to`, which must hold no data yet, and verifies the
/// copy. Neither store may be in use by a server meanwhile (a redb file refuses a second
/// process; a PostgreSQL database does not, so stop its nodes first).
pub fn migrate(from: &Location, to: &Location) -> Result<Vec<TableCopy>> {
    from.prepare()?;
    to.prepare()?;
    let (source, target) = (from.open()?, to.open()?);
    {
        let read = source.begin_read()?;
        let write = target.begin_write()?;
        every_table(&mut CopyInto {
            from: &read,
            to: &write,
        })?;
        write.commit()?;
    }
    let mut copied = Summary {
        txn: &source.begin_read()?,
        tables: Vec::new(),
    };
    every_table(&mut copied)?;
    let mut landed = Summary {
        txn: &target.begin_read()?,
        tables: Vec::new(),
    };
    every_table(&mut landed)?;
    for (a, b) in copied.tables.iter().zip(&landed.tables) {
        if a != b {
            return Err(StoreError::CopyDiffers {
                table: a.name.clone(),
            });
        }
    }
    Ok(copied.tables)
}

struct CopyInto<'a> {
    from: &'a ReadTransaction,
    to: &'a WriteTransaction,
}

impl EveryTable for CopyInto<'_> {
    fn table<K: Key, V: Value + 'static>(
        &mut self,
        definition: TableDefinition<K, V>,
    ) -> Result<()> {
        let mut to = self.to.open_table(definition)?;
        let name = redb::TableHandle::name(&definition);
        // The target's schema version is what `prepare` wrote; anything else means data.
        let data = if name == "meta" { 1 } else { 0 };
        if to.len()? > data {
            return Err(StoreError::TargetNotEmpty {
                table: name.to_owned(),
            });
        }
        for entry in self.from.open_table(definition)?.iter()? {
            let (key, value) = entry?;
            to.insert(key.value(), value.value())?;
        }
        Ok(())
    }
}

struct Summary<'a> {
    txn: &'a ReadTransaction,
    tables: Vec<TableCopy>,
}

impl EveryTable for Summary<'_> {
    fn table<K: Key, V: Value + 'static>(
        &mut self,
        definition: TableDefinition<K, V>,
    ) -> Result<()> {
        let mut hash = Sha256::new();
        let mut entries = 0;
        for entry in self.txn.open_table(definition)?.iter()? {
            let (key, value) = entry?;
            let key = K::ordered(&key.value());
            let value = V::as_bytes(&value.value()).as_ref().to_vec();
            for part in [&key, &value] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
            entries += 1;
        }
        self.tables.push(TableCopy {
            name: redb::TableHandle::name(&definition).to_owned(),
            entries,
            sha256: hash.finalize().into(),
        });
        Ok(())
    }
}
