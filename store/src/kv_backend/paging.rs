//! Index keys and newest-first pages: every list walks a `created ‖ id` index (under an optional
//! prefix) from its end, merging streams when a scope spans several prefixes.

use std::collections::BTreeSet;

use crate::kv::ReadableTable;
use serde::de::DeserializeOwned;

use crate::{OrgId, Page, PageRequest, Result, Scope, Timestamp};

use super::record::{cat, get_records};

/// `created ‖ id`: 8 bytes of sort key then 16 of id, so byte order is age order.
pub(super) type IndexKey = [u8; 24];

/// Positions between anchors: a deep page walks at most this many index keys before its first.
pub(super) const ANCHOR_STRIDE: u64 = 500;

/// Anchors of one index and the generation they were built at.
type BuiltAnchors = (u64, Vec<IndexKey>);

/// Every [`ANCHOR_STRIDE`]-th key (newest first) of an unfiltered device index — all devices,
/// or one organization's — so page N starts next to its first key instead of walking from the
/// newest device. Rebuilt (one index walk) on the first deep read after any device write.
#[derive(Default)]
pub(super) struct PageAnchors {
    generation: std::sync::atomic::AtomicU64,
    built: std::sync::Mutex<std::collections::HashMap<Option<OrgId>, BuiltAnchors>>,
}

impl PageAnchors {
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Call after committing a write that adds, removes or moves devices.
    pub(super) fn invalidate(&self) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        built.clear();
    }

    /// The anchor at or before `offset`: its key and how far `offset` lies past it.
    /// `generation` must be read before the read transaction `index` belongs to began.
    pub(super) fn seek(
        &self,
        generation: u64,
        scope: Option<OrgId>,
        index: &impl ReadableTable<&'static [u8], ()>,
        prefix: &[u8],
        offset: u64,
    ) -> Result<Option<(IndexKey, u64)>> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let keys = match built.get(&scope) {
            Some((g, keys)) if *g == generation => keys.clone(),
            _ => {
                let mut keys = Vec::new();
                for (i, key) in index_desc(index, prefix, [0; 24], [0xff; 24])?.enumerate() {
                    let key = key?;
                    if (i as u64).is_multiple_of(ANCHOR_STRIDE) {
                        keys.push(key);
                    }
                }
                if self.generation() == generation {
                    built.insert(scope, (generation, keys.clone()));
                }
                keys
            }
        };
        let slot = (offset / ANCHOR_STRIDE) as usize;
        Ok(keys.get(slot).map(|key| (*key, offset % ANCHOR_STRIDE)))
    }
}

/// The smallest key after `key` (keys are fixed-length big-endian).
pub(super) fn successor(mut key: IndexKey) -> IndexKey {
    for byte in key.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return key;
        }
    }
    [0xff; 24]
}

pub(super) fn created_key(created: Timestamp, id: [u8; 16]) -> IndexKey {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&created.sort_key());
    key[8..].copy_from_slice(&id);
    key
}

/// Keys of `index` under `prefix` whose last 24 bytes (created ‖ id) fall in `[lo, hi)`,
/// newest first.
pub(super) fn index_desc<'a>(
    index: &'a impl ReadableTable<&'static [u8], ()>,
    prefix: &[u8],
    lo: IndexKey,
    hi: IndexKey,
) -> Result<Box<dyn Iterator<Item = Result<IndexKey>> + 'a>> {
    let start = cat(&[prefix, &lo]);
    let end = cat(&[prefix, &hi]);
    let prefix_len = prefix.len();
    let range = index.range::<&[u8]>(start.as_slice()..end.as_slice())?;
    Ok(Box::new(range.rev().map(move |entry| {
        let (key, _) = entry?;
        let mut out = [0u8; 24];
        out.copy_from_slice(&key.value()[prefix_len..prefix_len + 24]);
        Ok(out)
    })))
}

/// Ids of every key under `prefix` in a `prefix ‖ created ‖ id` index, newest first.
pub(super) fn ids_under(
    table: &impl ReadableTable<&'static [u8], ()>,
    prefix: &[u8],
) -> Result<Vec<u128>> {
    index_desc(table, prefix, [0; 24], [0xff; 24])?
        .map(|k| k.map(|k| id_of(&k)))
        .collect()
}

