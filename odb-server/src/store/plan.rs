//! The first step of a commit: its writes grouped by object, in ascending object id order, and
//! checked against the registry and the live objects. Nothing changes until the whole commit
//! has been checked.
//!
//! Writes are sorted stably by object and field (or index), so the writes to one field keep
//! their request order and the last one wins. Clients usually send them sorted already, and
//! then they are used in place.

use super::{invalid, Store};
use crate::registry::Registry;
use odb_wire::{CommitOutcome, CommitRequest, FieldWrite, IndexWrite, ObjectId, TypeId};
use std::ops::Range;

/// A request's writes of one kind, sorted stably by object and field (or index) id.
pub(super) enum Sorted<'r, T> {
    /// The request's own order was sorted.
    Given(&'r [T]),
    /// Sorted here.
    Sorted(Vec<&'r T>),
}

impl<'r, T> Sorted<'r, T> {
    fn new(items: &'r [T], key: impl Fn(&T) -> (ObjectId, u32)) -> Self {
        if items.is_sorted_by_key(&key) {
            return Sorted::Given(items);
        }
        let mut sorted: Vec<&T> = items.iter().collect();
        sorted.sort_by_key(|t| key(t));
        Sorted::Sorted(sorted)
    }

    /// The write at a sorted position.
    pub fn get(&self, i: usize) -> Option<&'r T> {
        match self {
            Sorted::Given(items) => items.get(i),
            Sorted::Sorted(items) => items.get(i).copied(),
        }
    }

    /// How many distinct objects the writes are to, given each write's object.
    fn objects(&self, object: impl Fn(&T) -> ObjectId) -> usize {
        let mut last = None;
        self.range(0..usize::MAX)
            .filter(|w| {
                let o = Some(object(w));
                std::mem::replace(&mut last, o) != o
            })
            .count()
    }

    /// The writes in a range of sorted positions.
    pub fn range(&self, r: Range<usize>) -> impl Iterator<Item = &'r T> + '_ {
        r.map_while(|i| self.get(i))
    }
}

/// One object a commit touches.
#[derive(Debug)]
pub(super) struct Planned {
    /// The object.
    pub id: ObjectId,
    /// Its type.
    pub ty: TypeId,
    /// The commit creates it: it is not live.
    pub created: bool,
    /// The commit deletes it.
    pub deleted: bool,
    /// Its field writes, as positions in [`Plan::writes`].
    pub writes: Range<usize>,
    /// Its index writes, as positions in [`Plan::index_writes`].
    pub index_writes: Range<usize>,
}

/// A checked commit, ready to be applied.
pub(super) struct Plan<'r> {
    /// The field writes, sorted.
    pub writes: Sorted<'r, FieldWrite>,
    /// The index writes, sorted.
    pub index_writes: Sorted<'r, IndexWrite>,
    /// Every object the commit touches, in ascending id order.
    pub objects: Vec<Planned>,
}

impl Plan<'_> {
    /// How many objects the commit creates.
    pub fn created(&self) -> usize {
        self.objects.iter().filter(|p| p.created).count()
    }
}

fn missing(o: ObjectId, what: &str) -> CommitOutcome {
    invalid(format!(
        "{what} object {o}, which does not exist and is not created by this commit"
    ))
}

impl Store {
    /// Groups a commit's writes by object and checks that every id is known and every write
    /// targets a live (or created) object of the right type.
    pub(super) fn plan<'r>(
        &self,
        registry: &Registry,
        req: &'r CommitRequest,
    ) -> Result<Plan<'r>, CommitOutcome> {
        let writes = Sorted::new(&req.writes, |w| (w.object, w.field.0));
        let index_writes = Sorted::new(&req.index_writes, |w| (w.object, w.index.0));
        let mut deletes = req.deletes.clone();
        deletes.sort_unstable();
        deletes.dedup();
        // Objects usually have field writes (a created one always has): room for those and
        // the deleted ones, counted, saves growing a bulk commit's list on the way.
        let mut objects = Vec::with_capacity(writes.objects(|w| w.object) + deletes.len());
        let (mut i, mut j, mut k) = (0, 0, 0);
        loop {
            let next = [
                writes.get(i).map(|w| w.object),
                index_writes.get(j).map(|w| w.object),
                deletes.get(k).copied(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(o) = next else { break };
            let (i0, j0) = (i, j);
            while writes.get(i).is_some_and(|w| w.object == o) {
                i += 1;
            }
            while index_writes.get(j).is_some_and(|w| w.object == o) {
                j += 1;
            }
            let deleted = deletes.get(k) == Some(&o);
            if deleted {
                k += 1;
            }
            let mut planned = Planned {
                id: o,
                ty: TypeId(0),
                created: false,
                deleted,
                writes: i0..i,
                index_writes: j0..j,
            };
            self.check_object(registry, &writes, &index_writes, &mut planned)?;
            objects.push(planned);
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
        Ok(Plan {
            writes,
            index_writes,
            objects,
        })
    }

    /// Checks the writes to one object and fills in its type and whether it is created.
    fn check_object(
        &self,
        registry: &Registry,
        writes: &Sorted<'_, FieldWrite>,
        index_writes: &Sorted<'_, IndexWrite>,
        p: &mut Planned,
    ) -> Result<(), CommitOutcome> {
        let o = p.id;
        let live = self.record(o).map(|r| r.ty());
        let mut created: Option<TypeId> = None;
        for w in writes.range(p.writes.clone()) {
            let Some(ty) = registry.exists_field_type(w.field) else {
                continue;
            };
            if w.value.is_none() {
                return Err(invalid(format!(
                    "object {o}: the existence field cannot be removed; delete the object instead"
                )));
            }
            if live.is_some() {
                continue;
            }
            match created {
                Some(previous) if previous != ty => {
                    return Err(invalid(format!(
                        "object {o} is created as two types ({previous} and {ty})"
                    )))
                }
                _ => created = Some(ty),
            }
        }
        let ty = live.or(created);
        for w in writes.range(p.writes.clone()) {
            let Some(field_ty) = registry.field_type(w.field) else {
                return Err(invalid(format!("unknown field id {}", w.field)));
            };
            let ty = ty.ok_or_else(|| missing(o, "write to"))?;
            if field_ty != ty {
                return Err(invalid(format!(
                    "field {} belongs to type {field_ty}, but object {o} is of type {ty}",
                    w.field
                )));
            }
        }
        for w in index_writes.range(p.index_writes.clone()) {
            let Some(index_ty) = registry.index_type(w.index) else {
                return Err(invalid(format!("unknown index id {}", w.index)));
            };
            let ty = ty.ok_or_else(|| missing(o, "index write to"))?;
            if index_ty != ty {
                return Err(invalid(format!(
                    "index {} belongs to type {index_ty}, but object {o} is of type {ty}",
                    w.index
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
        p.ty = ty.ok_or_else(|| missing(o, "delete of"))?;
        p.created = live.is_none();
        Ok(())
    }
}
