//! The data: objects with their fields and index memberships, the index sets, and the tid of the
//! last write of every conflict key. Also where commits are validated and applied.
//!
//! A commit is validated completely before anything changes, so a rejected commit changes nothing
//! and consumes no tid. Validation covers ids and types, the size limits of [`Limits`], and the
//! conflict history, which is kept for a bounded number of tids (see [`history`]): a commit whose
//! base tid is older than that gets `TooOld`.
//!
//! Objects (in the compact form of [`record`]) and index values ([`index`]) are kept in dense
//! [`table`]s. A commit is first grouped by object and checked ([`plan`]), then checked against
//! the [`limits`], then applied ([`apply`]).

use crate::registry::Registry;
use bytes::Bytes;
use odb_wire::hash::{FastBuild, FastMap};
use odb_wire::{
    CommitOutcome, CommitRequest, FieldId, IndexId, Key, ObjectData, ObjectId, Tid, TypeId,
};

mod apply;
mod history;
mod index;
mod limits;
mod member_set;
mod plan;
mod record;
mod table;

pub(crate) use apply::{Applied, Touched};
use history::History;
use index::{IndexValue, IndexValues};
pub(crate) use limits::Limits;
pub(crate) use record::Obj;
use record::Src;
use table::{Keyed, Table};

/// One object in plain form, as it is loaded and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Its type.
    pub ty: TypeId,
    /// Field values, sorted by field id.
    pub fields: Vec<(FieldId, Bytes)>,
    /// Index memberships with their values, sorted by index id.
    pub indices: Vec<(IndexId, Bytes)>,
}

/// A live object, as the object table holds it (the record holds the object's id).
#[derive(Debug)]
struct Live {
    obj: Obj,
}

/// The live objects, by id.
type Objects = Table<Live, FastBuild>;

impl Keyed for Live {
    type Key = ObjectId;

    fn key(&self) -> ObjectId {
        self.obj.id()
    }
}

/// All data of the database, and its conflict history.
#[derive(Default)]
pub(crate) struct Store {
    objects: Objects,
    members: IndexValues,
    history: History,
    limits: Limits,
    tid: Tid,
    /// While set, the state before its first change of every object changed since the journal
    /// was last cleared, so that those changes can be stored or undone.
    journal: Option<FastMap<ObjectId, Option<Obj>>>,
    /// Buffers a commit's apply reuses from one commit to the next.
    reused: apply::Reused,
}

fn invalid(reason: String) -> CommitOutcome {
    CommitOutcome::Invalid {
        reason,
        limit: None,
    }
}

impl Store {
    /// The tid of the last commit (`Tid(0)` for the empty database).
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// The oldest base tid whose reads can still be validated.
    pub fn horizon(&self) -> Tid {
        self.history.horizon()
    }

    /// The tid that last wrote a key; `Tid(0)` if it was never written, or not since the
    /// horizon.
    pub fn last_write(&self, key: &Key) -> Tid {
        let live = match key {
            Key::Field(o, f) => self.live(*o).and_then(|r| r.field_stamp(*f)),
            Key::Index(i, v) => self.members.get(&self.objects, *i, v).map(|e| e.stamp()),
        };
        let stamp = live.unwrap_or_default().max(self.history.last_write(key));
        if self.history.counts(stamp) {
            stamp
        } else {
            Tid(0)
        }
    }

