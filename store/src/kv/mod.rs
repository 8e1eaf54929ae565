//! The storage engine under [`crate::records`]: ordered key-value tables read and written in
//! transactions, on an embedded redb file or on a PostgreSQL database several fleetmq nodes
//! share.
//!
//! The types mirror redb's own ([`Database`], [`ReadTransaction`], [`WriteTransaction`],
//! [`Table`], [`ReadableTable`], [`AccessGuard`], [`Range`]) and so do their semantics, on both
//! engines: one writer at a time, readers on a snapshot, a write transaction durable when
//! `commit` returns and undone when dropped without it, keys iterated in key order both ways.
//! The domain code is written once against them, so both engines keep the same rules, errors
//! and tenancy by construction.
//!
//! # Layout
//! - `keys` — [`Key`]: each key type's byte-ordered encoding (PostgreSQL compares bytes).
//! - `postgres` — the PostgreSQL engine: connection pool, transactions, range scans.
//! - `notices` — what a PostgreSQL commit tells the other nodes sharing the database, and
//!   the listener that hears theirs ([`RemoteCommit`]).

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Weak};

pub use keys::Key;
pub use notices::RemoteCommit;
pub use postgres::PostgresOptions;
pub use redb::{TableDefinition, Value};

use crate::{Result, StoreError};

mod keys;
mod notices;
mod postgres;

/// A store's tables: a redb file or a PostgreSQL database.
pub struct Database {
    engine: Arc<Engine>,
}

/// A handle on a [`Database`] that does not keep it open: for a task that must end when the
/// database's owner drops it, and reads only now and then.
#[derive(Clone)]
pub struct WeakDatabase(Weak<Engine>);

impl WeakDatabase {
    /// The database, unless it was dropped.
    pub fn upgrade(&self) -> Option<Database> {
        self.0.upgrade().map(|engine| Database { engine })
    }
}

enum Engine {
    Redb(redb::Database),
    Postgres(postgres::Pool),
}

impl Database {
    /// Tables in an open redb file.
    pub fn redb(db: redb::Database) -> Self {
        Self {
            engine: Arc::new(Engine::Redb(db)),
        }
    }

    /// Tables in the PostgreSQL database `options` names; connects once to check it answers,
    /// and starts listening for the other nodes' commits (see [`Database::remote_commits`]).
    pub fn postgres(options: &PostgresOptions) -> Result<Self> {
        Ok(Self {
            engine: Arc::new(Engine::Postgres(postgres::Pool::connect(options)?)),
        })
    }

    /// A handle that does not keep the database open.
    pub fn downgrade(&self) -> WeakDatabase {
        WeakDatabase(Arc::downgrade(&self.engine))
    }

    /// What other nodes sharing the database commit from now on, for whoever keeps state
    /// derived from the tables (caches, broadcasts of changes) and so must hear of theirs as
    /// of its own. A bounded broadcast: a subscriber that falls behind is told it lagged and
    /// must assume anything changed. `None` on redb: a redb file has one process, this one.
    pub fn remote_commits(&self) -> Option<tokio::sync::broadcast::Receiver<RemoteCommit>> {
        match &*self.engine {
            Engine::Redb(_) => None,
            Engine::Postgres(pool) => Some(pool.remote_commits()),
        }
    }

    /// This node's id in the notices its commits send (random, chosen when the database was
    /// opened); its listener connection is named `fleetmq-listener-<id>` in
    /// `pg_stat_activity`. `None` on redb.
    pub fn node(&self) -> Option<&str> {
        match &*self.engine {
            Engine::Redb(_) => None,
            Engine::Postgres(pool) => Some(pool.node()),
        }
    }

    /// A snapshot to read from; later commits do not show in it.
    pub fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(ReadTransaction(match &*self.engine {
            Engine::Redb(db) => Read::Redb(redb::ReadableDatabase::begin_read(db)?),
            Engine::Postgres(pool) => Read::Postgres(Box::new(pool.begin(postgres::Mode::Read)?)),
        }))
    }

    /// The write transaction: waits until no other writer (of any node) holds one.
    pub fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(WriteTransaction(match &*self.engine {
            Engine::Redb(db) => Write::Redb(Box::new(db.begin_write()?)),
            Engine::Postgres(pool) => Write::Postgres(Box::new(pool.begin(postgres::Mode::Write)?)),
        }))
    }

    /// How much of the data the engine keeps in memory: redb's page cache; PostgreSQL's lives
    /// in its own server.
    pub fn cache_use(&self) -> crate::CacheUse {
        match &*self.engine {
            Engine::Redb(db) => {
                let stats = redb::ReadableDatabase::cache_stats(db);
                crate::CacheUse {
                    bytes: u64::try_from(stats.used_bytes()).unwrap_or(u64::MAX),
                    evictions: stats.evictions(),
                }
            }
            Engine::Postgres(_) => crate::CacheUse::default(),
        }
    }
}

