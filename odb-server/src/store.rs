//! The data: objects with their fields and index memberships, the index sets, and the tid of the
//! last write of every conflict key. Also where commits are validated and applied.
//!
//! A commit is validated completely before anything changes, so a rejected commit changes nothing
//! and consumes no tid. Validation covers ids and types, the size limits of [`Limits`], and the
//! conflict history, which is kept for a bounded number of tids (see [`history`]): a commit whose
//! base tid is older than that gets `TooOld`.

use crate::registry::Registry;
use bytes::Bytes;
use odb_wire::hash::{fast_map, FastBuild, FastMap};
use odb_wire::{
    CommitOutcome, CommitRequest, FieldId, IndexId, Key, ObjectData, ObjectId, Tid, TypeId,
};
use std::borrow::Cow;
use std::collections::BTreeMap;

mod history;
mod index;
mod limits;
mod record;
mod table;

use history::History;
use index::{index_key, IndexValue, IndexValues};
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

/// What a successful commit changed, as needed to push it to subscribers.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The commit's tid.
    pub tid: Tid,
    /// Every object the commit wrote, re-indexed or deleted.
    pub objects: BTreeMap<ObjectId, Touched>,
}

/// How a commit touched one object.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// The object did not exist before this commit.
    pub created: bool,
    /// Its index memberships before the commit.
    pub old_indices: Vec<(IndexId, Bytes)>,
    /// The last value the commit wrote to each field (`None`: removed).
    pub writes: BTreeMap<FieldId, Option<Bytes>>,
}

/// A live object with its id, as the object table holds it.
#[derive(Debug)]
struct Live {
    id: ObjectId,
    obj: Obj,
}

impl Keyed for Live {
    type Key = ObjectId;

    fn key(&self) -> &ObjectId {
        &self.id
    }
}

/// All data of the database, and its conflict history.
#[derive(Default)]
pub(crate) struct Store {
    objects: Table<Live, FastBuild>,
    members: IndexValues,
    history: History,
    limits: Limits,
    tid: Tid,
    /// While set, the state before its first change of every object changed since the journal
    /// was last cleared, so that those changes can be stored or undone.
    journal: Option<FastMap<ObjectId, Option<Obj>>>,
}

