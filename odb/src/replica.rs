//! The client's local multi-version replica of the data it can see.
//!
//! Every change the replica applies (a pushed commit, or a subscription's initial data) gets the
//! next local [`Version`]. A snapshot opened at version `v` reads exactly the state after change
//! `v` while newer changes are applied. Local versions rather than server tids number the
//! changes because a subscription completing at the replica's current tid still changes what is
//! visible, and open snapshots must not see that.
//!
//! States no open snapshot can read any more are pruned: at once when no snapshot is open,
//! otherwise as soon as the oldest snapshot that needed them closes. A replica may also be told
//! to retain the states after its most recent changes (`retain_history`), which keeps the
//! pruning horizon at the oldest retained version so that historical snapshots can open there.
//!
//! Each object keeps its current state as one compact [`Record`], and, only while an open or
//! retained snapshot may still read them, its earlier states in a side map.
//!
//! Index lookups go through a candidate set per (index, value): every object that had that
//! value at some retained version. A lookup checks each candidate's version at the snapshot.

use crate::changes::ChangedKeys;
use odb_wire::hash::{FastMap, FastSet};
use odb_wire::{
    bytes_eq, CommitData, FieldId, FieldWrite, IdBlock, IndexId, IndexWrite, ObjectId, ObjectList,
    Tid,
};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

mod candidates;
mod record;
mod snapshots;
mod value;
use candidates::IndexCandidates;
use record::{Record, Slot};
use snapshots::OpenSnapshots;

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

/// Slots per page of [`ObjectTable`].
const PAGE: u64 = 16;

/// The current states of the objects of one page: ids `n * PAGE .. (n + 1) * PAGE`.
#[derive(Debug, Default)]
struct Page {
    live: usize,
    slots: [Option<Record>; PAGE as usize],
}

