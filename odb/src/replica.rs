//! The client's local multi-version replica of the data it can see.
//!
//! Every field and every index membership of every visible object keeps a short chain of
//! versions `(tid, value)`, so that a view opened at tid `t` reads exactly the state after
//! commit `t` while newer commits are being applied. Versions no open snapshot can read any
//! more are dropped as new ones arrive.
//!
//! Index lookups go through a candidate set per (index, value): every object that had that
//! value at some retained version. A lookup checks each candidate's version at the snapshot.

use bytes::Bytes;
use odb_wire::{CommitData, FieldId, IndexId, ObjectData, ObjectId, Tid};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One key's versions, oldest first. A `None` value means "absent from that tid on".
#[derive(Debug, Default, Clone)]
struct Chain(Vec<(Tid, Option<Bytes>)>);

impl Chain {
    fn at(&self, tid: Tid) -> Option<&Bytes> {
        self.0
            .iter()
            .rev()
            .find(|(t, _)| *t <= tid)
            .and_then(|(_, v)| v.as_ref())
    }

    /// Appends a version and drops versions older than the newest one visible at `horizon`.
    /// Returns the values that were dropped and no longer appear in the chain.
    fn push(&mut self, tid: Tid, value: Option<Bytes>, horizon: Tid) -> Vec<Bytes> {
        match self.0.last_mut() {
            Some(last) if last.0 == tid => last.1 = value,
            _ => self.0.push((tid, value)),
        }
        let keep_from = self.0.iter().rposition(|(t, _)| *t <= horizon).unwrap_or(0);
        if keep_from == 0 {
            return Vec::new();
        }
        let dropped: Vec<(Tid, Option<Bytes>)> = self.0.drain(..keep_from).collect();
        dropped
            .into_iter()
            .filter_map(|(_, v)| v)
            .filter(|v| !self.0.iter().any(|(_, kept)| kept.as_ref() == Some(v)))
            .collect()
    }

