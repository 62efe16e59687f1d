//! The client's local multi-version replica of the data it can see.
//!
//! Every change the replica applies (a pushed commit, or a subscription's initial data) gets the
//! next local [`Version`]. Every field and every index membership of every visible object keeps
//! a short chain of `(version, value)`, so a snapshot opened at version `v` reads exactly the
//! state after change `v` while newer changes are applied. Local versions rather than server
//! tids number the changes because a subscription completing at the replica's current tid
//! still changes what is visible, and open snapshots must not see that.
//!
//! Versions no open snapshot can read any more are pruned: at once when no snapshot is open,
//! otherwise as soon as the oldest snapshot that needed them closes. A replica may also be told
//! to retain the states after its most recent changes (`retain_history`), which keeps the
//! pruning horizon at the oldest retained version so that historical snapshots can open there.
//!
//! Index lookups go through a candidate set per (index, value): every object that had that
//! value at some retained version. A lookup checks each candidate's version at the snapshot.

use crate::changes::ChangedKeys;
use bytes::Bytes;
use odb_wire::hash::{FastMap, FastSet};
use odb_wire::{bytes_eq, CommitData, FieldId, IdBlock, IndexId, ObjectData, ObjectId, Tid};
use std::collections::{BTreeMap, VecDeque};

mod candidates;
mod chain;
mod value;
use candidates::IndexCandidates;
use chain::{chain_mut, Chain};
use value::Value;

/// A local change number: strictly increasing with every change applied to the replica.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub(crate) struct Version(u64);

#[cfg(test)]
impl Version {
    pub fn test(v: u64) -> Version {
        Version(v)
    }
}

/// Why a historical snapshot cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryError {
    /// The tid is older than the oldest retained state, which is the state at `oldest`.
    Unavailable { oldest: Tid },
    /// The tid is newer than the replica's.
    Future { current: Tid },
}

/// Where a snapshot reads: the local version, and the server tid it corresponds to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SnapshotAt {
    pub version: Version,
    pub tid: Tid,
}

/// The retained versions of one object's fields and index memberships.
#[derive(Debug, Default)]
struct ObjectVersions {
    fields: Vec<Chain<FieldId>>,
    indices: Vec<Chain<IndexId>>,
}

/// Slots per page of [`ObjectTable`].
const PAGE: u64 = 16;

/// The objects of one page: ids `n * PAGE .. (n + 1) * PAGE`.
#[derive(Debug, Default)]
struct Page {
    live: usize,
    slots: [Option<ObjectVersions>; PAGE as usize],
}

/// The replica's objects by id. The server hands out ids in blocks and a client uses each
/// block in order, so objects created together have neighbouring ids: keeping them in pages
/// of neighbouring slots finds an object with one lookup in a small map and keeps objects read
/// in id order (what lookups return) close together in memory.
#[derive(Debug, Default)]
struct ObjectTable {
    pages: FastMap<u64, Box<Page>>,
    len: usize,
}

impl ObjectTable {
    #[inline]
    fn split(id: ObjectId) -> (u64, usize) {
        (id.0 / PAGE, (id.0 % PAGE) as usize)
    }

    #[inline]
    fn get(&self, id: &ObjectId) -> Option<&ObjectVersions> {
        let (page, slot) = Self::split(*id);
        self.pages.get(&page)?.slots[slot].as_ref()
    }

    fn get_mut(&mut self, id: &ObjectId) -> Option<&mut ObjectVersions> {
        let (page, slot) = Self::split(*id);
        self.pages.get_mut(&page)?.slots[slot].as_mut()
    }

    /// The object, inserted empty when absent.
    fn get_or_default(&mut self, id: ObjectId) -> &mut ObjectVersions {
        let (page, slot) = Self::split(id);
        let page = self.pages.entry(page).or_default();
        let slot = &mut page.slots[slot];
        if slot.is_none() {
            page.live += 1;
            self.len += 1;
        }
        slot.get_or_insert_with(ObjectVersions::default)
    }