/// A read-only snapshot.
pub struct ReadTransaction(Read);

enum Read {
    Redb(redb::ReadTransaction),
    Postgres(Box<postgres::Txn>),
}

impl ReadTransaction {
    /// A table of the snapshot.
    pub fn open_table<K: Key, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<'_, K, V>> {
        Ok(ReadOnlyTable(match &self.0 {
            Read::Redb(txn) => Engined::Redb(txn.open_table(definition)?),
            Read::Postgres(txn) => {
                Engined::Postgres(txn.table(redb::TableHandle::name(&definition)))
            }
        }))
    }
}

/// The one write transaction: changes are seen by it at once and by others after `commit`.
pub struct WriteTransaction(Write);

enum Write {
    Redb(Box<redb::WriteTransaction>),
    Postgres(Box<postgres::Txn>),
}

impl WriteTransaction {
    /// A table to read and change, created empty if it does not exist yet.
    pub fn open_table<K: Key, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>> {
        Ok(Table(match &self.0 {
            Write::Redb(txn) => Engined::Redb(txn.open_table(definition)?),
            Write::Postgres(txn) => {
                Engined::Postgres(txn.create_table(redb::TableHandle::name(&definition))?)
            }
        }))
    }

    /// Queues an announcement, opaque here, to reach the other nodes sharing the database
    /// with this transaction's commit ([`RemoteCommit::Commit`]), so that what they hear is
    /// exactly what was committed: nothing if it rolls back. Nothing is sent on redb, which
    /// has no other nodes.
    pub fn announce(&self, announcement: String) {
        match &self.0 {
            Write::Redb(_) => {}
            Write::Postgres(txn) => txn.announce(announcement),
        }
    }

    /// Makes the changes durable and visible; dropping the transaction instead undoes them.
    /// On PostgreSQL the other nodes are told which tables it changed, with its
    /// announcements, atomically with the commit.
    pub fn commit(self) -> Result<()> {
        match self.0 {
            Write::Redb(txn) => txn.commit()?,
            Write::Postgres(txn) => txn.commit()?,
        }
        Ok(())
    }
}

/// A table's engine-specific handle; `R` is redb's.
enum Engined<'t, R> {
    Redb(R),
    Postgres(postgres::TableRef<'t>),
}

/// A table inside a [`WriteTransaction`].
pub struct Table<'t, K: Key, V: Value + 'static>(Engined<'t, redb::Table<'t, K, V>>);

/// A table inside a [`ReadTransaction`].
pub struct ReadOnlyTable<'t, K: Key, V: Value + 'static>(Engined<'t, redb::ReadOnlyTable<K, V>>);

/// A stored key or value, read with [`AccessGuard::value`].
pub struct AccessGuard<'a, V: Value + 'static>(Guarded<'a, V>);

enum Guarded<'a, V: Value + 'static> {
    Redb(redb::AccessGuard<'a, V>),
    /// redb's encoding of the key or value, read from another engine.
    Owned(Vec<u8>, PhantomData<V>),
}

impl<V: Value + 'static> AccessGuard<'_, V> {
    /// The key or value.
    pub fn value(&self) -> V::SelfType<'_> {
        match &self.0 {
            Guarded::Redb(guard) => guard.value(),
            Guarded::Owned(bytes, _) => V::from_bytes(bytes),
        }
    }

    fn owned(bytes: Vec<u8>) -> Self {
        Self(Guarded::Owned(bytes, PhantomData))
    }
}

type Entry<'a, K, V> = (AccessGuard<'a, K>, AccessGuard<'a, V>);

/// Entries of a key range in key order, from either end.
pub struct Range<'a, K: Key, V: Value + 'static>(Ranged<'a, K, V>);

enum Ranged<'a, K: Key, V: Value + 'static> {
    Redb(redb::Range<'a, K, V>),
    Postgres {
        scan: postgres::Scan<'a>,
        table: String,
        _types: PhantomData<(K, V)>,
    },
}

impl<'a, K: Key, V: Value + 'static> Range<'a, K, V> {
    fn postgres(scan: postgres::Scan<'a>, table: &str) -> Self {
        Self(Ranged::Postgres {
            scan,
            table: table.to_owned(),
            _types: PhantomData,
        })
    }
}

/// An entry as PostgreSQL returned it (byte-ordered key), as redb would have.
fn entry<'a, K: Key, V: Value + 'static>(
    table: &str,
    row: Result<(Vec<u8>, Vec<u8>)>,
) -> Result<Entry<'a, K, V>> {
    let (key, value) = row?;
    let key = K::from_ordered(&key).ok_or_else(|| StoreError::CorruptKey {
        table: table.to_owned(),
    })?;
    Ok((AccessGuard::owned(key), AccessGuard::owned(value)))
}

impl<'a, K: Key, V: Value + 'static> Iterator for Range<'a, K, V> {
    type Item = Result<Entry<'a, K, V>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Ranged::Redb(range) => range.next().map(|e| {
                e.map(|(k, v)| (AccessGuard(Guarded::Redb(k)), AccessGuard(Guarded::Redb(v))))
                    .map_err(StoreError::from)
            }),
            Ranged::Postgres { scan, table, .. } => scan.next().map(|row| entry(table, row)),
        }
    }
}

