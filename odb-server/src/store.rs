//! The data: objects with their fields and index memberships, the index sets, and the tid of the
//! last write of every conflict key. Also where commits are validated and applied.
//!
//! A commit is validated completely before anything changes, so a rejected commit changes nothing
//! and consumes no tid. Validation covers ids and types, the size limits of [`Limits`], and the
//! conflict history, which is kept for a bounded number of tids (see [`history`]): a commit whose
//! base tid is older than that gets `TooOld`.

use crate::registry::Registry;
use bytes::Bytes;
use odb_wire::{
    CommitOutcome, CommitRequest, FieldId, IndexId, Key, ObjectData, ObjectId, Tid, TypeId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod history;
mod limits;

use history::History;
pub(crate) use limits::Limits;

/// One live object.
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

/// All data of the database, and its conflict history.
#[derive(Default)]
pub(crate) struct Store {
    objects: HashMap<ObjectId, Record>,
    members: HashMap<(IndexId, Bytes), BTreeSet<ObjectId>>,
    history: History,
    /// Keys stamped by the commit being applied.
    stamped: Vec<Key>,
    limits: Limits,
    tid: Tid,
    /// While set, the state before its first change of every object changed since the journal
    /// was last cleared, so that those changes can be stored or undone.
    journal: Option<HashMap<ObjectId, Option<Record>>>,
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
        self.history.last_write(key)
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
        for (id, record) in objects {
            store.link(id, &record.indices);
            store.objects.insert(id, record);
        }
        store.forget_conflict_history();
        store
    }

    /// Starts (or stops) journaling changed objects; see [`Store::take_changes`].
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on.then(HashMap::new);
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
            .map(|id| (*id, self.objects.get(id).cloned()))
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
        for (id, before) in &journal {
            if let Some(now) = self.objects.remove(id) {
                self.unlink(*id, &now.indices);
            }
            if let Some(before) = before {
                self.link(*id, &before.indices);
                self.objects.insert(*id, before.clone());
            }
        }
        self.journal = Some(HashMap::new());
    }

    /// Adds an object to the member sets of its index values.
    fn link(&mut self, o: ObjectId, indices: &[(IndexId, Bytes)]) {
        for (index, value) in indices {
            self.members
                .entry((*index, value.clone()))
                .or_default()
                .insert(o);
        }
    }

    /// Removes an object from the member sets of its index values.
    fn unlink(&mut self, o: ObjectId, indices: &[(IndexId, Bytes)]) {
        for (index, value) in indices {
            let key = (*index, value.clone());
            if let Some(set) = self.members.get_mut(&key) {
                set.remove(&o);
                if set.is_empty() {
                    self.members.remove(&key);
                }
            }
        }
    }

    /// A live object.
    pub fn record(&self, id: ObjectId) -> Option<&Record> {
        self.objects.get(&id)
    }

    /// The objects whose `index` currently has exactly `value`, in ascending id order.
    pub fn members(&self, index: IndexId, value: &Bytes) -> impl Iterator<Item = ObjectId> + '_ {
        self.members
            .get(&(index, value.clone()))
            .into_iter()
            .flat_map(|set| set.iter().copied())
    }

    /// The complete current data of a live object.
    pub fn object_data(&self, id: ObjectId) -> Option<ObjectData> {
        self.objects.get(&id).map(|r| ObjectData {
            id,
            fields: r.fields.clone(),
            indices: r.indices.clone(),
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
    ) -> Result<HashMap<ObjectId, TypeId>, CommitOutcome> {
        if req.base_tid > self.tid {
            return Err(invalid(format!(
                "base tid {} is newer than the server's current tid {}",
                req.base_tid, self.tid
            )));
        }
        let mut created: HashMap<ObjectId, TypeId> = HashMap::new();
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
            if self.objects.contains_key(&w.object) {
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
            self.objects
                .get(&o)
                .map(|r| r.ty)
                .or_else(|| created.get(&o).copied())
        };
        let missing = |o: ObjectId, what: &str| {
            invalid(format!(
                "{what} object {o}, which does not exist and is not created by this commit"
            ))
        };
        for w in &req.writes {
            let Some(field_ty) = registry.field_type(w.field) else {
                return Err(invalid(format!("unknown field id {}", w.field)));
            };
            let ty = type_of(w.object).ok_or_else(|| missing(w.object, "write to"))?;
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
        created: HashMap<ObjectId, TypeId>,
    ) -> Applied {
        let tid = self.tid.next();
        self.tid = tid;
        let mut objects: BTreeMap<ObjectId, Touched> = BTreeMap::new();
        let touched_ids = req
            .writes
            .iter()
            .map(|w| w.object)
            .chain(req.index_writes.iter().map(|w| w.object))
            .chain(req.deletes.iter().copied());
        for o in touched_ids {
            if let Some(journal) = &mut self.journal {
                let live = &self.objects;
                journal.entry(o).or_insert_with(|| live.get(&o).cloned());
            }
            objects.entry(o).or_insert_with(|| Touched {
                created: created.contains_key(&o),
                old_indices: self
                    .objects
                    .get(&o)
                    .map(|r| r.indices.clone())
                    .unwrap_or_default(),
                writes: BTreeMap::new(),
            });
        }
        for (&o, &ty) in &created {
            self.objects.insert(
                o,
                Record {
                    ty,
                    fields: Vec::new(),
                    indices: Vec::new(),
                },
            );
            if let Some(info) = registry.type_info(ty) {
                self.set_index(o, info.all_index, Some(Bytes::new()));
            }
        }
        for w in &req.writes {
            if let Some(record) = self.objects.get_mut(&w.object) {
                let pos = record.fields.binary_search_by_key(&w.field, |(f, _)| *f);
                match (pos, &w.value) {
                    (Ok(p), Some(v)) => record.fields[p].1 = v.clone(),
                    (Err(p), Some(v)) => record.fields.insert(p, (w.field, v.clone())),
                    (Ok(p), None) => {
                        record.fields.remove(p);
                    }
                    (Err(_), None) => {}
                }
            }
            self.stamped.push(Key::Field(w.object, w.field));
            if let Some(t) = objects.get_mut(&w.object) {
                t.writes.insert(w.field, w.value.clone());
            }
        }
        for w in &req.index_writes {
            self.set_index(w.object, w.index, w.value.clone());
        }
        for o in &req.deletes {
            let Some(record) = self.objects.remove(o) else {
                continue;
            };
            for (f, _) in record.fields {
                self.stamped.push(Key::Field(*o, f));
            }
            for (i, v) in record.indices {
                self.leave_index(*o, i, v);
            }
        }
        let stamped = std::mem::take(&mut self.stamped);
        self.history.record(tid, stamped);
        Applied { tid, objects }
    }

    /// Moves a live object to a new value of an index (`None`: out of the index), stamping the
    /// old and the new index value. Setting the current value changes nothing.
    fn set_index(&mut self, o: ObjectId, index: IndexId, value: Option<Bytes>) {
        let Some(record) = self.objects.get_mut(&o) else {
            return;
        };
        let pos = record.indices.binary_search_by_key(&index, |(i, _)| *i);
        let old = pos.ok().map(|p| &record.indices[p].1);
        if old == value.as_ref() {
            return;
        }
        let old = match (pos, &value) {
            (Ok(p), Some(v)) => Some(std::mem::replace(&mut record.indices[p].1, v.clone())),
            (Ok(p), None) => Some(record.indices.remove(p).1),
            (Err(p), Some(v)) => {
                record.indices.insert(p, (index, v.clone()));
                None
            }
            (Err(_), None) => None,
        };
        if let Some(old) = old {
            self.leave_index(o, index, old);
        }
        if let Some(value) = value {
            self.members
                .entry((index, value.clone()))
                .or_default()
                .insert(o);
            self.stamped.push(Key::Index(index, value));
        }
    }

    /// Removes an object from one index value's member set and stamps that value.
    fn leave_index(&mut self, o: ObjectId, index: IndexId, value: Bytes) {
        let key = (index, value);
        if let Some(set) = self.members.get_mut(&key) {
            set.remove(&o);
            if set.is_empty() {
                self.members.remove(&key);
            }
        }
        self.stamped.push(Key::Index(key.0, key.1));
    }
}

#[cfg(test)]
mod tests;