    fn remove(&mut self, id: &ObjectId) {
        let (index, slot) = Self::split(*id);
        let Some(page) = self.pages.get_mut(&index) else {
            return;
        };
        if page.slots[slot].take().is_some() {
            page.live -= 1;
            self.len -= 1;
            if page.live == 0 {
                self.pages.remove(&index);
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The replica. Not thread-safe by itself: the client keeps it behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    tid: Tid,
    version: Version,
    objects: ObjectTable,
    /// Per index and value, every object that had that value at some retained version.
    candidates: FastMap<IndexId, IndexCandidates>,
    /// Snapshot versions of open views and transactions, with how many are open at each.
    open: BTreeMap<Version, usize>,
    /// Objects with retained history, by the version after which it can be pruned.
    history: BTreeMap<Version, Vec<ObjectId>>,
    /// How many changes before the newest one keep their state readable.
    retain: usize,
    /// The tid and version of the newest change and of the `retain` changes before it,
    /// oldest first.
    applied: VecDeque<(Tid, Version)>,
}

impl Replica {
    pub fn new(tid: Tid) -> Replica {
        Replica {
            tid,
            applied: VecDeque::from([(tid, Version::default())]),
            ..Replica::default()
        }
    }

    /// Keeps the states after the `changes` most recent changes before the newest one readable
    /// with [`Replica::open_snapshot_at`].
    pub fn set_retain(&mut self, changes: usize) {
        self.retain = changes;
        self.trim_applied();
    }

    /// The newest local version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The tid of the newest commit applied.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// Registers a snapshot of the current state; its versions are retained until released.
    pub fn open_snapshot(&mut self) -> SnapshotAt {
        *self.open.entry(self.version).or_default() += 1;
        SnapshotAt {
            version: self.version,
            tid: self.tid,
        }
    }

    /// Registers a snapshot of the state after commit `tid` as this replica saw it: the
    /// newest retained change at or before `tid`.
    pub fn open_snapshot_at(&mut self, tid: Tid) -> Result<SnapshotAt, HistoryError> {
        if tid > self.tid {
            return Err(HistoryError::Future { current: self.tid });
        }
        let version = self
            .applied
            .iter()
            .rev()
            .find(|(t, _)| *t <= tid)
            .map(|(_, v)| *v)
            .ok_or(HistoryError::Unavailable {
                oldest: self.applied.front().map_or(self.tid, |(t, _)| *t),
            })?;
        *self.open.entry(version).or_default() += 1;
        Ok(SnapshotAt { version, tid })
    }

    /// Releases a snapshot taken with [`Replica::open_snapshot`].
    pub fn close_snapshot(&mut self, at: SnapshotAt) {
        if let Some(count) = self.open.get_mut(&at.version) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&at.version);
                self.collect();
            }
        }
    }

    /// The oldest version any open snapshot reads at or history retains (or the current
    /// version).
    fn horizon(&self) -> Version {
        let retained = self.applied.front().map_or(self.version, |(_, v)| *v);
        self.open
            .keys()
            .next()
            .copied()
            .unwrap_or(self.version)
            .min(self.version)
            .min(retained)
    }

    /// Records a new change and forgets the oldest retained ones beyond the limit.
    fn record_applied(&mut self, tid: Tid, version: Version) {
        self.applied.push_back((tid, version));
        self.trim_applied();
    }

    fn trim_applied(&mut self) {
        let mut trimmed = false;
        while self.applied.len() > self.retain.saturating_add(1) {
            self.applied.pop_front();
            trimmed = true;
        }
        if trimmed {
            self.collect();
        }
    }