impl<K: Key, V: Value + 'static> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Ranged::Redb(range) => range.next_back().map(|e| {
                e.map(|(k, v)| (AccessGuard(Guarded::Redb(k)), AccessGuard(Guarded::Redb(v))))
                    .map_err(StoreError::from)
            }),
            Ranged::Postgres { scan, table, .. } => scan.next_back().map(|row| entry(table, row)),
        }
    }
}

/// Reading a table, in either kind of transaction.
pub trait ReadableTable<K: Key, V: Value + 'static> {
    /// The value under `key`.
    fn get<'a>(&self, key: impl Borrow<K::SelfType<'a>>) -> Result<Option<AccessGuard<'_, V>>>;
    /// The values under `keys`, in their order; one round trip on PostgreSQL.
    fn get_many<'a>(&self, keys: &[K::SelfType<'a>]) -> Result<Vec<Option<AccessGuard<'_, V>>>>;
    /// Entries whose keys fall in `range`, in key order.
    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>>
    where
        KR: Borrow<K::SelfType<'a>> + 'a;
    /// Every entry, in key order.
    fn iter(&self) -> Result<Range<'_, K, V>> {
        self.range::<K::SelfType<'_>>(..)
    }
    /// The entry with the smallest key.
    fn first(&self) -> Result<Option<Entry<'_, K, V>>>;
    /// The entry with the largest key.
    fn last(&self) -> Result<Option<Entry<'_, K, V>>>;
    /// How many entries the table holds.
    fn len(&self) -> Result<u64>;
    /// Whether the table holds no entry.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.first()?.is_none())
    }
}

/// The byte-ordered bounds of a typed key range.
fn ordered_bounds<'a, K: Key, KR: Borrow<K::SelfType<'a>> + 'a>(
    range: &impl RangeBounds<KR>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let bound = |b: Bound<&KR>| match b {
        Bound::Included(k) => Bound::Included(K::ordered(k.borrow())),
        Bound::Excluded(k) => Bound::Excluded(K::ordered(k.borrow())),
        Bound::Unbounded => Bound::Unbounded,
    };
    (bound(range.start_bound()), bound(range.end_bound()))
}

