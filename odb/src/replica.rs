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

use bytes::Bytes;
use odb_wire::{CommitData, FieldId, IndexId, Key, ObjectData, ObjectId, Tid};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

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

/// One key's versions, oldest first. A `None` value means "absent from that version on".
#[derive(Debug, Default, Clone)]
struct Chain(Vec<(Version, Option<Bytes>)>);

impl Chain {
    fn at(&self, at: Version) -> Option<&Bytes> {
        self.0
            .iter()
            .rev()
            .find(|(v, _)| *v <= at)
            .and_then(|(_, value)| value.as_ref())
    }

    /// Appends a version (the replica's versions only grow).
    fn push(&mut self, version: Version, value: Option<Bytes>) {
        match self.0.last_mut() {
            Some(last) if last.0 == version => last.1 = value,
            _ => self.0.push((version, value)),
        }
    }

    /// Drops versions older than the newest one visible at `horizon`, and a final absence
    /// nobody can see past. Returns the dropped values that no longer appear in the chain.
    fn prune(&mut self, horizon: Version) -> Vec<Bytes> {
        let keep_from = self.0.iter().rposition(|(v, _)| *v <= horizon).unwrap_or(0);
        let mut dropped: Vec<Bytes> = self.0.drain(..keep_from).filter_map(|(_, v)| v).collect();
        if matches!(self.0.as_slice(), [(v, None)] if *v <= horizon) {
            self.0.clear();
        }
        dropped.retain(|d| !self.0.iter().any(|(_, kept)| kept.as_ref() == Some(d)));
        dropped
    }

    /// True when more versions than the current one are retained (pruning is pending).
    fn has_history(&self) -> bool {
        self.0.len() > 1 || matches!(self.0.as_slice(), [(_, None)])
    }

    /// The newest value.
    fn latest(&self) -> Option<&Bytes> {
        self.0.last().and_then(|(_, value)| value.as_ref())
    }
}

#[derive(Debug, Default)]
struct ObjectVersions {
    fields: Vec<(FieldId, Chain)>,
    indices: Vec<(IndexId, Chain)>,
}

fn chain_mut<K: PartialEq + Copy>(chains: &mut Vec<(K, Chain)>, key: K) -> &mut Chain {
    let pos = match chains.iter().position(|(k, _)| *k == key) {
        Some(pos) => pos,
        None => {
            chains.push((key, Chain::default()));
            chains.len() - 1
        }
    };
    &mut chains[pos].1
}

/// The replica. Not thread-safe by itself: the client keeps it behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    tid: Tid,
    version: Version,
    objects: HashMap<ObjectId, ObjectVersions>,
    candidates: HashMap<(IndexId, Bytes), BTreeSet<ObjectId>>,
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

    pub fn field(&self, id: ObjectId, field: FieldId, at: SnapshotAt) -> Option<&Bytes> {
        let obj = self.objects.get(&id)?;
        let (_, chain) = obj.fields.iter().find(|(f, _)| *f == field)?;
        chain.at(at.version)
    }

    fn index_value(&self, id: ObjectId, index: IndexId, at: Version) -> Option<&Bytes> {
        let obj = self.objects.get(&id)?;
        let (_, chain) = obj.indices.iter().find(|(i, _)| *i == index)?;
        chain.at(at)
    }

    /// Ids of the objects whose `index` has exactly `value` at `at`, ascending.
    pub fn lookup(&self, index: IndexId, value: &[u8], at: SnapshotAt) -> Vec<ObjectId> {
        let key = (index, Bytes::copy_from_slice(value));
        let Some(candidates) = self.candidates.get(&key) else {
            return Vec::new();
        };
        candidates
            .iter()
            .copied()
            .filter(|id| {
                self.index_value(*id, index, at.version).map(|v| v.as_ref()) == Some(value)
            })
            .collect()
    }

    /// Applies a pushed commit as one new version. When `changed` is given, the keys whose
    /// value changed are added to it: fields written or deleted, index values gained or lost.
    pub fn apply_commit(&mut self, commit: &CommitData, mut changed: Option<&mut HashSet<Key>>) {
        self.tid = self.tid.max(commit.tid);
        let version = self.next_version();
        let mut touched = Vec::new();
        for w in &commit.writes {
            let obj = self.objects.entry(w.object).or_default();
            chain_mut(&mut obj.fields, w.field).push(version, w.value.clone());
            touched.push(w.object);
            if let Some(changed) = changed.as_deref_mut() {
                changed.insert(Key::Field(w.object, w.field));
            }
        }
        for w in &commit.index_writes {
            let old = self.set_index(w.object, w.index, w.value.clone(), version);
            touched.push(w.object);
            if let Some(changed) = changed.as_deref_mut() {
                index_changed(changed, w.index, old, w.value.clone());
            }
        }
        for &id in &commit.deletes {
            if let Some(obj) = self.objects.get_mut(&id) {
                if let Some(changed) = changed.as_deref_mut() {
                    for (field, chain) in &obj.fields {
                        if chain.latest().is_some() {
                            changed.insert(Key::Field(id, *field));
                        }
                    }
                    for (index, chain) in &obj.indices {
                        if let Some(value) = chain.latest() {
                            changed.insert(Key::Index(*index, value.clone()));
                        }
                    }
                }
                let fields = obj.fields.iter_mut().map(|(_, c)| c);
                for chain in fields.chain(obj.indices.iter_mut().map(|(_, c)| c)) {
                    chain.push(version, None);
                }
                touched.push(id);
            }
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
        mut changed: Option<&mut HashSet<Key>>,
    ) {
        self.tid = self.tid.max(tid);
        let version = self.next_version();
        let mut touched = Vec::with_capacity(objects.len());
        for data in objects {
            let obj = self.objects.entry(data.id).or_default();
            for (f, chain) in obj.fields.iter_mut() {
                if !data.fields.iter().any(|(g, _)| g == f) {
                    chain.push(version, None);
                    if let Some(changed) = changed.as_deref_mut() {
                        changed.insert(Key::Field(data.id, *f));
                    }
                }
            }
            for (f, v) in data.fields {
                chain_mut(&mut obj.fields, f).push(version, Some(v));
                if let Some(changed) = changed.as_deref_mut() {
                    changed.insert(Key::Field(data.id, f));
                }
            }
            let stale: Vec<IndexId> = obj
                .indices
                .iter()
                .map(|(i, _)| *i)
                .filter(|i| !data.indices.iter().any(|(j, _)| j == i))
                .collect();
            for i in stale {
                let old = self.set_index(data.id, i, None, version);
                if let Some(changed) = changed.as_deref_mut() {
                    index_changed(changed, i, old, None);
                }
            }
            for (i, v) in data.indices {
                let old = self.set_index(data.id, i, Some(v.clone()), version);
                if let Some(changed) = changed.as_deref_mut() {
                    index_changed(changed, i, old, Some(v));
                }
            }
            touched.push(data.id);
        }
        self.record_applied(self.tid, version);
        self.settle(touched, version);
    }

    /// The fields object `id` has or had in this replica.
    pub fn object_fields(&self, id: ObjectId) -> impl Iterator<Item = FieldId> + '_ {
        self.objects
            .get(&id)
            .into_iter()
            .flat_map(|o| o.fields.iter().map(|(f, _)| *f))
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

    /// Sets an index membership; returns the previous value.
    fn set_index(
        &mut self,
        id: ObjectId,
        index: IndexId,
        value: Option<Bytes>,
        version: Version,
    ) -> Option<Bytes> {
        if let Some(v) = &value {
            self.candidates
                .entry((index, v.clone()))
                .or_default()
                .insert(id);
        }
        let obj = self.objects.entry(id).or_default();
        let chain = chain_mut(&mut obj.indices, index);
        let old = chain.latest().cloned();
        chain.push(version, value);
        old
    }

    /// Prunes what the new version made obsolete, and remembers what must wait for open
    /// snapshots.
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
        obj.fields.retain_mut(|(_, chain)| {
            chain.prune(horizon);
            !chain.0.is_empty()
        });
        obj.indices.retain_mut(|(index, chain)| {
            forgotten.extend(chain.prune(horizon).into_iter().map(|v| (*index, v)));
            !chain.0.is_empty()
        });
        let waiting = obj.fields.iter().any(|(_, c)| c.has_history())
            || obj.indices.iter().any(|(_, c)| c.has_history());
        if obj.fields.is_empty() && obj.indices.is_empty() {
            self.objects.remove(&id);
        }
        for (index, value) in forgotten {
            let key = (index, value);
            if let Some(set) = self.candidates.get_mut(&key) {
                set.remove(&id);
                if set.is_empty() {
                    self.candidates.remove(&key);
                }
            }
        }
        waiting
    }
}

