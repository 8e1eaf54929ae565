//! Small read caches in front of the database, kept correct by invalidation after commits.
//!
//! An epoch guards against a race: a reader takes the epoch before reading the database and
//! inserts only if no invalidation happened since, so a read that overlapped a write never
//! caches what the write replaced.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A bounded map from key to value with epoch-guarded inserts.
#[derive(Debug)]
pub struct Memo<K, V> {
    entries: RwLock<HashMap<K, V>>,
    epoch: AtomicU64,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    /// A cache of at most `capacity` entries (past it, it starts over).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            capacity,
        }
    }

    /// The cached value, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    /// The epoch to pass to [`Memo::insert`]; read it before reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches what was read, unless something was invalidated since `epoch` was taken.
    pub fn insert(&self, epoch: u64, key: K, value: V) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch() != epoch {
            return;
        }
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, value);
    }

    /// Forgets one key; call after committing a write that changed it.
    pub fn invalidate(&self, key: &K) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(key);
    }

    /// Forgets everything; call after committing a write that may have changed anything.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_overlapped_an_invalidation_is_not_cached() {
        let memo: Memo<u32, &str> = Memo::new(10);
        let epoch = memo.epoch();
        memo.invalidate(&1);
        memo.insert(epoch, 1, "stale");
        assert_eq!(memo.get(&1), None);
        let epoch = memo.epoch();
        memo.insert(epoch, 1, "fresh");
        assert_eq!(memo.get(&1), Some("fresh"));
        memo.invalidate(&1);
        assert_eq!(memo.get(&1), None);
    }
}