macro_rules! readable {
    ($table:ident) => {
        impl<K: Key, V: Value + 'static> ReadableTable<K, V> for $table<'_, K, V> {
            fn get<'a>(
                &self,
                key: impl Borrow<K::SelfType<'a>>,
            ) -> Result<Option<AccessGuard<'_, V>>> {
                match &self.0 {
                    Engined::Redb(t) => Ok(
                        redb::ReadableTable::get(t, key)?.map(|g| AccessGuard(Guarded::Redb(g)))
                    ),
                    Engined::Postgres(t) => {
                        Ok(t.get(&K::ordered(key.borrow()))?.map(AccessGuard::owned))
                    }
                }
            }

            fn get_many<'a>(
                &self,
                keys: &[K::SelfType<'a>],
            ) -> Result<Vec<Option<AccessGuard<'_, V>>>> {
                match &self.0 {
                    Engined::Redb(t) => keys
                        .iter()
                        .map(|key| {
                            Ok(redb::ReadableTable::get(t, key)?
                                .map(|g| AccessGuard(Guarded::Redb(g))))
                        })
                        .collect(),
                    Engined::Postgres(t) => {
                        let ordered: Vec<Vec<u8>> = keys.iter().map(|k| K::ordered(k)).collect();
                        Ok(t.get_many(&ordered)?
                            .into_iter()
                            .map(|v| v.map(AccessGuard::owned))
                            .collect())
                    }
                }
            }

            fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>>
            where
                KR: Borrow<K::SelfType<'a>> + 'a,
            {
                match &self.0 {
                    Engined::Redb(t) => {
                        Ok(Range(Ranged::Redb(redb::ReadableTable::range(t, range)?)))
                    }
                    Engined::Postgres(t) => {
                        let (lo, hi) = ordered_bounds::<K, KR>(&range);
                        Ok(Range::postgres(t.scan(lo, hi), t.name()))
                    }
                }
            }

            fn first(&self) -> Result<Option<Entry<'_, K, V>>> {
                match &self.0 {
                    Engined::Redb(t) => Ok(redb::ReadableTable::first(t)?.map(|(k, v)| {
                        (AccessGuard(Guarded::Redb(k)), AccessGuard(Guarded::Redb(v)))
                    })),
                    Engined::Postgres(_) => self.iter()?.next().transpose(),
                }
            }

            fn last(&self) -> Result<Option<Entry<'_, K, V>>> {
                match &self.0 {
                    Engined::Redb(t) => Ok(redb::ReadableTable::last(t)?.map(|(k, v)| {
                        (AccessGuard(Guarded::Redb(k)), AccessGuard(Guarded::Redb(v)))
                    })),
                    Engined::Postgres(_) => self.iter()?.next_back().transpose(),
                }
            }

            fn len(&self) -> Result<u64> {
                match &self.0 {
                    Engined::Redb(t) => Ok(redb::ReadableTableMetadata::len(t)?),
                    Engined::Postgres(t) => t.len(),
                }
            }
        }
    };
}

readable!(Table);
readable!(ReadOnlyTable);

impl<K: Key, V: Value + 'static> Table<'_, K, V> {
    /// Stores `value` under `key`, replacing what was there. (redb's also returns the value
    /// replaced; this one does not, so a PostgreSQL transaction can send its writes together.)
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<()> {
        match &mut self.0 {
            Engined::Redb(t) => {
                t.insert(key, value)?;
                Ok(())
            }
            Engined::Postgres(t) => t.insert(
                &K::ordered(key.borrow()),
                V::as_bytes(value.borrow()).as_ref(),
            ),
        }
    }

    /// Removes the entry under `key`, if there is one. (redb's also returns the value
    /// removed; this one does not, for the reason [`Table::insert`] gives.)
    pub fn remove<'a>(&mut self, key: impl Borrow<K::SelfType<'a>>) -> Result<()> {
        match &mut self.0 {
            Engined::Redb(t) => {
                t.remove(key)?;
                Ok(())
            }
            Engined::Postgres(t) => t.remove(&K::ordered(key.borrow())),
        }
    }

    /// Removes the entry under `key` and returns its value, if there was one.
    pub fn take<'a>(
        &mut self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>> {
        match &mut self.0 {
            Engined::Redb(t) => Ok(t.remove(key)?.map(|g| AccessGuard(Guarded::Redb(g)))),
            Engined::Postgres(t) => {
                let key = K::ordered(key.borrow());
                let value = t.get(&key)?;
                if value.is_some() {
                    t.remove(&key)?;
                }
                Ok(value.map(AccessGuard::owned))
            }
        }
    }

    /// Removes every entry for which `keep` answers false.
    pub fn retain<F>(&mut self, keep: F) -> Result<()>
    where
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        self.retain_in::<K::SelfType<'_>, F>(.., keep)
    }

    /// Removes every entry of `range` for which `keep` answers false.
    pub fn retain_in<'a, KR, F>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: F,
    ) -> Result<()>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        match &mut self.0 {
            Engined::Redb(t) => Ok(t.retain_in(range, keep)?),
            Engined::Postgres(t) => {
                let (lo, hi) = ordered_bounds::<K, KR>(&range);
                let mut doomed = Vec::new();
                for row in t.scan(lo, hi) {
                    let (ordered, value) = row?;
                    let key = K::from_ordered(&ordered).ok_or_else(|| StoreError::CorruptKey {
                        table: t.name().to_owned(),
                    })?;
                    if !keep(K::from_bytes(&key), V::from_bytes(&value)) {
                        doomed.push(ordered);
                    }
                }
                t.remove_all(&doomed)
            }
        }
    }
}