/// Records the index keys an index change touches: the value lost and the value gained.
fn index_changed(
    changed: &mut HashSet<Key>,
    index: IndexId,
    old: Option<Bytes>,
    new: Option<Bytes>,
) {
    if old == new {
        return;
    }
    changed.extend(old.into_iter().chain(new).map(|v| Key::Index(index, v)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::{FieldWrite, IndexWrite};

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
            self.apply_commit(commit, None);
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
        assert_eq!(
            r.field(ObjectId(1), FieldId(1), snap).unwrap().as_ref(),
            b"a"
        );
        assert_eq!(
            r.field(ObjectId(1), FieldId(1), now).unwrap().as_ref(),
            b"b"
        );
        assert_eq!(r.lookup(IndexId(7), b"x", snap), vec![ObjectId(1)]);
        assert!(r.lookup(IndexId(7), b"x", now).is_empty());
        r.close_snapshot(now);
        r.close_snapshot(snap);
        // Closing the last snapshot that needed the old value forgets it.
        assert!(!r
            .candidates
            .contains_key(&(IndexId(7), Bytes::from_static(b"x"))));
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
        assert_eq!(r.objects[&ObjectId(1)].fields[0].1 .0.len(), 1);
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
        assert_eq!(r.field(ObjectId(1), FieldId(1), at).unwrap().as_ref(), b"2");
        r.close_snapshot(at);
        let at = r.open_snapshot_at(Tid(4)).unwrap();
        assert_eq!(r.field(ObjectId(1), FieldId(1), at).unwrap().as_ref(), b"4");
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
        assert_eq!(r.objects[&ObjectId(1)].fields[0].1 .0.len(), 3);
    }

    #[test]
    fn applied_changes_report_the_keys_they_changed() {
        let mut r = Replica::new(Tid(0));
        let mut keys = HashSet::new();
        r.apply_commit(
            &commit(
                1,
                vec![write(1, 1, Some(b"a"))],
                vec![index(1, 7, Some(b"x"))],
            ),
            Some(&mut keys),
        );
        let field = Key::Field(ObjectId(1), FieldId(1));
        let x = Key::Index(IndexId(7), Bytes::from_static(b"x"));
        let y = Key::Index(IndexId(7), Bytes::from_static(b"y"));
        assert_eq!(keys, [field.clone(), x.clone()].into_iter().collect());
        keys.clear();
        r.apply_commit(
            &commit(2, vec![], vec![index(1, 7, Some(b"y"))]),
            Some(&mut keys),
        );
        assert_eq!(keys, [x, y.clone()].into_iter().collect());
        keys.clear();
        r.apply_commit(&delete(3, 1), Some(&mut keys));
        assert_eq!(keys, [field, y].into_iter().collect());
    }
}