    /// Number of objects held, live or not yet collected.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    pub fn field(&self, id: ObjectId, field: FieldId, at: SnapshotAt) -> Option<&[u8]> {
        let obj = self.objects.get(&id)?;
        let chain = obj.fields.iter().find(|c| c.key() == field)?;
        chain.at(at.version)
    }

    /// Field `field` of object `id` at `at` when the object's existence field `exists` is set
    /// there (`Some(None)`: alive without a value for the field); `None` when it is not alive.
    #[inline]
    pub fn live_field(
        &self,
        id: ObjectId,
        exists: FieldId,
        field: FieldId,
        at: SnapshotAt,
    ) -> Option<Option<&[u8]>> {
        let obj = self.objects.get(&id)?;
        let mut alive = false;
        let mut value = None;
        for chain in &obj.fields {
            if chain.key() == exists {
                alive = chain.at(at.version).is_some();
            }
            if chain.key() == field {
                value = chain.at(at.version);
            }
        }
        alive.then_some(value)
    }

    fn index_value(&self, id: ObjectId, index: IndexId, at: Version) -> Option<&[u8]> {
        let obj = self.objects.get(&id)?;
        let chain = obj.indices.iter().find(|c| c.key() == index)?;
        chain.at(at)
    }

    /// Ids of the objects whose `index` has exactly `value` at `at`, ascending.
    pub fn lookup(&self, index: IndexId, value: &[u8], at: SnapshotAt) -> Vec<ObjectId> {
        let Some(candidates) = self.candidates.get(&index).and_then(|c| c.get(value)) else {
            return Vec::new();
        };
        candidates
            .iter()
            .filter(|id| {
                self.index_value(*id, index, at.version)
                    .is_some_and(|v| bytes_eq(v, value))
            })
            .collect()
    }

    /// Applies a pushed commit as one new version. When `changed` is given, the keys whose
    /// value changed are added to it: fields written or deleted, index values gained or lost.
    pub fn apply_commit(&mut self, commit: CommitData, mut changed: Option<&mut ChangedKeys>) {
        self.tid = self.tid.max(commit.tid);
        let version = self.next_version();
        if let Some(changed) = changed.as_deref_mut() {
            changed.reserve(commit.writes.len(), commit.index_writes.len());
        }
        // Objects left with more than their current values, which may need pruning.
        let mut touched = Vec::new();
        // The server sends each object's writes together: each run of one object's writes
        // finds the object once.
        let mut writes = commit.writes.into_iter();
        while let Some(first) = writes.next() {
            let id = first.object;
            let more = writes
                .as_slice()
                .iter()
                .take_while(|w| w.object == id)
                .count();
            let obj = self.objects.get_or_default(id);
            if obj.fields.is_empty() {
                obj.fields.reserve_exact(more + 1);
            }
            let mut history = false;
            for w in std::iter::once(first).chain(writes.by_ref().take(more)) {
                let value = w.value.as_deref().map(Value::new);
                history |= chain_mut(&mut obj.fields, w.field).push(version, value);
                if let Some(changed) = changed.as_deref_mut() {
                    changed.field(id, w.field);
                }
            }
            if history {
                touched.push(id);
            }
        }
        let mut index_writes = commit.index_writes.into_iter();
        while let Some(first) = index_writes.next() {
            let id = first.object;
            let more = index_writes
                .as_slice()
                .iter()
                .take_while(|w| w.object == id)
                .count();
            let obj = self.objects.get_or_default(id);
            if obj.indices.is_empty() {
                obj.indices.reserve_exact(more + 1);
            }
            let mut history = false;
            for w in std::iter::once(first).chain(index_writes.by_ref().take(more)) {
                if let Some(value) = &w.value {
                    add_candidate(&mut self.candidates, w.index, value, id);
                }
                let chain = chain_mut(&mut obj.indices, w.index);
                if let Some(changed) = changed.as_deref_mut() {
                    index_changed(changed, w.index, chain.latest(), w.value.as_deref());
                }
                history |= chain.push(version, w.value.as_deref().map(Value::new));
            }
            if history {
                touched.push(id);
            }
        }
        for id in commit.deletes {
            if let Some(obj) = self.objects.get_mut(&id) {
                if let Some(changed) = changed.as_deref_mut() {
                    for chain in &obj.fields {
                        if chain.latest().is_some() {
                            changed.field(id, chain.key());
                        }
                    }
                    for chain in &obj.indices {
                        if let Some(value) = chain.latest() {
                            changed.index(chain.key(), Bytes::copy_from_slice(value));
                        }
                    }
                }
                for chain in &mut obj.fields {
                    chain.push(version, None);
                }
                for chain in &mut obj.indices {
                    chain.push(version, None);
                }
                touched.push(id);
            }
        }
        if let Some(changed) = changed {
            changed.seal();
        }
        self.record_applied(self.tid, version);
        self.settle(touched, version);
    }

    /// Applies a subscription's initial data, each object's complete state at `tid`, as one
    /// new version. `changed` is as for [`Replica::apply_commit`].
    pub fn apply_snapshot(
        &mut self,
        objects: Vec<ObjectData>,
        tid: Tid,
        mut changed: Option<&mut ChangedKeys>,
    ) {
        self.tid = self.tid.max(tid);
        let version = self.next_version();
        let mut touched = Vec::new();
        for data in objects {
            let id = data.id;
            let obj = self.objects.get_or_default(id);
            let mut history = false;
            for chain in obj.fields.iter_mut() {
                let f = chain.key();
                if !data.fields.iter().any(|(g, _)| *g == f) {
                    history |= chain.push(version, None);
                    if let Some(changed) = changed.as_deref_mut() {
                        changed.field(id, f);
                    }
                }
            }
            if obj.fields.is_empty() {
                obj.fields.reserve_exact(data.fields.len());
            }
            for (f, v) in data.fields {
                history |= chain_mut(&mut obj.fields, f).push(version, Some(Value::new(&v)));
                if let Some(changed) = changed.as_deref_mut() {
                    changed.field(id, f);
                }
            }
            if obj.indices.is_empty() {
                obj.indices.reserve_exact(data.indices.len());
            }
            let stale: Vec<IndexId> = obj
                .indices
                .iter()
                .map(|c| c.key())
                .filter(|i| !data.indices.iter().any(|(j, _)| j == i))
                .collect();
            for i in stale {
                history |= self.set_index(id, i, None, version, changed.as_deref_mut());
            }
            for (i, v) in data.indices {
                history |= self.set_index(id, i, Some(v), version, changed.as_deref_mut());
            }
            if history {
                touched.push(id);
            }
        }
        if let Some(changed) = changed {
            changed.seal();
        }
        self.record_applied(self.tid, version);
        self.settle(touched, version);
    }

    /// The fields object `id` has or had in this replica.
    pub fn object_fields(&self, id: ObjectId) -> impl Iterator<Item = FieldId> + '_ {
        self.objects
            .get(&id)
            .into_iter()
            .flat_map(|o| o.fields.iter().map(|c| c.key()))
    }

    /// Applies a session's restore after a reconnection: `objects` with their complete state
    /// at `tid`, and every other live object removed unless `visible` (a delta restore, which
    /// holds only the objects that changed) names it among the ascending id ranges of every
    /// object the session sees. Nothing is visible until all of it is; `changed` is as for
    /// [`Replica::apply_commit`]. A `tid` lower than the replica's (a new database) replaces
    /// it, and the history kept for [`Replica::open_snapshot_at`] starts again.
    pub fn apply_resync(
        &mut self,
        objects: Vec<ObjectData>,
        tid: Tid,
        visible: Option<Vec<IdBlock>>,
        mut changed: Option<&mut ChangedKeys>,
    ) {
        let restored: FastSet<ObjectId> = match visible {
            Some(_) => FastSet::default(),
            None => objects.iter().map(|o| o.id).collect(),
        };
        let kept = |id: ObjectId| match &visible {
            Some(ranges) => in_ranges(ranges, id),
            None => restored.contains(&id),
        };
        let mut gone = Vec::new();
        for (&page, slots) in &self.objects.pages {
            for (slot, obj) in slots.slots.iter().enumerate() {
                let id = ObjectId(page * PAGE + slot as u64);
                let live = obj
                    .as_ref()
                    .is_some_and(|o| o.fields.iter().any(|c| c.latest().is_some()));
                if live && !kept(id) {
                    gone.push(id);
                }
            }
        }
        if tid < self.tid {
            self.applied.clear();
            self.tid = tid;
        }
        // Removing and refreshing happen under the caller's one write lock: no reader sees
        // the replica between the two.
        self.apply_commit(
            CommitData {
                tid,
                deletes: gone,
                ..CommitData::default()
            },
            changed.as_deref_mut(),
        );
        self.apply_snapshot(objects, tid, changed);
    }

    /// Moves the replica's tid forward without data (a flush, or a conflict reported at a tid
    /// this client did not see).
    pub fn advance(&mut self, tid: Tid) {
        self.tid = self.tid.max(tid);
    }

    fn next_version(&mut self) -> Version {
        self.version = Version(self.version.0 + 1);
        self.version
    }

    /// Sets an index membership, recording the index keys it changes in `changed`; returns
    /// whether the object now has history to prune.
    fn set_index(
        &mut self,
        id: ObjectId,
        index: IndexId,
        value: Option<Bytes>,
        version: Version,
        changed: Option<&mut ChangedKeys>,
    ) -> bool {
        if let Some(v) = &value {
            add_candidate(&mut self.candidates, index, v, id);
        }
        let obj = self.objects.get_or_default(id);
        let chain = chain_mut(&mut obj.indices, index);
        if let Some(changed) = changed {
            index_changed(changed, index, chain.latest(), value.as_deref());
        }
        chain.push(version, value.as_deref().map(Value::new))
    }

    /// Prunes what the new version made obsolete in the `touched` objects (those whose chains
    /// hold more than their current values), and remembers what must wait for open snapshots.
    fn settle(&mut self, mut touched: Vec<ObjectId>, version: Version) {
        touched.sort_unstable();
        touched.dedup();
        let horizon = self.horizon();
        let mut waiting = Vec::new();
        for id in touched {
            if self.prune_object(id, horizon) {
                waiting.push(id);
            }
        }
        if !waiting.is_empty() {
            self.history.entry(version).or_default().extend(waiting);
        }
    }

    /// Prunes objects whose history no open snapshot needs any more.
    fn collect(&mut self) {
        let horizon = self.horizon();
        while let Some(entry) = self.history.first_entry() {
            if *entry.key() > horizon {
                break;
            }
            for id in entry.remove() {
                self.prune_object(id, horizon);
            }
        }
    }

    /// Prunes one object's chains; drops the object when nothing of it remains. Returns
    /// whether history is still retained for an open snapshot.
    fn prune_object(&mut self, id: ObjectId, horizon: Version) -> bool {
        let Some(obj) = self.objects.get_mut(&id) else {
            return false;
        };
        let mut forgotten = Vec::new();
        obj.fields.retain_mut(|chain| {
            chain.prune(horizon);
            !chain.is_empty()
        });
        obj.indices.retain_mut(|chain| {
            let index = chain.key();
            forgotten.extend(chain.prune(horizon).into_iter().map(|v| (index, v)));
            !chain.is_empty()
        });
        let waiting = obj.fields.iter().any(|c| c.has_history())
            || obj.indices.iter().any(|c| c.has_history());
        if obj.fields.is_empty() && obj.indices.is_empty() {
            self.objects.remove(&id);
        }
        for (index, value) in forgotten {
            let Some(values) = self.candidates.get_mut(&index) else {
                continue;
            };
            values.remove(&value, id);
            if values.is_empty() {
                self.candidates.remove(&index);
            }
        }
        waiting
    }
}