/// What one commit does to one object, collected before the object is rebuilt.
struct Draft<'r> {
    ty: TypeId,
    /// The last write of each field, sorted by field id.
    fields: Vec<(FieldId, Option<&'r [u8]>)>,
    /// Index values after the commit as far as it sets them, sorted by index id.
    indices: Vec<(IndexId, Option<Cow<'r, [u8]>>)>,
    deleted: bool,
}

fn invalid(reason: String) -> CommitOutcome {
    CommitOutcome::Invalid { reason }
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
            Key::Index(i, v) => {
                let mut k = Vec::with_capacity(4 + v.len());
                index_key(&mut k, *i, v);
                self.members.get(&k[..]).map(|e| e.stamp)
            }
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
            let obj = Obj::from_plain(record.ty, &record.fields, &record.indices, Tid(0));
            store.link(id, &obj);
            store.put(id, obj);
        }
        store
    }

    /// Starts (or stops) journaling changed objects; see [`Store::take_changes`].
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
            .map(|id| {
                let record = self.live(*id).map(|r| Record {
                    ty: r.ty(),
                    fields: r.field_list(),
                    indices: r.index_list(),
                });
                (*id, record)
            })
            .collect();
        changes.sort_by_key(|(id, _)| *id);
        changes
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
            let now = self.objects.remove(&id).map(|l| l.obj);
            if let Some(now) = &now {
                self.unlink(id, now);
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
                self.link(id, &restored);
                self.put(id, restored);
            }
        }
        self.journal = Some(FastMap::default());
    }

    /// Adds an object to the member sets of its index values (outside a commit: a new index
    /// value takes over a remembered stamp).
    fn link(&mut self, o: ObjectId, obj: &Obj) {
        let mut k = Vec::new();
        for (index, value) in obj.indices() {
            index_key(&mut k, index, value);
            if let Some(entry) = self.members.get_mut(&k[..]) {
                entry.members.insert(o);
                continue;
            }
            let stamp = self
                .history
                .take(&Key::Index(index, Bytes::copy_from_slice(value)))
                .unwrap_or_default();
            self.history.live_add(stamp);
            self.add_value(IndexValue::new(&k, stamp, o));
        }
    }

    /// Removes an object from the member sets of its index values (outside a commit: an index
    /// value left empty keeps its stamp in the history).
    fn unlink(&mut self, o: ObjectId, obj: &Obj) {
        let mut k = Vec::new();
        for (index, value) in obj.indices() {
            index_key(&mut k, index, value);
            let Some(entry) = self.members.get_mut(&k[..]) else {
                continue;
            };
            if entry.members.remove(o) {
                let stamp = entry.stamp;
                self.members.remove(&k[..]);
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
        if let Err((table::Full, _)) = self.objects.insert(Live { id, obj }) {
            // Validation keeps the object count below the table's limit.
            tracing::error!(object = id.0, "the object table is full; object dropped");
        }
    }

    /// Adds a new index value.
    fn add_value(&mut self, value: IndexValue) {
        add_value(&mut self.members, value);
    }

    /// The objects whose `index` currently has exactly `value`, in ascending id order.
    pub fn members(&self, index: IndexId, value: &Bytes) -> impl Iterator<Item = ObjectId> + '_ {
        let mut k = Vec::with_capacity(4 + value.len());
        index_key(&mut k, index, value);
        self.members
            .get(&k[..])
            .into_iter()
            .flat_map(|e| e.members.iter())
    }

    /// The complete current data of a live object.
    pub fn object_data(&self, id: ObjectId) -> Option<ObjectData> {
        self.live(id).map(|r| ObjectData {
            id,
            fields: r.field_list(),
            indices: r.index_list(),
        })
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
        let created = self.validate(registry, req)?;
        self.check_sizes(req, &created)?;
        Ok(self.apply(registry, req, created))
    }

    /// Checks that every id is known and every write targets a live (or created) object of the
    /// right type. Returns the objects this commit creates, with their types.
    fn validate(
        &self,
        registry: &Registry,
        req: &CommitRequest,
    ) -> Result<FastMap<ObjectId, TypeId>, CommitOutcome> {
        if req.base_tid > self.tid {
            return Err(invalid(format!(
                "base tid {} is newer than the server's current tid {}",
                req.base_tid, self.tid
            )));
        }
        let mut created: FastMap<ObjectId, TypeId> = FastMap::default();
        // Writes usually come grouped by object: remember the last one found live.
        let mut last_live: Option<ObjectId> = None;
        for w in &req.writes {
            let Some(ty) = registry.exists_field_type(w.field) else {
                continue;
            };
            if w.value.is_none() {
                return Err(invalid(format!(
                    "object {}: the existence field cannot be removed; delete the object instead",
                    w.object
                )));
            }
            if last_live == Some(w.object) {
                continue;
            }
            if self.objects.position(&w.object).is_some() {
                last_live = Some(w.object);
                continue;
            }
            if let Some(previous) = created.insert(w.object, ty) {
                if previous != ty {
                    return Err(invalid(format!(
                        "object {} is created as two types ({previous} and {ty})",
                        w.object
                    )));
                }
            }
        }
        let type_of = |o: ObjectId| {
            self.live(o)
                .map(|r| r.ty())
                .or_else(|| created.get(&o).copied())
        };
        let missing = |o: ObjectId, what: &str| {
            invalid(format!(
                "{what} object {o}, which does not exist and is not created by this commit"
            ))
        };
        let mut last: Option<(ObjectId, TypeId)> = None;
        for w in &req.writes {
            let Some(field_ty) = registry.field_type(w.field) else {
                return Err(invalid(format!("unknown field id {}", w.field)));
            };
            let ty = match last {
                Some((o, ty)) if o == w.object => ty,
                _ => {
                    let ty = type_of(w.object).ok_or_else(|| missing(w.object, "write to"))?;
                    last = Some((w.object, ty));
                    ty
                }
            };
            if field_ty != ty {
                return Err(invalid(format!(
                    "field {} belongs to type {field_ty}, but object {} is of type {ty}",
                    w.field, w.object
                )));
            }
        }
        for w in &req.index_writes {
            let Some(index_ty) = registry.index_type(w.index) else {
                return Err(invalid(format!("unknown index id {}", w.index)));
            };
            let ty = type_of(w.object).ok_or_else(|| missing(w.object, "index write to"))?;
            if index_ty != ty {
                return Err(invalid(format!(
                    "index {} belongs to type {index_ty}, but object {} is of type {ty}",
                    w.index, w.object
                )));
            }
            let all_index = registry.type_info(ty).map(|t| t.all_index);
            if all_index == Some(w.index) && w.value.as_ref().is_none_or(|v| !v.is_empty()) {
                return Err(invalid(format!(
                    "index {} lists all objects of type {ty} and is maintained by the server",
                    w.index
                )));
            }
        }
        for &o in &req.deletes {
            type_of(o).ok_or_else(|| missing(o, "delete of"))?;
        }
        if let Some((_, f)) = req
            .reads
            .iter()
            .find(|(_, f)| registry.field_type(*f).is_none())
        {
            return Err(invalid(format!("read of unknown field id {f}")));
        }
        if let Some((i, _)) = req
            .index_reads
            .iter()
            .find(|(i, _)| registry.index_type(*i).is_none())
        {
            return Err(invalid(format!("lookup in unknown index id {i}")));
        }
        Ok(created)
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

    /// Applies a validated commit at the next tid, stamping every key it changes.
    fn apply(
        &mut self,
        registry: &Registry,
        req: &CommitRequest,
        created: FastMap<ObjectId, TypeId>,
    ) -> Applied {
        let tid = self.tid.next();
        self.tid = tid;
        // Every touched object in the order first touched, and where each one is. Writes usually
        // come grouped by object, so the last lookup is remembered.
        let mut entries: Vec<Entry<'_>> = Vec::new();
        let mut slots: FastMap<ObjectId, usize> = fast_map(0);
        let touched_ids = req
            .writes
            .iter()
            .map(|w| w.object)
            .chain(req.index_writes.iter().map(|w| w.object))
            .chain(req.deletes.iter().copied());
        let mut last: Option<ObjectId> = None;
        for o in touched_ids {
            if last == Some(o) {
                continue;
            }
            last = Some(o);
            if slots.is_empty() {
                slots.reserve(created.len().max(1));
            }
            let std::collections::hash_map::Entry::Vacant(slot) = slots.entry(o) else {
                continue;
            };
            slot.insert(entries.len());
            let live = self.objects.get(&o).map(|l| &l.obj);
            if let Some(journal) = &mut self.journal {
                journal.entry(o).or_insert_with(|| live.cloned());
            }
            let created_ty = created.get(&o).copied();
            let touched = Touched {
                created: created_ty.is_some(),
                old_indices: live.map(Obj::index_list).unwrap_or_default(),
                writes: BTreeMap::new(),
            };
            let ty = match (live, created_ty) {
                (Some(r), _) => Some(r.ty()),
                (None, ty) => ty,
            };
            let draft = ty.map(|ty| {
                let mut draft = Draft {
                    ty,
                    fields: Vec::new(),
                    indices: Vec::new(),
                    deleted: false,
                };
                if created_ty.is_some() {
                    if let Some(info) = registry.type_info(ty) {
                        draft
                            .indices
                            .push((info.all_index, Some(Cow::Borrowed(&[][..]))));
                    }
                }
                draft
            });
            entries.push(Entry {
                id: o,
                touched,
                draft,
            });
        }
        let mut last: Option<(ObjectId, usize)> = None;
        let mut find = |o: ObjectId| -> Option<usize> {
            if let Some((lo, p)) = last {
                if lo == o {
                    return Some(p);
                }
            }
            let p = *slots.get(&o)?;
            last = Some((o, p));
            Some(p)
        };
        // Index values stamped by this commit, in the order they changed.
        let mut stamped: Vec<(IndexId, Cow<'_, [u8]>)> = Vec::new();
        for e in &entries {
            let Some(draft) = &e.draft else { continue };
            if e.touched.created {
                for (i, v) in &draft.indices {
                    if let Some(v) = v {
                        stamped.push((*i, v.clone()));
                    }
                }
            }
        }
        for w in &req.writes {
            let Some(e) = find(w.object).and_then(|p| entries.get_mut(p)) else {
                continue;
            };
            let Some(draft) = &mut e.draft else { continue };
            let value = w.value.as_deref();
            match draft.fields.last() {
                Some((f, _)) if *f < w.field => draft.fields.push((w.field, value)),
                _ => match draft.fields.binary_search_by_key(&w.field, |(f, _)| *f) {
                    Ok(p) => draft.fields[p].1 = value,
                    Err(p) => draft.fields.insert(p, (w.field, value)),
                },
            }
            e.touched.writes.insert(w.field, w.value.clone());
        }
        for w in &req.index_writes {
            let Some(e) = find(w.object).and_then(|p| entries.get_mut(p)) else {
                continue;
            };
            let Some(draft) = &mut e.draft else { continue };
            let live = self.live(w.object);
            let new = w.value.as_deref();
            let pos = draft.indices.binary_search_by_key(&w.index, |(i, _)| *i);
            let old: Option<&[u8]> = match pos {
                Ok(p) => draft.indices[p].1.as_deref(),
                Err(_) => live.and_then(|r| r.index(w.index)),
            };
            if old == new {
                continue;
            }
            if let Some(old) = old {
                stamped.push((w.index, Cow::Owned(old.to_vec())));
            }
            if let Some(new) = new {
                stamped.push((w.index, Cow::Borrowed(new)));
            }
            let value = new.map(Cow::Borrowed);
            match pos {
                Ok(p) => draft.indices[p].1 = value,
                Err(p) => draft.indices.insert(p, (w.index, value)),
            }
        }
        for o in &req.deletes {
            let Some(e) = find(*o).and_then(|p| entries.get_mut(p)) else {
                continue;
            };
            let Some(draft) = &mut e.draft else { continue };
            if draft.deleted {
                continue;
            }
            draft.deleted = true;
            let live = self.live(*o);
            let mut current: Vec<(IndexId, Vec<u8>)> = live
                .map(|r| r.indices().map(|(i, v)| (i, v.to_vec())).collect())
                .unwrap_or_default();
            for (i, v) in &draft.indices {
                current.retain(|(ci, _)| ci != i);
                if let Some(v) = v {
                    current.push((*i, v.to_vec()));
                }
            }
            for (i, v) in current {
                stamped.push((i, Cow::Owned(v)));
            }
        }
        let mut k = Vec::new();
        // Leave old index values first, so that a value left and joined in one commit keeps a
        // consistent member set.
        for e in &entries {
            let Some(draft) = &e.draft else { continue };
            let o = e.id;
            let Some(live) = self.objects.get(&o).map(|l| &l.obj) else {
                continue;
            };
            if !draft.deleted && draft.indices.is_empty() {
                continue;
            }
            for (i, v) in live.indices() {
                let stays = !draft.deleted
                    && match draft.indices.binary_search_by_key(&i, |(di, _)| *di) {
                        Ok(p) => draft.indices[p].1.as_deref() == Some(v),
                        Err(_) => true,
                    };
                if stays {
                    continue;
                }
                index_key(&mut k, i, v);
                if let Some(entry) = self.members.get_mut(&k[..]) {
                    if entry.members.remove(o) {
                        let stamp = entry.stamp;
                        self.members.remove(&k[..]);
                        self.history.live_drop(stamp);
                    }
                }
            }
        }
        let new_objects = entries
            .iter()
            .filter(|e| e.draft.is_some() && e.touched.created)
            .count();
        self.objects.reserve(new_objects);
        let mut objects: Vec<(ObjectId, Touched)> = Vec::with_capacity(entries.len());
        for Entry {
            id: o,
            touched,
            draft,
        } in entries
        {
            objects.push((o, touched));
            let Some(draft) = draft else { continue };
            if draft.deleted {
                let live = self.objects.get(&o).map(|l| &l.obj);
                if let Some(live) = live {
                    for slot in live.field_slots() {
                        self.history.live_drop(slot.stamp);
                        let written = draft
                            .fields
                            .binary_search_by_key(&slot.id, |(f, _)| *f)
                            .is_ok();
                        let stamp = if slot.value.is_some() || written {
                            tid
                        } else {
                            slot.stamp
                        };
                        self.history.keep(Key::Field(o, slot.id), stamp);
                    }
                }
                for (f, _) in &draft.fields {
                    if live.and_then(|r| r.field_stamp(*f)).is_none() {
                        self.history.keep(Key::Field(o, *f), tid);
                    }
                }
                self.objects.remove(&o);
                continue;
            }
            if let Some(pos) = self.objects.position(&o) {
                let Some(live) = self.objects.at(pos).map(|l| &l.obj) else {
                    continue;
                };
                let obj = rebuild(&mut self.history, o, Some(live), &draft, tid);
                join_indices(&mut self.members, &mut k, o, Some(live), &draft);
                if let Some(slot) = self.objects.at_mut(pos) {
                    slot.obj = obj;
                }
                continue;
            }
            let obj = rebuild(&mut self.history, o, None, &draft, tid);
            join_indices(&mut self.members, &mut k, o, None, &draft);
            self.put(o, obj);
        }
        for (i, v) in stamped {
            index_key(&mut k, i, &v);
            match self.members.get_mut(&k[..]) {
                Some(entry) => {
                    if entry.stamp != tid {
                        self.history.live_restamp(entry.stamp, tid);
                        entry.stamp = tid;
                        self.history
                            .take(&Key::Index(i, Bytes::copy_from_slice(&v)));
                    }
                }
                None => self
                    .history
                    .keep(Key::Index(i, Bytes::copy_from_slice(&v)), tid),
            }
        }
        self.history.record(tid);
        Applied {
            tid,
            objects: objects.into_iter().collect(),
        }
    }
}

/// One object a commit touches, while the commit is applied.
struct Entry<'r> {
    id: ObjectId,
    touched: Touched,
    /// What the commit does to it; `None` if it neither exists nor is created.
    draft: Option<Draft<'r>>,
}

/// Adds `o` to the member sets of the index values `draft` gives it that `live` (its state
/// before the commit) did not have.
fn join_indices(
    members: &mut IndexValues,
    k: &mut Vec<u8>,
    o: ObjectId,
    live: Option<&Obj>,
    draft: &Draft<'_>,
) {
    for (i, v) in &draft.indices {
        let Some(v) = v else { continue };
        let joins = live.is_none_or(|r| r.index(*i) != Some(&v[..]));
        if !joins {
            continue;
        }
        index_key(k, *i, v);
        match members.get_mut(&k[..]) {
            Some(entry) => entry.members.insert(o),
            None => add_value(members, IndexValue::new(k, Tid(0), o)),
        }
    }
}

/// Adds a new index value to `members`.
fn add_value(members: &mut IndexValues, value: IndexValue) {
    if let Err((table::Full, _)) = members.insert(value) {
        // Validation keeps the index value count below the table's limit.
        tracing::error!("the index value table is full; index value dropped");
    }
}

/// The fields of an object after a commit: its old slots merged with the commit's writes, in
/// field id order. Removed fields whose stamp no longer counts are dropped.
#[derive(Clone)]
struct MergedFields<'a, I: Iterator<Item = record::FieldSlot<'a>>> {
    old: std::iter::Peekable<I>,
    new: &'a [(FieldId, Option<&'a [u8]>)],
    tid: Tid,
    horizon: Tid,
}