/// The replica's objects by id, each with its current state. The server hands out ids in
/// blocks and a client uses each block in order, so objects created together have
/// neighbouring ids: keeping them in pages of neighbouring slots finds an object with one
/// lookup in a small map and keeps objects read in id order (what lookups return) close
/// together in memory.
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
    fn get(&self, id: &ObjectId) -> Option<&Record> {
        let (page, slot) = Self::split(*id);
        self.pages.get(&page)?.slots[slot].as_ref()
    }

    /// Sets the object's current state; returns the one it replaces.
    fn insert(&mut self, id: ObjectId, record: Record) -> Option<Record> {
        let (page, slot) = Self::split(id);
        let page = self.pages.entry(page).or_default();
        let old = page.slots[slot].replace(record);
        if old.is_none() {
            page.live += 1;
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, id: &ObjectId) -> Option<Record> {
        let (index, slot) = Self::split(*id);
        let page = self.pages.get_mut(&index)?;
        let old = page.slots[slot].take()?;
        page.live -= 1;
        self.len -= 1;
        if page.live == 0 {
            self.pages.remove(&index);
        }
        Some(old)
    }

    fn iter(&self) -> impl Iterator<Item = (ObjectId, &Record)> {
        self.pages.iter().flat_map(|(&page, slots)| {
            slots
                .slots
                .iter()
                .enumerate()
                .filter_map(move |(slot, record)| {
                    Some((ObjectId(page * PAGE + slot as u64), record.as_ref()?))
                })
        })
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// One change being applied: its version, the oldest version a snapshot may read once it is
/// applied, and the objects whose earlier states wait for open snapshots.
struct Step {
    version: Version,
    horizon: Version,
    waiting: Vec<ObjectId>,
    /// Objects that gain an index's empty value in this change (every object has its type's
    /// all-objects index): they join that value's candidates together at its end, which for a
    /// large change builds the candidate set in one pass instead of one insertion per object.
    empty: Vec<(IndexId, ObjectId)>,
    /// Whether a state of an object in `empty` may have been dropped during the change (an
    /// object already held, or deleted), so that each must be checked before it joins.
    recheck: bool,
}

/// The replica. Not thread-safe by itself: the client keeps it behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    tid: Tid,
    version: Version,
    objects: ObjectTable,
    /// Earlier states of objects that an open or retained snapshot may still read, oldest
    /// first; all older than the object's current state.
    older: FastMap<ObjectId, Vec<Record>>,
    /// Per index and value, every object that had that value at some retained version.
    candidates: FastMap<IndexId, IndexCandidates>,
    /// Snapshot versions of open views and transactions, with how many are open at each.
    open: OpenSnapshots,
    /// Objects with retained history, by the version after which it can be pruned.
    history: BTreeMap<Version, Vec<ObjectId>>,
    /// How many changes before the newest one keep their state readable.
    retain: usize,
    /// The tid and version of the newest change and of the `retain` changes before it,
    /// oldest first.
    applied: VecDeque<(Tid, Version)>,
    /// Reused while building records.
    scratch: Vec<u8>,
    /// Reused as [`Step::empty`].
    empty: Vec<(IndexId, ObjectId)>,
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
        self.open.open(self.version);
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
        self.open.open(version);
        Ok(SnapshotAt { version, tid })
    }

    /// Releases a snapshot taken with [`Replica::open_snapshot`].
    pub fn close_snapshot(&mut self, at: SnapshotAt) {
        if self.open.close(at.version) {
            self.collect();
        }
    }

    /// The oldest version any open snapshot reads at or history retains (or the current
    /// version).
    fn horizon(&self) -> Version {
        let retained = self.applied.front().map_or(self.version, |(_, v)| *v);
        self.open
            .oldest()
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

    /// The state of object `id` that a snapshot at `at` reads.
    #[inline]
    fn record_at(&self, id: ObjectId, at: Version) -> Option<&Record> {
        let current = self.objects.get(&id)?;
        if current.version() <= at {
            return Some(current);
        }
        self.older
            .get(&id)?
            .iter()
            .rev()
            .find(|r| r.version() <= at)
    }

    pub fn field(&self, id: ObjectId, field: FieldId, at: SnapshotAt) -> Option<&[u8]> {
        self.record_at(id, at.version)?.get(Slot::Field(field))
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
        self.record_at(id, at.version)?.live_field(exists, field)
    }

    fn index_value(&self, id: ObjectId, index: IndexId, at: Version) -> Option<&[u8]> {
        self.record_at(id, at)?.get(Slot::Index(index))
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
    ///
    /// The commit is borrowed: the records copy what they keep, and the caller frees the
    /// commit (for a bulk commit, hundreds of thousands of values) after releasing its lock.
    pub fn apply_commit(&mut self, commit: &CommitData, mut changed: Option<&mut ChangedKeys>) {
        let CommitData {
            tid,
            writes,
            index_writes,
            deletes,
        } = commit;
        let tid = *tid;
        let mut step = self.begin(tid);
        if let Some(changed) = changed.as_deref_mut() {
            changed.reserve(writes.len(), index_writes.len());
        }
        if index_writes.len() >= RESERVE_FROM {
            reserve_candidates(
                &mut self.candidates,
                index_writes
                    .iter()
                    .filter_map(|w| Some((w.index, w.value.as_deref()?))),
            );
        }
        // The server sends each object's writes together, field writes and index changes in
        // the same object order: an object's both runs are applied at once, rebuilding its
        // record once. A run that does not line up is applied on its own, at the same version.
        let mut index_runs = runs(index_writes, |w| w.object).peekable();
        for (id, run) in runs(writes, |w| w.object) {
            let indices = match index_runs.peek() {
                Some((next, _)) if *next == id => index_runs.next().map(|(_, r)| r),
                _ => None,
            };
            let indices = &index_writes[indices.unwrap_or_default()];
            self.update(id, &writes[run], indices, &mut step, &mut changed);
        }
        for (id, run) in index_runs {
            let indices = &index_writes[run];
            self.update(id, &[], indices, &mut step, &mut changed);
        }
        step.recheck |= !deletes.is_empty();
        for &id in deletes {
            let Some(old) = self.objects.get(&id).filter(|r| !r.is_tombstone()) else {
                continue;
            };
            if let Some(changed) = changed.as_deref_mut() {
                for (slot, value) in old.entries() {
                    match slot {
                        Slot::Field(f) => changed.field(id, f),
                        Slot::Index(i) => changed.index(i, value),
                    }
                }
            }
            self.install(id, Record::tombstone(step.version), &mut step);
        }
        self.join_empty_values(&mut step);
        if let Some(changed) = changed {
            changed.seal();
        }
        self.wait_for_snapshots(step);
    }

    /// Starts a change: the replica's next version, recorded as applied at `tid`.
    fn begin(&mut self, tid: Tid) -> Step {
        self.tid = self.tid.max(tid);
        let version = self.next_version();
        self.record_applied(self.tid, version);
        Step {
            version,
            horizon: self.horizon(),
            waiting: Vec::new(),
            empty: std::mem::take(&mut self.empty),
            recheck: false,
        }
    }

    /// Makes the objects that gained an index's empty value during the change its candidates:
    /// a few one by one, many per index in one pass.
    fn join_empty_values(&mut self, step: &mut Step) {
        /// Fewest objects for which the ids are grouped and added per index at once.
        const GROUP_FROM: usize = 64;
        /// Largest buffer kept for the next change.
        const KEEP_UP_TO: usize = 4096;
        let mut empty = std::mem::take(&mut step.empty);
        if step.recheck {
            empty.retain(|&(index, id)| self.holds(id, index, b""));
        }
        if empty.len() < GROUP_FROM {
            for &(index, id) in &empty {
                self.candidates.entry(index).or_default().insert(b"", id);
            }
        } else {
            empty.sort_unstable();
            let mut rest = &empty[..];
            while let Some(&(index, _)) = rest.first() {
                let n = rest.iter().take_while(|(i, _)| *i == index).count();
                let (group, after) = rest.split_at(n);
                let ids = group.iter().map(|&(_, id)| id).collect();
                self.candidates.entry(index).or_default().extend_empty(ids);
                rest = after;
            }
        }
        empty.clear();
        if empty.capacity() <= KEEP_UP_TO {
            self.empty = empty;
        }
    }

    /// Applies field and index writes to one object.
    fn update(
        &mut self,
        id: ObjectId,
        fields: &[FieldWrite],
        indices: &[IndexWrite],
        step: &mut Step,
        changed: &mut Option<&mut ChangedKeys>,
    ) {
        let old = self.objects.get(&id).filter(|r| !r.is_tombstone());
        step.recheck |= old.is_some();
        let held = old.map_or(0, |r| r.entries().count());
        let mut entries: Vec<(Slot, Option<&[u8]>)> =
            Vec::with_capacity(held + fields.len() + indices.len());
        entries.extend(
            old.into_iter()
                .flat_map(|r| r.entries().map(|(s, v)| (s, Some(v)))),
        );
        for w in fields {
            set(&mut entries, Slot::Field(w.field), w.value.as_deref());
            if let Some(changed) = changed.as_deref_mut() {
                changed.field(id, w.field);
            }
        }
        for w in indices {
            let before = set(&mut entries, Slot::Index(w.index), w.value.as_deref());
            if let Some(changed) = changed.as_deref_mut() {
                index_changed(changed, w.index, before, w.value.as_deref());
            }
        }
        // Only the final value of each index written is a candidate: a commit may write one
        // index twice.
        for (slot, value) in &entries {
            if let (Slot::Index(index), Some(value)) = (slot, value) {
                if indices.iter().any(|w| w.index == *index) {
                    add_candidate(&mut self.candidates, step, *index, value, id);
                }
            }
        }
        let present = entries.iter().filter_map(|(s, v)| Some((*s, (*v)?)));
        let record = Record::build(step.version, present, &mut self.scratch);
        self.install(id, record, step);
    }

    /// Makes `record` the object's current state, keeping the state it replaces while a
    /// snapshot may read it, and forgetting what none can read any more.
    fn install(&mut self, id: ObjectId, record: Record, step: &mut Step) {
        let (version, horizon) = (record.version(), step.horizon);
        let tombstone = record.is_tombstone();
        let Some(old) = self.objects.insert(id, record) else {
            if tombstone {
                // Writes that left nothing of an object this replica did not hold.
                self.objects.remove(&id);
            }
            return;
        };
        let has_older = self.older.contains_key(&id);
        if old.version() == version || (version <= horizon && !has_older) {
            // No snapshot reads the replaced state: an earlier step of this very change, or a
            // state every snapshot reads past.
            self.forget(id, [old]);
            if !tombstone && !has_older {
                return;
            }
        } else {
            self.older.entry(id).or_default().push(old);
        }
        if self.prune_object(id, horizon) {
            step.waiting.push(id);
        }
    }

    /// Ends a change: remembers the objects whose earlier states wait for snapshots older
    /// than it.
    fn wait_for_snapshots(&mut self, step: Step) {
        let Step {
            version,
            mut waiting,
            ..
        } = step;
        if !waiting.is_empty() {
            waiting.sort_unstable();
            waiting.dedup();
            self.history.entry(version).or_default().extend(waiting);
        }
    }

    /// Applies a subscription's initial data, each object's complete state at `tid`, as one
    /// new version. `changed` is as for [`Replica::apply_commit`].
    pub fn apply_snapshot(
        &mut self,
        objects: Vec<ObjectList>,
        tid: Tid,
        mut changed: Option<&mut ChangedKeys>,
    ) {
        let mut step = self.begin(tid);
        if objects.iter().map(ObjectList::len).sum::<usize>() >= RESERVE_FROM {
            reserve_candidates(
                &mut self.candidates,
                objects.iter().flatten().flat_map(|o| o.indices()),
            );
        }
        for data in objects.iter().flatten() {
            let id = data.id;
            let held = self.objects.get(&id);
            // A state an object joining an empty value replaces (an object already held, or
            // sent twice) may be dropped before the change ends.
            step.recheck |= held.is_some();
            let old = held.filter(|r| !r.is_tombstone());
            if let Some(changed) = changed.as_deref_mut() {
                for (slot, value) in old.into_iter().flat_map(Record::entries) {
                    match slot {
                        Slot::Field(f) if !data.fields().any(|(g, _)| g == f) => {
                            changed.field(id, f);
                        }
                        Slot::Index(i) if !data.indices().any(|(j, _)| j == i) => {
                            index_changed(changed, i, Some(value), None);
                        }
                        _ => {}
                    }
                }
                for (f, _) in data.fields() {
                    changed.field(id, f);
                }
                for (i, value) in data.indices() {
                    let before = old.and_then(|r| r.get(Slot::Index(i)));
                    if before.is_some_and(|b| bytes_eq(b, value)) {
                        continue;
                    }
                    index_changed(changed, i, before, Some(value));
                }
            }
            for (i, value) in data.indices() {
                add_candidate(&mut self.candidates, &mut step, i, value, id);
            }
            let fields = data.fields().map(|(f, v)| (Slot::Field(f), v));
            let indices = data.indices().map(|(i, v)| (Slot::Index(i), v));
            let record = Record::build(step.version, fields.chain(indices), &mut self.scratch);
            self.install(id, record, &mut step);
        }
        self.join_empty_values(&mut step);
        if let Some(changed) = changed {
            changed.seal();
        }
        self.wait_for_snapshots(step);
    }

    /// The fields object `id` has or had in this replica.
    pub fn object_fields(&self, id: ObjectId) -> impl Iterator<Item = FieldId> + '_ {
        let older = self.older.get(&id).into_iter().flatten();
        self.objects
            .get(&id)
            .into_iter()
            .chain(older)
            .flat_map(Record::entries)
            .filter_map(|(slot, _)| match slot {
                Slot::Field(f) => Some(f),
                Slot::Index(_) => None,
            })
    }

    /// Applies a session's restore after a reconnection: `objects` with their complete state
    /// at `tid`, and every other live object removed unless `visible` (a delta restore, which
    /// holds only the objects that changed) names it among the ascending id ranges of every
    /// object the session sees. Nothing is visible until all of it is; `changed` is as for
    /// [`Replica::apply_commit`]. A `tid` lower than the replica's (a new database) replaces
    /// it, and the history kept for [`Replica::open_snapshot_at`] starts again.
    pub fn apply_resync(
        &mut self,
        objects: Vec<ObjectList>,
        tid: Tid,
        visible: Option<Vec<IdBlock>>,
        mut changed: Option<&mut ChangedKeys>,
    ) {
        let restored: FastSet<ObjectId> = match visible {
            Some(_) => FastSet::default(),
            None => objects.iter().flatten().map(|o| o.id).collect(),
        };
        let kept = |id: ObjectId| match &visible {
            Some(ranges) => in_ranges(ranges, id),
            None => restored.contains(&id),
        };
        let gone: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(id, record)| {
                let live = record.entries().any(|(s, _)| matches!(s, Slot::Field(_)));
                live && !kept(*id)
            })
            .map(|(id, _)| id)
            .collect();
        if tid < self.tid {
            self.applied.clear();
            self.tid = tid;
        }
        // Removing and refreshing happen under the caller's one write lock: no reader sees
        // the replica between the two.
        self.apply_commit(
            &CommitData {
                tid,
                deletes: gone,
                ..CommitData::default()
            },
            changed.as_deref_mut(),
        );
        self.apply_snapshot(objects, tid, changed);
    }

    /// Replaces everything with another database's `objects` at `tid` (an in-memory server
    /// restarted): every object goes, whatever its id, and the history kept for
    /// [`Replica::open_snapshot_at`] starts again, since the old tids mean nothing any more.
    /// Snapshots open still read what they read.
    pub fn replace(
        &mut self,
        objects: Vec<ObjectList>,
        tid: Tid,
        changed: Option<&mut ChangedKeys>,
    ) {
        self.applied.clear();
        self.tid = tid;
        self.apply_resync(objects, tid, Some(Vec::new()), changed);
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

    /// Drops the earlier states of one object that no snapshot reading at `horizon` or later
    /// can see, and the object itself when it is deleted as of `horizon`. Returns whether
    /// earlier states (or a deletion) still wait for an open snapshot.
    fn prune_object(&mut self, id: ObjectId, horizon: Version) -> bool {
        let Some(current) = self.objects.get(&id) else {
            self.older.remove(&id);
            return false;
        };
        let (version, tombstone) = (current.version(), current.is_tombstone());
        let mut dropped = Vec::new();
        if let Some(older) = self.older.get_mut(&id) {
            // Keep the newest earlier state visible at the horizon, and those after it.
            let keep_from = match version <= horizon {
                true => older.len(),
                false => older
                    .iter()
                    .rposition(|r| r.version() <= horizon)
                    .unwrap_or(0),
            };
            dropped.extend(older.drain(..keep_from));
            if older.is_empty() {
                self.older.remove(&id);
            }
        }
        let mut waiting = tombstone || self.older.contains_key(&id);
        if tombstone && version <= horizon && !self.older.contains_key(&id) {
            dropped.extend(self.objects.remove(&id));
            waiting = false;
        }
        self.forget(id, dropped);
        waiting
    }

    /// Whether a state of object `id` that the replica keeps (its current one, or an earlier one
    /// an open snapshot may read) has `value` in `index`.
    fn holds(&self, id: ObjectId, index: IndexId, value: &[u8]) -> bool {
        self.objects
            .get(&id)
            .into_iter()
            .chain(self.older.get(&id).into_iter().flatten())
            .any(|r| r.has_index_value(index, value))
    }

    /// Removes the index candidates that only the `dropped` states of object `id` had.
    fn forget(&mut self, id: ObjectId, dropped: impl IntoIterator<Item = Record>) {
        for record in dropped {
            for (index, value) in record.index_values() {
                if self.holds(id, index, value) {
                    continue;
                }
                let Some(values) = self.candidates.get_mut(&index) else {
                    continue;
                };
                values.remove(value, id);
                if values.is_empty() {
                    self.candidates.remove(&index);
                }
            }
        }
    }
}

/// Sets `slot` to `value` among `entries` (`None`: removed); returns the value it had.
fn set<'a>(
    entries: &mut Vec<(Slot, Option<&'a [u8]>)>,
    slot: Slot,
    value: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    match entries.iter_mut().find(|(s, _)| *s == slot) {
        Some((_, v)) => std::mem::replace(v, value),
        None => {
            // Fields stay before indices (see `Record`).
            let at = match slot {
                Slot::Field(_) => entries
                    .iter()
                    .position(|(s, _)| matches!(s, Slot::Index(_)))
                    .unwrap_or(entries.len()),
                Slot::Index(_) => entries.len(),
            };
            entries.insert(at, (slot, value));
            None
        }
    }
}

/// The runs of consecutive items of `items` that belong to one object, with their object.
fn runs<'a, T>(
    items: &'a [T],
    object: impl Fn(&T) -> ObjectId + 'a,
) -> impl Iterator<Item = (ObjectId, Range<usize>)> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = items.get(start)?;
        let id = object(first);
        let len = items[start..]
            .iter()
            .take_while(|item| object(item) == id)
            .count();
        let run = start..start + len;
        start += len;
        Some((id, run))
    })
}

