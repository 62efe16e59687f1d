//! What each change of the replica touched, and waiting until something a reader depends on
//! changes.
//!
//! Every change the replica applies (a pushed commit, a subscription's initial data, objects
//! dropped by an unsubscription, a flush moving the tid) is published on one bounded broadcast
//! channel as a [`Change`]: the conflict keys it changed (fields written or deleted, index values
//! gained or lost) and, for pushed commits, the [`AppliedCommit`] users see through
//! `Client::commits`. Keys are only computed while somebody listens.
//!
//! Readers that want to wake only when their inputs change (`Client::wait_for`, reactors) run on
//! a snapshot while recording a [`ReadSet`], then wait for a change newer than that snapshot
//! whose keys intersect it.

use crate::replica::SnapshotAt;
use bytes::Bytes;
use odb_wire::hash::{FastHasher, FastSet};
use odb_wire::{FieldId, IndexId, Key, ObjectId, Tid};
use std::hash::Hasher;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many changes the broadcast channel buffers for a listener that is behind.
pub(crate) const CHANGE_BUFFER: usize = 4096;

/// One commit applied to this client's replica, as delivered by [`crate::Client::commits`].
///
/// Only what this client can see is listed: the server sends each client the part of a commit
/// that concerns its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedCommit {
    /// The commit's tid.
    pub tid: Tid,
    /// Objects the commit created or wrote (not deleted), ascending id.
    pub changed: Vec<ObjectId>,
    /// Objects the commit deleted, ascending id.
    pub deleted: Vec<ObjectId>,
}

/// One change of the replica, as published to listeners.
#[derive(Debug)]
pub(crate) struct Change {
    /// The local version the change created (the current version for changes without data).
    pub version: crate::replica::Version,
    /// The replica's tid after the change.
    pub tid: Tid,
    /// The keys whose value changed.
    pub keys: ChangedKeys,
    /// The commit, when the change is a commit pushed by the server.
    pub commit: Option<AppliedCommit>,
    /// The connection closed: every listener should look at the client's state again.
    pub closed: bool,
    /// The server's database was replaced (an in-memory server restarted): everything may
    /// have changed, and every listener evaluates again.
    pub replaced: bool,
}

/// The keys one change of the replica changed.
///
/// Field keys are collected in a vector and sorted once ([`ChangedKeys::seal`]): a commit's
/// writes arrive grouped by object, so that is much cheaper than hashing each of them. Index
/// values are kept as the hashes of their keys ([`index_hash`]), unsorted: a bulk commit
/// changes hundreds of thousands of them, and filing each in a hash set (or sorting them) cost
/// a tenth of applying the commit, while a listener usually reads only a few index values;
/// each of its checks looks the change's hashes up among its own, sorted ones. Two keys with
/// the same hash count as one: a listener of either may wake for a change to the other, which
/// costs it one more evaluation and nothing else.
#[derive(Debug, Default)]
pub(crate) struct ChangedKeys {
    /// Fields written or deleted; sorted and without duplicates once sealed.
    fields: Vec<(ObjectId, FieldId)>,
    /// Indices whose empty value was gained or lost (every change to an all-objects index),
    /// without duplicates: few, and kept apart from the hashes.
    empty_indices: Vec<IndexId>,
    /// Other index values gained or lost, as [`index_hash`]es, in the order recorded.
    indices: Vec<u64>,
}

/// The hash that stands for the key of index value `value` of `index` in change checks.
pub(crate) fn index_hash(index: IndexId, value: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write_u32(index.0);
    hasher.write_usize(value.len());
    hasher.write(value);
    hasher.finish()
}

/// Sorts `items` and drops repeats.
fn sort_dedup<T: Ord>(items: &mut Vec<T>) {
    if !items.is_sorted() {
        items.sort_unstable();
    }
    items.dedup();
}

impl ChangedKeys {
    /// Makes room for `fields` field keys and `indices` index keys.
    pub fn reserve(&mut self, fields: usize, indices: usize) {
        self.fields.reserve(fields);
        self.indices.reserve(indices);
    }

    /// Records a changed field.
    pub fn field(&mut self, object: ObjectId, field: FieldId) {
        self.fields.push((object, field));
    }