/// Ids stored after `owner` in an `owner ‖ id` set table (an organization's members, the
/// connections using some credentials), in id order.
pub(super) fn ids_paired_with(
    table: &impl ReadableTable<&'static [u8], ()>,
    owner: &[u8; 16],
) -> Result<Vec<u128>> {
    let lo = cat(&[owner, &[0u8; 16]]);
    let hi = cat(&[owner, &[0xffu8; 16]]);
    let mut ids = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        ids.push(uuid_of(&key.value()[16..]));
    }
    Ok(ids)
}

/// One page of items already in list order, and how many there are.
pub(super) fn paged<T>(items: Vec<T>, page: PageRequest) -> Page<T> {
    Page {
        count: items.len() as u64,
        items: slice(items, page),
    }
}

/// The records behind `ids` (newest first) for one page, and how many there are.
pub(super) fn page_of<T: DeserializeOwned>(
    table: &impl ReadableTable<u128, &'static [u8]>,
    name: &'static str,
    ids: Vec<u128>,
    page: PageRequest,
) -> Result<Page<T>> {
    let count = ids.len() as u64;
    let items = get_records(table, name, &slice(ids, page))?;
    Ok(Page { count, items })
}

/// One page of the records a whole `created ‖ id` index points at, newest first: the count is
/// the index's length and only the page's records are read.
pub(super) fn page_index<T: DeserializeOwned>(
    index: &impl ReadableTable<&'static [u8], ()>,
    table: &impl ReadableTable<u128, &'static [u8]>,
    name: &'static str,
    page: PageRequest,
) -> Result<Page<T>> {
    let count = index.len()?;
    let ids = index_desc(index, &[], [0; 24], [0xff; 24])?
        .skip(page.offset as usize)
        .take(page.limit as usize)
        .map(|key| key.map(|k| id_of(&k)))
        .collect::<Result<Vec<_>>>()?;
    let items = get_records(table, name, &ids)?;
    Ok(Page { count, items })
}

/// Keys of an `org prefix ‖ created ‖ id` index of objects an organization owns or all share
/// (see [`org_prefix`]) that `scope` sees: its organizations' and the shared ones, newest first.
pub(super) fn visible_keys(
    index: &impl ReadableTable<&'static [u8], ()>,
    scope: &Scope,
) -> Result<Vec<IndexKey>> {
    let mut keys = Vec::new();
    match scope {
        Scope::All => {
            for entry in index.iter()? {
                let (key, _) = entry?;
                let mut k = [0u8; 24];
                k.copy_from_slice(&key.value()[16..40]);
                keys.push(k);
            }
        }
        Scope::Orgs(orgs) => {
            let mut prefixes: BTreeSet<[u8; 16]> = orgs.iter().map(|o| o.bytes()).collect();
            prefixes.insert(SHARED);
            for prefix in prefixes {
                for key in index_desc(index, &prefix, [0; 24], [0xff; 24])? {
                    keys.push(key?);
                }
            }
        }
    }
    keys.sort_by(|a, b| b.cmp(a));
    Ok(keys)
}

/// Merges several newest-first index streams into one.
pub(super) struct MergeDesc<'a> {
    pub(super) streams: Vec<std::iter::Peekable<Box<dyn Iterator<Item = Result<IndexKey>> + 'a>>>,
}

impl Iterator for MergeDesc<'_> {
    type Item = Result<IndexKey>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, IndexKey)> = None;
        for (i, stream) in self.streams.iter_mut().enumerate() {
            match stream.peek() {
                Some(Err(_)) => return stream.next(),
                Some(Ok(key)) if best.is_none_or(|(_, b)| *key > b) => best = Some((i, *key)),
                _ => {}
            }
        }
        let (i, _) = best?;
        self.streams[i].next()
    }
}

/// Index prefix of objects shared by every organization (no organization of their own).
const SHARED: [u8; 16] = [0; 16];

/// Index prefix of an object that may belong to an organization or be shared.
pub(super) fn org_prefix(org: Option<OrgId>) -> [u8; 16] {
    org.map_or(SHARED, |o| o.bytes())
}

pub(super) fn id_of(key: &IndexKey) -> u128 {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[8..]);
    u128::from_be_bytes(id)
}

fn uuid_of(bytes: &[u8]) -> u128 {
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    u128::from_be_bytes(id)
}

fn slice<T>(items: Vec<T>, page: PageRequest) -> Vec<T> {
    items
        .into_iter()
        .skip(page.offset as usize)
        .take(page.limit as usize)
        .collect()
}