/// Records that `id` has `value` in `index` (at some retained version).
/// Whether `id` lies in one of `ranges` (ascending and disjoint).
fn in_ranges(ranges: &[IdBlock], id: ObjectId) -> bool {
    let after = ranges.partition_point(|r| r.start <= id.0);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|r| id.0 - r.start < r.len)
}

fn add_candidate(
    candidates: &mut FastMap<IndexId, IndexCandidates>,
    index: IndexId,
    value: &[u8],
    id: ObjectId,
) {
    candidates.entry(index).or_default().insert(value, id);
}

/// Records the index keys an index change touches: the value lost and the value gained.
fn index_changed(
    changed: &mut ChangedKeys,
    index: IndexId,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
) {
    if let (Some(old), Some(new)) = (old, new) {
        if bytes_eq(old, new) {
            return;
        }
    } else if old.is_none() && new.is_none() {
        return;
    }
    for value in old.into_iter().chain(new) {
        changed.index(index, Bytes::copy_from_slice(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::{FieldWrite, IndexWrite, Key};

    fn write(o: u64, f: u32, v: Option<&'static [u8]>) -> FieldWrite {
        FieldWrite {
            object: ObjectId(o),
            field: FieldId(f),
            value: v.map(Bytes::from_static),
        }
    }

    fn index(o: u64, i: u32, v: Option<&'static [u8]>) -> IndexWrite {
        IndexWrite {
            object: ObjectId(o),
            index: IndexId(i),
            value: v.map(Bytes::from_static),
        }
    }

    fn commit(tid: u64, writes: Vec<FieldWrite>, indices: Vec<IndexWrite>) -> CommitData {
        CommitData {
            tid: Tid(tid),
            writes,
            index_writes: indices,
            deletes: vec![],
        }
    }

    impl Replica {
        fn apply_test(&mut self, commit: &CommitData) {
            self.apply_commit(commit.clone(), None);
        }
    }

    fn delete(tid: u64, o: u64) -> CommitData {
        CommitData {
            tid: Tid(tid),
            deletes: vec![ObjectId(o)],
            ..CommitData::default()
        }
    }

    #[test]
    fn an_open_snapshot_keeps_reading_its_versions() {
        let mut r = Replica::new(Tid(0));
        r.apply_test(&commit(
            1,
            vec![write(1, 1, Some(b"a"))],
            vec![index(1, 7, Some(b"x"))],
        ));
        let snap = r.open_snapshot();
        r.apply_test(&commit(
            2,
            vec![write(1, 1, Some(b"b"))],
            vec![index(1, 7, Some(b"y"))],
        ));
        let now = r.open_snapshot();
        assert_eq!(r.field(ObjectId(1), FieldId(1), snap).unwrap(), b"a");
        assert_eq!(r.field(ObjectId(1), FieldId(1), now).unwrap(), b"b");
        assert_eq!(r.lookup(IndexId(7), b"x", snap), vec![ObjectId(1)]);
        assert!(r.lookup(IndexId(7), b"x", now).is_empty());
        r.close_snapshot(now);
        r.close_snapshot(snap);
        // Closing the last snapshot that needed the old value forgets it.
        assert!(r
            .candidates
            .get(&IndexId(7))
            .is_none_or(|values| values.get(b"x").is_none()));
        assert!(r.history.is_empty());
    }

    #[test]
    fn a_subscription_completing_at_the_same_tid_is_invisible_to_open_snapshots() {
        let mut r = Replica::new(Tid(5));
        let snap = r.open_snapshot();
        let data = ObjectData {
            id: ObjectId(9),
            fields: vec![(FieldId(1), Bytes::from_static(b"z"))],
            indices: vec![(IndexId(7), Bytes::new())],
        };
        r.apply_snapshot(vec![data], Tid(5), None);
        assert!(r.field(ObjectId(9), FieldId(1), snap).is_none());
        assert!(r.lookup(IndexId(7), b"", snap).is_empty());
        let now = r.open_snapshot();
        assert_eq!(now.tid, Tid(5));
        assert_eq!(r.lookup(IndexId(7), b"", now), vec![ObjectId(9)]);
    }

    #[test]
    fn deleted_objects_are_dropped_when_no_snapshot_needs_them() {
        let mut r = Replica::new(Tid(0));
        r.apply_test(&commit(
            1,
            vec![write(1, 1, Some(b"a"))],
            vec![index(1, 7, Some(b""))],
        ));
        r.apply_test(&delete(2, 1));
        assert_eq!(r.object_count(), 0);
        assert!(r.candidates.is_empty());
    }

    #[test]
    fn deletes_seen_while_a_snapshot_was_open_are_collected_when_it_closes() {
        let mut r = Replica::new(Tid(0));
        let mut tid = 0;
        for o in 1..=100u64 {
            tid += 1;
            r.apply_test(&commit(
                tid,
                vec![write(o, 1, Some(b"a"))],
                vec![index(o, 7, Some(b""))],
            ));
        }
        let snap = r.open_snapshot();
        for o in 1..=100u64 {
            tid += 1;
            r.apply_test(&delete(tid, o));
        }
        assert_eq!(r.lookup(IndexId(7), b"", snap).len(), 100);
        assert_eq!(r.object_count(), 100);
        r.close_snapshot(snap);
        assert_eq!(r.object_count(), 0);
        assert!(r.candidates.is_empty());
        assert!(r.history.is_empty());
    }

    #[test]
    fn overwritten_values_keep_one_version_without_snapshots() {
        let mut r = Replica::new(Tid(0));
        for t in 1..=50u64 {
            r.apply_test(&commit(t, vec![write(1, 1, Some(b"v"))], vec![]));
        }
        assert_eq!(
            r.objects.get(&ObjectId(1)).unwrap().fields[0]
                .entries()
                .len(),
            1
        );
        assert!(r.history.is_empty());
    }

    #[test]
    fn retained_history_reads_the_state_after_each_retained_commit() {
        let mut r = Replica::new(Tid(0));
        r.set_retain(2);
        for t in 1..=4u64 {
            let value: &'static [u8] = [b"1", b"2", b"3", b"4"][t as usize - 1];
            r.apply_test(&commit(t, vec![write(1, 1, Some(value))], vec![]));
        }
        // Retained: the states after tids 2 and 3, plus the current one (4).
        let at = r.open_snapshot_at(Tid(2)).unwrap();
        assert_eq!(r.field(ObjectId(1), FieldId(1), at).unwrap(), b"2");
        r.close_snapshot(at);
        let at = r.open_snapshot_at(Tid(4)).unwrap();
        assert_eq!(r.field(ObjectId(1), FieldId(1), at).unwrap(), b"4");
        r.close_snapshot(at);
        assert_eq!(
            r.open_snapshot_at(Tid(1)),
            Err(HistoryError::Unavailable { oldest: Tid(2) })
        );
        assert_eq!(
            r.open_snapshot_at(Tid(5)),
            Err(HistoryError::Future { current: Tid(4) })
        );
        // Only the retained versions are kept.
        assert_eq!(
            r.objects.get(&ObjectId(1)).unwrap().fields[0]
                .entries()
                .len(),
            3
        );
    }

    #[test]
    fn applied_changes_report_the_keys_they_changed() {
        let mut r = Replica::new(Tid(0));
        let field = Key::Field(ObjectId(1), FieldId(1));
        let x = Key::Index(IndexId(7), Bytes::from_static(b"x"));
        let y = Key::Index(IndexId(7), Bytes::from_static(b"y"));
        let changes = |keys: &ChangedKeys, expected: &[&Key]| {
            keys.len() == expected.len() && expected.iter().all(|k| keys.contains(k))
        };
        let mut keys = ChangedKeys::default();
        r.apply_commit(
            commit(
                1,
                vec![write(1, 1, Some(b"a"))],
                vec![index(1, 7, Some(b"x"))],
            ),
            Some(&mut keys),
        );
        assert!(changes(&keys, &[&field, &x]));
        let mut keys = ChangedKeys::default();
        r.apply_commit(
            commit(2, vec![], vec![index(1, 7, Some(b"y"))]),
            Some(&mut keys),
        );
        assert!(changes(&keys, &[&x, &y]));
        let mut keys = ChangedKeys::default();
        r.apply_commit(delete(3, 1), Some(&mut keys));
        assert!(changes(&keys, &[&field, &y]));
    }

    #[test]
    fn objects_in_shared_and_separate_pages_come_and_go() {
        let mut r = Replica::new(Tid(0));
        let ids = [1u64, 2, PAGE - 1, PAGE, 5 * PAGE + 3, u64::MAX];
        for (t, &o) in ids.iter().enumerate() {
            r.apply_test(&commit(
                t as u64 + 1,
                vec![write(o, 1, Some(b"a"))],
                vec![index(o, 7, Some(b"k"))],
            ));
        }
        assert_eq!(r.object_count(), ids.len());
        let now = r.open_snapshot();
        let mut sorted = ids.map(ObjectId).to_vec();
        sorted.sort();
        assert_eq!(r.lookup(IndexId(7), b"k", now), sorted);
        r.close_snapshot(now);
        let mut tid = ids.len() as u64;
        for &o in &ids {
            tid += 1;
            r.apply_test(&delete(tid, o));
        }
        assert_eq!(r.object_count(), 0);
        assert!(r.objects.pages.is_empty());
        assert!(r.candidates.is_empty());
    }

    #[test]
    fn a_chain_goes_from_one_version_to_several_and_back() {
        let mut r = Replica::new(Tid(0));
        r.apply_test(&commit(1, vec![write(1, 1, Some(b"a"))], vec![]));
        let first = r.open_snapshot();
        r.apply_test(&commit(2, vec![write(1, 1, Some(b"b"))], vec![]));
        r.apply_test(&commit(3, vec![write(1, 1, None)], vec![]));
        let last = r.open_snapshot();
        assert_eq!(r.field(ObjectId(1), FieldId(1), first).unwrap(), b"a");
        assert!(r.field(ObjectId(1), FieldId(1), last).is_none());
        r.close_snapshot(first);
        r.close_snapshot(last);
        assert_eq!(r.object_count(), 0);
        assert!(r.history.is_empty());
    }
}