    /// Records a changed index value.
    pub fn index(&mut self, index: IndexId, value: &[u8]) {
        if !value.is_empty() {
            self.indices.push(index_hash(index, value));
        } else if self.empty_indices.last() != Some(&index) && !self.empty_indices.contains(&index)
        {
            self.empty_indices.push(index);
        }
    }

    /// Sorts the field keys; call once every key is recorded.
    pub fn seal(&mut self) {
        sort_dedup(&mut self.fields);
    }

    /// Number of keys (after [`ChangedKeys::seal`]; keys sharing a hash count once).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let mut indices = self.indices.clone();
        sort_dedup(&mut indices);
        self.fields.len() + self.empty_indices.len() + indices.len()
    }

    /// Whether `key` is one of them, or shares its hash with one (after
    /// [`ChangedKeys::seal`]).
    #[cfg(test)]
    pub fn contains(&self, key: &Key) -> bool {
        match key {
            Key::Field(object, field) => self.fields.binary_search(&(*object, *field)).is_ok(),
            Key::Index(index, value) if value.is_empty() => self.empty_indices.contains(index),
            Key::Index(index, value) => self.indices.contains(&index_hash(*index, value)),
        }
    }

    /// Whether any of them is among `reads` (after [`ChangedKeys::seal`]). Field keys are
    /// looked up from whichever side has fewer keys; index values by hash, each of the
    /// change's among the reader's sorted ones (none when the reader read no index value).
    fn touches(&self, reads: &ReadSet) -> bool {
        let fields = if reads.keys.len() <= self.fields.len() {
            reads.keys.iter().any(|key| match key {
                Key::Field(object, field) => self.fields.binary_search(&(*object, *field)).is_ok(),
                Key::Index(..) => false,
            })
        } else {
            self.fields
                .iter()
                .any(|&(object, field)| reads.keys.contains(&Key::Field(object, field)))
        };
        fields
            || self
                .empty_indices
                .iter()
                .any(|&index| reads.keys.contains(&Key::Index(index, Bytes::new())))
            || (!reads.index_hashes.is_empty()
                && self
                    .indices
                    .iter()
                    .any(|h| reads.index_hashes.binary_search(h).is_ok()))
    }
}

/// The keys a reader depended on.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReadSet {
    /// Every key read.
    pub keys: FastSet<Key>,
    /// The [`index_hash`]es of the non-empty index values among `keys`, sorted.
    index_hashes: Vec<u64>,
    /// The reader looked at the snapshot's tid, which every change can move.
    pub tid: bool,
}

impl ReadSet {
    /// The read set of `keys`; `tid`: the reader looked at the snapshot's tid.
    pub fn new(keys: FastSet<Key>, tid: bool) -> ReadSet {
        let mut index_hashes: Vec<u64> = keys
            .iter()
            .filter_map(|key| match key {
                Key::Index(index, value) if !value.is_empty() => Some(index_hash(*index, value)),
                _ => None,
            })
            .collect();
        sort_dedup(&mut index_hashes);
        ReadSet {
            keys,
            index_hashes,
            tid,
        }
    }

    /// Whether `change`, applied after the snapshot `at` this set was read from, may change
    /// what the reader saw.
    pub fn affected_by(&self, change: &Change, at: SnapshotAt) -> bool {
        if change.closed || change.replaced {
            return true;
        }
        if self.tid && (change.tid > at.tid || change.version > at.version) {
            return true;
        }
        if change.version <= at.version {
            return false;
        }
        change.keys.touches(self)
    }
}

/// Why [`wait_for_change`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Something the reader depended on may have changed: evaluate again.
    Changed,
    /// The deadline passed.
    TimedOut,
    /// The client is gone.
    Closed,
}