/// Whether `id` lies in one of `ranges` (ascending and disjoint).
fn in_ranges(ranges: &[IdBlock], id: ObjectId) -> bool {
    let after = ranges.partition_point(|r| r.start <= id.0);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|r| id.0 - r.start < r.len)
}

/// Records that `id` has `value` in `index` (at some retained version).
/// Fewest values of one index in one change for which the candidate tables make room first.
const RESERVE_FROM: usize = 1024;

/// Makes room in the candidate tables for the values of a large change at once, rather than
/// growing them (and rehashing every value) several times on the way. `values` gives each
/// written index value; the empty value has no table entry.
fn reserve_candidates<'a>(
    candidates: &mut FastMap<IndexId, IndexCandidates>,
    values: impl Iterator<Item = (IndexId, &'a [u8])>,
) {
    let mut counts: Vec<(IndexId, usize)> = Vec::new();
    for (index, value) in values {
        if value.is_empty() {
            continue;
        }
        match counts.iter_mut().find(|(i, _)| *i == index) {
            Some((_, n)) => *n += 1,
            None => counts.push((index, 1)),
        }
    }
    for (index, n) in counts {
        if n >= RESERVE_FROM {
            candidates.entry(index).or_default().reserve(n);
        }
    }
}

/// Records that `id` has `value` in `index`: at the end of the change when the value is empty
/// (see [`Step::empty`]), at once otherwise.
fn add_candidate(
    candidates: &mut FastMap<IndexId, IndexCandidates>,
    step: &mut Step,
    index: IndexId,
    value: &[u8],
    id: ObjectId,
) {
    if value.is_empty() {
        step.empty.push((index, id));
    } else {
        candidates.entry(index).or_default().insert(value, id);
    }
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
    }
    if let Some(old) = old {
        changed.index(index, old);
    }
    if let Some(new) = new {
        changed.index(index, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
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
    fn many_objects_gaining_an_empty_value_in_one_commit_are_its_candidates_if_they_keep_it() {
        let mut r = Replica::new(Tid(0));
        let (mut writes, mut indices) = (Vec::new(), Vec::new());
        for o in 1..=100 {
            writes.push(write(o, 1, Some(b"x")));
            indices.push(index(o, 1, Some(b"")));
        }
        // Object 60 loses the value again in a run of its own; object 50 is deleted.
        indices.push(index(60, 1, None));
        let mut c = commit(1, writes, indices);
        c.deletes.push(ObjectId(50));
        r.apply_commit(&c, None);
        let at = r.open_snapshot();
        let expected: Vec<ObjectId> = (1..=100)
            .filter(|o| *o != 50 && *o != 60)
            .map(ObjectId)
            .collect();
        assert_eq!(r.lookup(IndexId(1), b"", at), expected);
        r.close_snapshot(at);
        let candidates: usize = r.candidates.values().map(IndexCandidates::len).sum();
        assert_eq!(candidates, expected.len());
        // A few more join one by one.
        let c = commit(
            2,
            vec![write(101, 1, Some(b"x"))],
            vec![index(101, 1, Some(b""))],
        );
        r.apply_commit(&c, None);
        let at = r.open_snapshot();
        assert_eq!(r.lookup(IndexId(1), b"", at).len(), expected.len() + 1);
        r.close_snapshot(at);
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
    fn a_snapshot_leaves_candidates_only_for_the_states_it_keeps() {
        let object = |id: u64, indexed: bool| odb_wire::ObjectData {
            id: ObjectId(id),
            fields: vec![(FieldId(1), Bytes::from_static(b"x"))],
            indices: match indexed {
                true => vec![(IndexId(7), Bytes::new())],
                false => vec![],
            },
        };
        let mut r = Replica::new(Tid(1));
        r.apply_snapshot(vec![vec![object(1, true)].into()], Tid(2), None);
        // Object 1 was held and leaves the index; object 2 is sent twice and leaves it the
        // second time; object 3 joins it.
        let chunks = vec![
            vec![object(2, true), object(1, false)].into(),
            vec![object(2, false), object(3, true)].into(),
        ];
        r.apply_snapshot(chunks, Tid(3), None);
        let now = r.open_snapshot();
        assert_eq!(r.lookup(IndexId(7), b"", now), vec![ObjectId(3)]);
        let candidates: usize = r.candidates.values().map(IndexCandidates::len).sum();
        assert_eq!(
            candidates, 1,
            "no candidate is left for a state that is gone"
        );
    }

    #[test]
    fn a_subscription_completing_at_the_same_tid_is_invisible_to_open_snapshots() {
        let mut r = Replica::new(Tid(5));
        let snap = r.open_snapshot();
        let data = odb_wire::ObjectData {
            id: ObjectId(9),
            fields: vec![(FieldId(1), Bytes::from_static(b"z"))],
            indices: vec![(IndexId(7), Bytes::new())],
        };
        r.apply_snapshot(vec![vec![data].into()], Tid(5), None);
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
        assert!(r.older.is_empty());
        assert_eq!(r.object_count(), 1);
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
        assert_eq!(r.older.get(&ObjectId(1)).map(Vec::len), Some(2));
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
            &commit(
                1,
                vec![write(1, 1, Some(b"a"))],
                vec![index(1, 7, Some(b"x"))],
            ),
            Some(&mut keys),
        );
        assert!(changes(&keys, &[&field, &x]));
        let mut keys = ChangedKeys::default();
        r.apply_commit(
            &commit(2, vec![], vec![index(1, 7, Some(b"y"))]),
            Some(&mut keys),
        );
        assert!(changes(&keys, &[&x, &y]));
        let mut keys = ChangedKeys::default();
        r.apply_commit(&delete(3, 1), Some(&mut keys));
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

    /// A model of the replica: the complete state after each version.
    type State = BTreeMap<ObjectId, (BTreeMap<u32, Vec<u8>>, BTreeMap<u32, Vec<u8>>)>;

    #[test]
    fn random_changes_read_like_a_model_at_every_open_snapshot() {
        for seed in 1..=300u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut r = Replica::new(Tid(0));
            if next(3) == 0 {
                r.set_retain(next(4) as usize);
            }
            let mut state = State::new();
            let mut open: Vec<(SnapshotAt, State)> = Vec::new();
            for tid in 1..=60u64 {
                if next(6) == 0 {
                    // A subscription's data: some objects' complete states, in one or two
                    // chunks, possibly an id twice (the later state wins).
                    let mut objects = Vec::new();
                    for _ in 0..=next(3) {
                        let o = ObjectId(next(6));
                        let fields: BTreeMap<u32, Vec<u8>> = (0..=next(2))
                            .map(|_| (next(3) as u32, vec![next(3) as u8; next(30) as usize]))
                            .collect();
                        let indices: BTreeMap<u32, Vec<u8>> = (0..next(3))
                            .map(|_| (next(2) as u32, vec![b'k'; next(3) as usize]))
                            .collect();
                        let value = |v: &Vec<u8>| Bytes::from(v.clone());
                        objects.push(odb_wire::ObjectData {
                            id: o,
                            fields: fields
                                .iter()
                                .map(|(f, v)| (FieldId(*f), value(v)))
                                .collect(),
                            indices: indices
                                .iter()
                                .map(|(i, v)| (IndexId(*i), value(v)))
                                .collect(),
                        });
                        state.insert(o, (fields, indices));
                    }
                    let later = objects.split_off(next(objects.len() as u64 + 1) as usize);
                    r.apply_snapshot(vec![objects.into(), later.into()], Tid(tid), None);
                } else {
                    let mut commit = CommitData {
                        tid: Tid(tid),
                        ..CommitData::default()
                    };
                    for _ in 0..next(4) {
                        let o = ObjectId(next(6));
                        let entry = state.entry(o).or_default();
                        for _ in 0..=next(2) {
                            let f = next(3) as u32;
                            let value =
                                (next(4) > 0).then(|| vec![next(3) as u8; next(30) as usize]);
                            commit.writes.push(FieldWrite {
                                object: o,
                                field: FieldId(f),
                                value: value.clone().map(Bytes::from),
                            });
                            match value {
                                Some(v) => entry.0.insert(f, v),
                                None => entry.0.remove(&f),
                            };
                        }
                        if next(2) == 0 {
                            let i = next(2) as u32;
                            let value = (next(4) > 0).then(|| vec![b'k'; next(3) as usize]);
                            commit.index_writes.push(IndexWrite {
                                object: o,
                                index: IndexId(i),
                                value: value.clone().map(Bytes::from),
                            });
                            match value {
                                Some(v) => entry.1.insert(i, v),
                                None => entry.1.remove(&i),
                            };
                        }
                    }
                    if next(5) == 0 {
                        let o = ObjectId(next(6));
                        if state.remove(&o).is_some() {
                            commit.deletes.push(o);
                        }
                    }
                    state.retain(|_, (f, i)| !f.is_empty() || !i.is_empty());
                    r.apply_commit(&commit, None);
                }
                if next(3) == 0 {
                    open.push((r.open_snapshot(), state.clone()));
                }
                if !open.is_empty() && next(3) == 0 {
                    let (at, _) = open.swap_remove(next(open.len() as u64) as usize);
                    r.close_snapshot(at);
                }
                let now = (r.open_snapshot(), state.clone());
                for (at, expected) in open.iter().chain([&now]) {
                    for o in 0..6 {
                        let o = ObjectId(o);
                        let model = expected.get(&o);
                        for f in 0..3 {
                            let want = model.and_then(|m| m.0.get(&f)).map(Vec::as_slice);
                            assert_eq!(r.field(o, FieldId(f), *at), want, "seed {seed}");
                        }
                    }
                    for i in 0..2u32 {
                        for len in 0..3 {
                            let value = vec![b'k'; len];
                            let want: Vec<ObjectId> = expected
                                .iter()
                                .filter(|(_, m)| m.1.get(&i) == Some(&value))
                                .map(|(o, _)| *o)
                                .collect();
                            let got = r.lookup(IndexId(i), &value, *at);
                            assert_eq!(got, want, "seed {seed}");
                        }
                    }
                }
                r.close_snapshot(now.0);
            }
            for (at, _) in open.drain(..) {
                r.close_snapshot(at);
            }
            r.set_retain(0);
            // Nothing but the current state is left.
            assert!(r.older.is_empty(), "seed {seed}");
            assert!(r.history.is_empty(), "seed {seed}");
            assert_eq!(r.object_count(), state.len(), "seed {seed}");
            let candidates: usize = r.candidates.values().map(IndexCandidates::len).sum();
            let members: usize = state.values().map(|m| m.1.len()).sum();
            assert_eq!(candidates, members, "seed {seed}");
        }
    }
}