    /// Sets the limits enforced from now on; a shorter conflict history takes effect at once.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.history.set_retained(limits.conflict_history, self.tid);
    }

    /// Forgets the whole conflict history, so that only commits based on the current tid or
    /// later are accepted. For a database loaded without its history.
    pub fn forget_conflict_history(&mut self) {
        self.history.forget_all(self.tid);
    }

    /// How many objects are live.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// How many distinct (index, value) pairs have members.
    pub fn index_value_count(&self) -> usize {
        self.members.len()
    }

    /// Bytes of every live object's compact record; walks every object.
    pub fn record_bytes(&self) -> usize {
        self.objects.iter().map(|live| live.obj.size()).sum()
    }

    /// How many conflict keys have a stamp in the conflict history.
    pub fn conflict_stamps(&self) -> usize {
        self.history.len()
    }

    /// A store holding loaded objects at tid `tid`, with an empty conflict history (so only
    /// commits based on `tid` or later are accepted).
    pub fn loaded(tid: Tid, objects: impl IntoIterator<Item = (ObjectId, Record)>) -> Store {
        let mut store = Store {
            tid,
            ..Store::default()
        };
        store.forget_conflict_history();
        for (id, record) in objects {
            let obj = Obj::from_plain(id, record.ty, &record.fields, &record.indices, Tid(0));
            store.put(id, obj);
            store.link(id);
        }
        store
    }

    /// Starts (or stops) journaling changed objects; see [`Store::changes`].
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on.then(FastMap::default);
    }

    /// Whether an object changed since the journal was last cleared.
    pub fn has_changes(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// The current contents (`None`: deleted) of every object changed since the journal was
    /// last cleared, in ascending id order. The journal is kept until [`Store::clear_journal`]
    /// or [`Store::roll_back`].
    pub fn changes(&self) -> Vec<(ObjectId, Option<Record>)> {
        let mut changes: Vec<(ObjectId, Option<Record>)> = self
            .journal
            .iter()
            .flat_map(|j| j.keys())
            .map(|id| (*id, self.current(*id)))
            .collect();
        changes.sort_by_key(|(id, _)| *id);
        changes
    }

    /// The current contents of an object as it is stored (`None`: it does not exist).
    pub fn current(&self, id: ObjectId) -> Option<Record> {
        self.live(id).map(|r| Record {
            ty: r.ty(),
            fields: r.field_list(),
            indices: r.index_list(),
        })
    }

    /// Forgets the journal: its changes are stored.
    pub fn clear_journal(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.clear();
        }
    }

    /// Restores every object changed since the journal was last cleared, and its index
    /// memberships, to its state then. The tid and the conflict history are kept: tids are not
    /// reused, and the stamps of undone commits only cause spurious conflicts, never missed ones.
    pub fn roll_back(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        for (id, before) in journal {
            // Index values read their value from their members' records: the object leaves
            // them before its record goes.
            self.unlink(id);
            let now = self.objects.remove(&id).map(|l| l.obj);
            if let Some(now) = &now {
                for slot in now.field_slots() {
                    self.history.live_drop(slot.stamp);
                }
            }
            let restored = match (before, &now) {
                (Some(before), Some(now)) => Some(merge_stamps(&before, now)),
                (before, _) => before,
            };
            if let Some(now) = &now {
                for slot in now.field_slots() {
                    let kept = restored.as_ref().and_then(|r| r.field_stamp(slot.id));
                    if kept.is_none() {
                        self.history.keep(Key::Field(id, slot.id), slot.stamp);
                    }
                }
            }
            if let Some(restored) = restored {
                for slot in restored.field_slots() {
                    self.history.live_add(slot.stamp);
                }
                self.put(id, restored);
                self.link(id);
            }
        }
        self.journal = Some(FastMap::default());
    }

    /// Adds live object `o` to the member sets of its index values (outside a commit: a new
    /// index value takes over a remembered stamp).
    fn link(&mut self, o: ObjectId) {
        let Some(live) = self.objects.get(&o) else {
            return;
        };
        for (index, value) in live.obj.indices() {
            let near = Some(&live.obj);
            if let Some(entry) = self.members.get_mut(&self.objects, near, index, value) {
                entry.insert(o);
                continue;
            }
            let stamp = self.history.take_index(index, value).unwrap_or_default();
            self.history.live_add(stamp);
            add_value(
                &mut self.members,
                &self.objects,
                value,
                IndexValue::new(index, value, stamp, o),
            );
        }
    }

    /// Removes live object `o` from the member sets of its index values (outside a commit: an
    /// index value left empty keeps its stamp in the history).
    fn unlink(&mut self, o: ObjectId) {
        let Some(live) = self.objects.get(&o) else {
            return;
        };
        for (index, value) in live.obj.indices() {
            let near = Some(&live.obj);
            let Some(entry) = self.members.get_mut(&self.objects, near, index, value) else {
                continue;
            };
            if entry.remove(o) {
                let stamp = entry.stamp();
                self.members.remove(&self.objects, near, index, value);
                self.history.live_drop(stamp);
                self.history
                    .keep(Key::Index(index, Bytes::copy_from_slice(value)), stamp);
            }
        }
    }

    /// A live object.
    pub fn record(&self, id: ObjectId) -> Option<&Obj> {
        self.live(id)
    }

    fn live(&self, id: ObjectId) -> Option<&Obj> {
        self.objects.get(&id).map(|l| &l.obj)
    }

    /// Adds or replaces a live object.
    fn put(&mut self, id: ObjectId, obj: Obj) {
        debug_assert_eq!(obj.id(), id, "a record holds its own id");
        if let Err((table::Full, _)) = self.objects.insert(Live { obj }) {
            // Unreachable: a commit is refused before any change unless the table has room
            // for every object it creates (`check_room`), a rollback only restores objects
            // it removed, and a loaded store holds what fitted before.
            debug_assert!(false, "the object table is full although validation passed");
            tracing::error!(object = id.0, "the object table is full; object dropped");
        }
    }

    /// The objects whose `index` currently has exactly `value`, in ascending id order.
    pub fn members(&self, index: IndexId, value: &Bytes) -> impl Iterator<Item = ObjectId> + '_ {
        self.members
            .get(&self.objects, index, value)
            .into_iter()
            .flat_map(|e| e.members())
    }

    /// The objects whose `index` currently has exactly `value` and whose ids lie from `lo` to
    /// `hi` (inclusive), in ascending id order.
    pub fn members_in(
        &self,
        index: IndexId,
        value: &[u8],
        lo: ObjectId,
        hi: ObjectId,
    ) -> impl Iterator<Item = ObjectId> + '_ {
        self.members
            .get(&self.objects, index, value)
            .into_iter()
            .flat_map(move |e| e.members_in(lo, hi))
    }

    /// How many objects `index` currently has with exactly `value`.
    pub fn member_count(&self, index: IndexId, value: &[u8]) -> usize {
        self.members
            .get(&self.objects, index, value)
            .map_or(0, |e| e.member_count())
    }

    /// The complete current data of a live object.
    pub fn object_data(&self, id: ObjectId) -> Option<ObjectData> {
        self.live(id).map(|r| ObjectData {
            id,
            fields: r.field_list(),
            indices: r.index_list(),
        })
    }

    /// Appends the complete current data of a live object to `out`, encoded for a
    /// subscription's chunks; returns whether the object is live.
    pub fn encode_object(&self, id: ObjectId, out: &mut odb_wire::EncodedObjects) -> bool {
        let Some(r) = self.live(id) else {
            return false;
        };
        out.push(id, r.fields(), r.indices());
        true
    }

    /// Validates and, if it is valid and conflict-free, applies a commit at the next tid.
    /// On failure nothing changed and the outcome says why.
    pub fn commit(
        &mut self,
        registry: &Registry,
        req: &CommitRequest,
    ) -> Result<Applied, CommitOutcome> {
        // Conflicts first: a write to an object deleted after the snapshot is a conflict on its
        // existence (which the client read), not a malformed request.
        self.check_conflicts(req)?;
        let plan = self.plan(registry, req)?;
        self.check_sizes(req, &plan)?;
        self.check_room(req, &plan)?;
        Ok(self.apply(registry, &plan))
    }

    /// The last check before anything changes: the tables can take every object and index
    /// value the commit may add, so that applying it cannot fail half-way. [`check_sizes`]
    /// already refuses a commit over the store's size limit, so a failure here is a broken
    /// invariant: a debug build stops, a release build refuses the whole commit, which changes
    /// nothing, and goes on serving.
    ///
    /// [`check_sizes`]: Store::check_sizes
    fn check_room(&self, req: &CommitRequest, plan: &plan::Plan<'_>) -> Result<(), CommitOutcome> {
        // As in `check_sizes`: each created object, and each index write, adds at most one
        // entry to a table.
        let created = plan.created();
        let values = created.saturating_add(req.index_writes.len());
        let (objects_room, values_room) = (self.objects.room(), self.members.room());
        if created <= objects_room && values <= values_room {
            return Ok(());
        }
        debug_assert!(
            false,
            "the store's tables cannot take a commit that passed validation"
        );
        tracing::error!(
            created,
            values,
            objects_room,
            values_room,
            "a commit passed validation but the store's tables cannot take it; refused"
        );
        Err(invalid(format!(
            "internal error: the store cannot take the {created} objects and up to {values} \
             index values this commit adds, although it passed validation (room for \
             {objects_room} objects and {values_room} index values); nothing of the commit was \
             applied"
        )))
    }

    /// Fails if anything the transaction read was written after its base tid.
    fn check_conflicts(&self, req: &CommitRequest) -> Result<(), CommitOutcome> {
        if req.base_tid > self.tid {
            return Err(invalid(format!(
                "base tid {} is newer than the server's current tid {}",
                req.base_tid, self.tid
            )));
        }
        let horizon = self.horizon();
        if req.base_tid < horizon {
            return Err(CommitOutcome::TooOld {
                base_tid: req.base_tid,
                horizon,
            });
        }
        let field_keys = req.reads.iter().map(|&(o, f)| Key::Field(o, f));
        let index_keys = req
            .index_reads
            .iter()
            .map(|(i, v)| Key::Index(*i, v.clone()));
        for key in field_keys.chain(index_keys) {
            let written_at = self.last_write(&key);
            if written_at > req.base_tid {
                return Err(CommitOutcome::Conflict { key, written_at });
            }
        }
        Ok(())
    }
}