impl<'a, I: Iterator<Item = record::FieldSlot<'a>>> Iterator for MergedFields<'a, I> {
    type Item = (FieldId, Tid, Src<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_old = match (self.old.peek(), self.new.first()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => x.id < y.0,
            };
            if take_old {
                let slot = self.old.next()?;
                match slot.value {
                    Some(v) => return Some((slot.id, slot.stamp, Src::Value(v))),
                    None if slot.stamp > self.horizon => {
                        return Some((slot.id, slot.stamp, Src::Absent))
                    }
                    None => continue,
                }
            }
            let (&(f, value), rest) = self.new.split_first()?;
            self.new = rest;
            if self.old.peek().is_some_and(|s| s.id == f) {
                self.old.next();
            }
            return Some((f, self.tid, value.map_or(Src::Absent, Src::Value)));
        }
    }
}

/// The index memberships of an object after a commit: its old ones merged with the commit's
/// index writes, in index id order.
#[derive(Clone)]
struct MergedIndices<'a, I: Iterator<Item = (IndexId, &'a [u8])>> {
    old: std::iter::Peekable<I>,
    new: &'a [(IndexId, Option<Cow<'a, [u8]>>)],
}

impl<'a, I: Iterator<Item = (IndexId, &'a [u8])>> Iterator for MergedIndices<'a, I> {
    type Item = (IndexId, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_old = match (self.old.peek(), self.new.first()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => x.0 < y.0,
            };
            if take_old {
                return self.old.next();
            }
            let ((i, v), rest) = self.new.split_first()?;
            self.new = rest;
            if self.old.peek().is_some_and(|x| x.0 == *i) {
                self.old.next();
            }
            if let Some(v) = v {
                return Some((*i, &v[..]));
            }
        }
    }
}

/// The object `o` after a commit at `tid` applied `draft` to it, counting the stamps it replaces
/// and adds.
fn rebuild(
    history: &mut History,
    o: ObjectId,
    live: Option<&Obj>,
    draft: &Draft<'_>,
    tid: Tid,
) -> Obj {
    let horizon = history.horizon();
    let mut old = live.into_iter().flat_map(Obj::field_slots).peekable();
    for &(f, _) in &draft.fields {
        while old.next_if(|s| s.id < f).is_some() {}
        match old.next_if(|s| s.id == f) {
            Some(slot) => history.live_restamp(slot.stamp, tid),
            None => history.live_add(tid),
        }
        history.take(&Key::Field(o, f));
    }
    let fields = MergedFields {
        old: live.into_iter().flat_map(Obj::field_slots).peekable(),
        new: &draft.fields,
        tid,
        horizon,
    };
    let indices = MergedIndices {
        old: live.into_iter().flat_map(Obj::indices).peekable(),
        new: &draft.indices,
    };
    Obj::build(draft.ty, fields, indices)
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
    Obj::build(before.ty(), fields.into_iter(), indices.into_iter())
}

#[cfg(test)]
mod tests;