/// Waits until a change received on `changes` affects `reads` (read at `at`), the deadline
/// passes, or the channel closes. A listener that fell behind and missed changes is told that
/// something changed. `skipped` is called with the tid of every change that did not matter.
pub(crate) async fn wait_for_change(
    changes: &mut broadcast::Receiver<Arc<Change>>,
    reads: &ReadSet,
    at: SnapshotAt,
    deadline: Option<tokio::time::Instant>,
    mut skipped: impl FnMut(Tid),
) -> Woken {
    loop {
        let received = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(received) => received,
                Err(_) => return Woken::TimedOut,
            },
            None => changes.recv().await,
        };
        match received {
            Ok(change) if reads.affected_by(&change, at) => return Woken::Changed,
            Ok(change) => skipped(change.tid),
            Err(broadcast::error::RecvError::Lagged(_)) => return Woken::Changed,
            Err(broadcast::error::RecvError::Closed) => return Woken::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Version;
    use odb_wire::FieldId;

    fn change(version: u64, tid: u64, keys: &[Key]) -> Change {
        let mut changed = ChangedKeys::default();
        for key in keys {
            match key {
                Key::Field(object, field) => changed.field(*object, *field),
                Key::Index(index, value) => changed.index(*index, value),
            }
        }
        changed.seal();
        Change {
            version: Version::test(version),
            tid: Tid(tid),
            keys: changed,
            commit: None,
            closed: false,
            replaced: false,
        }
    }

    #[test]
    fn only_newer_changes_to_read_keys_matter() {
        let read = Key::Field(ObjectId(1), FieldId(2));
        let other = Key::Field(ObjectId(1), FieldId(3));
        let reads = ReadSet::new([read.clone()].into_iter().collect(), false);
        let at = SnapshotAt {
            version: Version::test(5),
            tid: Tid(9),
        };
        assert!(reads.affected_by(&change(6, 10, std::slice::from_ref(&read)), at));
        assert!(!reads.affected_by(&change(6, 10, &[other]), at));
        // Already part of the snapshot the reader saw.
        assert!(!reads.affected_by(&change(5, 9, &[read]), at));
        let tid_reader = ReadSet::new(FastSet::default(), true);
        assert!(tid_reader.affected_by(&change(5, 10, &[]), at));
    }

    #[test]
    fn changed_keys_find_fields_and_empty_and_other_index_values() {
        let mut keys = ChangedKeys::default();
        keys.field(ObjectId(2), FieldId(1));
        keys.field(ObjectId(1), FieldId(1));
        keys.index(IndexId(3), &[]);
        keys.index(IndexId(3), &[]);
        keys.index(IndexId(4), b"v");
        keys.index(IndexId(4), b"v");
        keys.seal();
        assert_eq!(keys.len(), 4);
        assert!(keys.contains(&Key::Field(ObjectId(1), FieldId(1))));
        assert!(!keys.contains(&Key::Field(ObjectId(1), FieldId(2))));
        assert!(keys.contains(&Key::Index(IndexId(3), Bytes::new())));
        assert!(!keys.contains(&Key::Index(IndexId(4), Bytes::new())));
        assert!(keys.contains(&Key::Index(IndexId(4), Bytes::from_static(b"v"))));
        let reads = |keys: &[Key]| ReadSet::new(keys.iter().cloned().collect(), false);
        assert!(keys.touches(&reads(&[Key::Index(IndexId(3), Bytes::new())])));
        assert!(!keys.touches(&reads(&[Key::Index(IndexId(4), Bytes::new())])));
        assert!(keys.touches(&reads(&[Key::Index(IndexId(4), Bytes::from_static(b"v"))])));
        assert!(!keys.touches(&reads(&[Key::Index(IndexId(4), Bytes::from_static(b"w"))])));
        assert!(!keys.touches(&reads(&[Key::Index(IndexId(5), Bytes::from_static(b"v"))])));
        // Many reads against few changed keys, and the other way round.
        let many: Vec<Key> = (0..100)
            .map(|i| Key::Index(IndexId(4), Bytes::from(format!("x{i}"))))
            .chain((10..100).map(|o| Key::Field(ObjectId(o), FieldId(1))))
            .collect();
        assert!(!keys.touches(&reads(&many)));
        let mut with = many.clone();
        with.push(Key::Field(ObjectId(2), FieldId(1)));
        assert!(keys.touches(&reads(&with)));
        let mut with = many;
        with.push(Key::Index(IndexId(4), Bytes::from_static(b"v")));
        assert!(keys.touches(&reads(&with)));
    }
}