    /// True when the chain holds nothing a snapshot at or after `horizon` could see.
    fn is_dead(&self, horizon: Tid) -> bool {
        match self.0.as_slice() {
            [] => true,
            [(t, None)] => *t <= horizon,
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct ObjectVersions {
    fields: Vec<(FieldId, Chain)>,
    indices: Vec<(IndexId, Chain)>,
}

impl ObjectVersions {
    fn field_mut(&mut self, field: FieldId) -> &mut Chain {
        let pos = match self.fields.iter().position(|(f, _)| *f == field) {
            Some(pos) => pos,
            None => {
                self.fields.push((field, Chain::default()));
                self.fields.len() - 1
            }
        };
        &mut self.fields[pos].1
    }

    fn index_mut(&mut self, index: IndexId) -> &mut Chain {
        let pos = match self.indices.iter().position(|(i, _)| *i == index) {
            Some(pos) => pos,
            None => {
                self.indices.push((index, Chain::default()));
                self.indices.len() - 1
            }
        };
        &mut self.indices[pos].1
    }
}

/// The replica. Not thread-safe by itself: the client keeps it behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    tid: Tid,
    objects: HashMap<ObjectId, ObjectVersions>,
    candidates: HashMap<(IndexId, Bytes), BTreeSet<ObjectId>>,
    /// Snapshot tids of open views and transactions, with how many are open at each.
    open: BTreeMap<Tid, usize>,
}

impl Replica {
    pub fn new(tid: Tid) -> Replica {
        Replica {
            tid,
            ..Replica::default()
        }
    }

    /// The tid of the newest commit applied.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// Registers a snapshot at the current tid; its versions are retained until released.
    pub fn open_snapshot(&mut self) -> Tid {
        *self.open.entry(self.tid).or_default() += 1;
        self.tid
    }

    /// Releases a snapshot taken with [`Replica::open_snapshot`].
    pub fn close_snapshot(&mut self, tid: Tid) {
        if let Some(count) = self.open.get_mut(&tid) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&tid);
            }
        }
    }

    /// The oldest tid any open snapshot reads at (or the current tid).
    fn horizon(&self) -> Tid {
        self.open
            .keys()
            .next()
            .copied()
            .unwrap_or(self.tid)
            .min(self.tid)
    }

    /// Number of objects held, live or not yet collected.
    #[cfg(test)]
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    pub fn field(&self, id: ObjectId, field: FieldId, at: Tid) -> Option<&Bytes> {
        let obj = self.objects.get(&id)?;
        let (_, chain) = obj.fields.iter().find(|(f, _)| *f == field)?;
        chain.at(at)
    }

    pub fn index_value(&self, id: ObjectId, index: IndexId, at: Tid) -> Option<&Bytes> {
        let obj = self.objects.get(&id)?;
        let (_, chain) = obj.indices.iter().find(|(i, _)| *i == index)?;
        chain.at(at)
    }

    /// Ids of the objects whose `index` has exactly `value` at `at`, ascending.
    pub fn lookup(&self, index: IndexId, value: &[u8], at: Tid) -> Vec<ObjectId> {
        let key = (index, Bytes::copy_from_slice(value));
        let Some(candidates) = self.candidates.get(&key) else {
            return Vec::new();
        };
        candidates
            .iter()
            .copied()
            .filter(|id| self.index_value(*id, index, at).map(|v| v.as_ref()) == Some(value))
            .collect()
    }

    /// Applies a pushed commit.
    pub fn apply_commit(&mut self, commit: &CommitData) {
        let tid = commit.tid;
        self.tid = self.tid.max(tid);
        let horizon = self.horizon();
        for w in &commit.writes {
            let obj = self.objects.entry(w.object).or_default();
            obj.field_mut(w.field).push(tid, w.value.clone(), horizon);
        }
        for w in &commit.index_writes {
            self.set_index(w.object, w.index, w.value.clone(), tid, horizon);
        }
        for id in &commit.deletes {
            self.delete(*id, tid, horizon);
        }
    }

    /// Applies a subscription's initial data: each object's complete state at `tid`.
    pub fn apply_snapshot(&mut self, objects: Vec<ObjectData>, tid: Tid) {
        self.tid = self.tid.max(tid);
        let horizon = self.horizon();
        for data in objects {
            let obj = self.objects.entry(data.id).or_default();
            let stale: Vec<FieldId> = obj
                .fields
                .iter()
                .map(|(f, _)| *f)
                .filter(|f| !data.fields.iter().any(|(g, _)| g == f))
                .collect();
            for f in stale {
                obj.field_mut(f).push(tid, None, horizon);
            }
            for (f, v) in data.fields {
                obj.field_mut(f).push(tid, Some(v), horizon);
            }
            let stale: Vec<IndexId> = obj
                .indices
                .iter()
                .map(|(i, _)| *i)
                .filter(|i| !data.indices.iter().any(|(j, _)| j == i))
                .collect();
            for i in stale {
                self.set_index(data.id, i, None, tid, horizon);
            }
            for (i, v) in data.indices {
                self.set_index(data.id, i, Some(v), tid, horizon);
            }
        }
    }

    /// Moves the replica's tid forward without data (a flush or an empty subscription).
    pub fn advance(&mut self, tid: Tid) {
        self.tid = self.tid.max(tid);
    }

    fn set_index(
        &mut self,
        id: ObjectId,
        index: IndexId,
        value: Option<Bytes>,
        tid: Tid,
        horizon: Tid,
    ) {
        if let Some(v) = &value {
            self.candidates
                .entry((index, v.clone()))
                .or_default()
                .insert(id);
        }
        let obj = self.objects.entry(id).or_default();
        let dropped = obj.index_mut(index).push(tid, value, horizon);
        for v in dropped {
            self.forget_candidate(index, v, id);
        }
    }

    fn forget_candidate(&mut self, index: IndexId, value: Bytes, id: ObjectId) {
        let key = (index, value);
        if let Some(set) = self.candidates.get_mut(&key) {
            set.remove(&id);
            if set.is_empty() {
                self.candidates.remove(&key);
            }
        }
    }

    fn delete(&mut self, id: ObjectId, tid: Tid, horizon: Tid) {
        let Some(obj) = self.objects.get_mut(&id) else {
            return;
        };
        let mut dropped = Vec::new();
        for (_, chain) in obj.fields.iter_mut() {
            chain.push(tid, None, horizon);
        }
        for (index, chain) in obj.indices.iter_mut() {
            for v in chain.push(tid, None, horizon) {
                dropped.push((*index, v));
            }
        }
        let dead = obj.fields.iter().all(|(_, c)| c.is_dead(horizon))
            && obj.indices.iter().all(|(_, c)| c.is_dead(horizon));
        for (index, v) in dropped {
            self.forget_candidate(index, v, id);
        }
        if dead {
            self.objects.remove(&id);
        }
    }
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

    #[test]
    fn an_open_snapshot_keeps_reading_its_versions() {
        let mut r = Replica::new(Tid(0));
        r.apply_commit(&CommitData {
            tid: Tid(1),
            writes: vec![write(1, 1, Some(b"a"))],
            index_writes: vec![index(1, 7, Some(b"x"))],
            deletes: vec![],
        });
        let snap = r.open_snapshot();
        r.apply_commit(&CommitData {
            tid: Tid(2),
            writes: vec![write(1, 1, Some(b"b"))],
            index_writes: vec![index(1, 7, Some(b"y"))],
            deletes: vec![],
        });
        assert_eq!(
            r.field(ObjectId(1), FieldId(1), snap).unwrap().as_ref(),
            b"a"
        );
        assert_eq!(
            r.field(ObjectId(1), FieldId(1), Tid(2)).unwrap().as_ref(),
            b"b"
        );
        assert_eq!(r.lookup(IndexId(7), b"x", snap), vec![ObjectId(1)]);
        assert!(r.lookup(IndexId(7), b"x", Tid(2)).is_empty());
        r.close_snapshot(snap);
        r.apply_commit(&CommitData {
            tid: Tid(3),
            writes: vec![write(1, 1, Some(b"c"))],
            index_writes: vec![index(1, 7, Some(b"z"))],
            deletes: vec![],
        });
        assert!(!r
            .candidates
            .contains_key(&(IndexId(7), Bytes::from_static(b"x"))));
    }

    #[test]
    fn deleted_objects_are_dropped_when_no_snapshot_needs_them() {
        let mut r = Replica::new(Tid(0));
        r.apply_commit(&CommitData {
            tid: Tid(1),
            writes: vec![write(1, 1, Some(b"a"))],
            index_writes: vec![index(1, 7, Some(b""))],
            deletes: vec![],
        });
        r.apply_commit(&CommitData {
            tid: Tid(2),
            deletes: vec![ObjectId(1)],
            ..CommitData::default()
        });
        assert_eq!(r.object_count(), 0);
        assert!(r.candidates.is_empty());
    }
}
