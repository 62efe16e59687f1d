//! The data: objects with their fields and index memberships, the index sets, and the tid of the
//! last write of every conflict key. Also where commits are validated and applied.
//!
//! A commit is validated completely before anything changes, so a rejected commit changes nothing
//! and consumes no tid.

use crate::registry::Registry;
use bytes::Bytes;
use odb_wire::{
    CommitOutcome, CommitRequest, FieldId, IndexId, Key, ObjectData, ObjectId, Tid, TypeId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    last_write: HashMap<Key, Tid>,
    tid: Tid,
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
        Tid(0)
    }

    /// The tid that last wrote a key; `Tid(0)` if it was never written.
    pub fn last_write(&self, key: &Key) -> Tid {
        self.last_write.get(key).copied().unwrap_or_default()
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
                self.set_index(o, info.all_index, Some(Bytes::new()), tid);
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
            self.last_write.insert(Key::Field(w.object, w.field), tid);
            if let Some(t) = objects.get_mut(&w.object) {
                t.writes.insert(w.field, w.value.clone());
            }
        }
        for w in &req.index_writes {
            self.set_index(w.object, w.index, w.value.clone(), tid);
        }
        for o in &req.deletes {
            let Some(record) = self.objects.remove(o) else {
                continue;
            };
            for (f, _) in record.fields {
                self.last_write.insert(Key::Field(*o, f), tid);
            }
            for (i, v) in record.indices {
                self.leave_index(*o, i, v, tid);
            }
        }
        Applied { tid, objects }
    }

    /// Moves a live object to a new value of an index (`None`: out of the index), stamping the
    /// old and the new index value. Setting the current value changes nothing.
    fn set_index(&mut self, o: ObjectId, index: IndexId, value: Option<Bytes>, tid: Tid) {
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
            self.leave_index(o, index, old, tid);
        }
        if let Some(value) = value {
            self.members
                .entry((index, value.clone()))
                .or_default()
                .insert(o);
            self.last_write.insert(Key::Index(index, value), tid);
        }
    }

    /// Removes an object from one index value's member set and stamps that value.
    fn leave_index(&mut self, o: ObjectId, index: IndexId, value: Bytes, tid: Tid) {
        let key = (index, value);
        if let Some(set) = self.members.get_mut(&key) {
            set.remove(&o);
            if set.is_empty() {
                self.members.remove(&key);
            }
        }
        self.last_write.insert(Key::Index(key.0, key.1), tid);
    }
}

#[cfg(test)]
mod tests;