/// Adds a new index value, `value`, to `members`; its member is in `objects` already.
fn add_value(members: &mut IndexValues, objects: &Objects, value: &[u8], entry: IndexValue) {
    if let Err((table::Full, _)) = members.add(objects, value, entry) {
        // Unreachable: a commit is refused before any change unless the table has room for
        // every index value it may add (`check_room`).
        debug_assert!(
            false,
            "the index value table is full although validation passed"
        );
        tracing::error!("the index value table is full; index value dropped");
    }
}

/// `before` with the newer stamp of each field in `now`; fields only `now` has stay remembered
/// without a value.
fn merge_stamps(before: &Obj, now: &Obj) -> Obj {
    let mut fields: Vec<(FieldId, Tid, Src<'_>)> = before
        .field_slots()
        .map(|s| {
            let stamp = now.field_stamp(s.id).map_or(s.stamp, |t| t.max(s.stamp));
            (s.id, stamp, s.value.map_or(Src::Absent, Src::Value))
        })
        .collect();
    for s in now.field_slots() {
        if before.field_stamp(s.id).is_none() {
            fields.push((s.id, s.stamp, Src::Absent));
        }
    }
    fields.sort_by_key(|(f, _, _)| *f);
    let indices: Vec<(IndexId, &[u8])> = before.indices().collect();
    Obj::build(
        before.id(),
        before.ty(),
        fields.into_iter(),
        indices.into_iter(),
    )
}

#[cfg(test)]
mod tests;
