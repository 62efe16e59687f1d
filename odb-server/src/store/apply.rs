//! The last step of a commit: a checked [`Plan`] is applied at the next tid, every key it
//! changes is stamped, and what changed is reported for the subscribers.
//!
//! Objects leave their old index values first, for every object of the commit, and only then
//! join their new ones, so that a value left by one object and joined by another in the same
//! commit keeps a consistent member set. An index value an object joins is stamped as it joins;
//! the other index values the commit changed (values left, values an object held only in the
//! middle of the commit, values of deleted objects) are stamped at the end.

use super::history::History;
use super::index::{IndexValue, IndexValues};
use super::plan::{Plan, Planned};
use super::record::{FieldSlot, Obj, Scratch, Src};
use super::{add_value, Objects, Store};
use crate::registry::Registry;
use bytes::Bytes;
use odb_wire::{FieldId, IndexId, Key, ObjectId, Tid, TypeId};
use std::ops::Range;

/// What a successful commit changed, as needed to push it to subscribers.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The commit's tid.
    pub tid: Tid,
    /// Every object the commit wrote, re-indexed or deleted, in ascending id order.
    pub objects: Vec<Touched>,
}

#[cfg(test)]
impl Applied {
    /// How the commit touched one object.
    pub fn get(&self, id: ObjectId) -> Option<&Touched> {
        let p = self.objects.binary_search_by_key(&id, |t| t.id).ok()?;
        self.objects.get(p)
    }
}

/// How a commit touched one object. What it is now is in the store: the fields the commit wrote
/// are those stamped with its tid.
#[derive(Debug)]
pub(crate) struct Touched {
    /// The object.
    pub id: ObjectId,
    /// The object before the commit; `None`: the commit created it.
    pub before: Option<Obj>,
}

impl Touched {
    /// Whether the object did not exist before the commit.
    pub fn created(&self) -> bool {
        self.before.is_none()
    }
}

/// What a commit does to one object's index memberships: the last value it writes to each
/// index, sorted by index id.
type DraftIndices<'r> = [(IndexId, Option<&'r [u8]>)];

/// Index values to stamp at the end of the commit: the index and a range of the value bytes.
#[derive(Default)]
struct Stamps {
    values: Vec<(IndexId, Range<usize>)>,
    bytes: Vec<u8>,
}

/// The buffers of [`Store::apply`] that hold no borrowed data, kept by the store from one commit
/// to the next: a small commit then allocates none of them.
#[derive(Default)]
pub(super) struct Reused {
    stamps: Stamps,
    scratch: Scratch,
}

/// Buffers larger than this (left by a large commit) are dropped rather than kept.
const REUSE_MAX_BYTES: usize = 64 * 1024;

impl Reused {
    /// Takes the buffers; they are empty (see [`Reused::give_back`]).
    fn take(&mut self) -> Reused {
        std::mem::take(self)
    }

    /// Gives the buffers back, emptied, unless they grew large.
    fn give_back(&mut self, mut reused: Reused) {
        let Reused { stamps, scratch } = &mut reused;
        stamps.values.clear();
        stamps.bytes.clear();
        let bytes = stamps.values.capacity() * std::mem::size_of::<(IndexId, Range<usize>)>()
            + stamps.bytes.capacity()
            + scratch.capacity_bytes();
        if bytes <= REUSE_MAX_BYTES {
            *self = reused;
        }
    }
}

impl Stamps {
    fn push(&mut self, index: IndexId, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.values.push((index, start..self.bytes.len()));
    }

    /// Drops the stamps of value `v` of index `i` collected since the `since`th (a few).
    fn forget_since(&mut self, since: usize, i: IndexId, v: &[u8]) {
        let mut k = since;
        while let Some((si, r)) = self.values.get(k) {
            if *si == i && self.bytes.get(r.clone()) == Some(v) {
                self.values.remove(k);
            } else {
                k += 1;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (IndexId, &[u8])> + '_ {
        self.values
            .iter()
            .map(|(i, r)| (*i, self.bytes.get(r.clone()).unwrap_or_default()))
    }
}

/// The index values `p`'s writes give it, appended to `out` sorted by index id: the last value
/// written to each index whose value changed at some point, and the all-objects index of a
/// created object. With `stamps`, also collects the values to stamp at the end of the commit
/// (each value the object held or left, except the one it ends up joining).
fn draft_indices<'r>(
    plan: &Plan<'r>,
    p: &Planned,
    all_index: Option<IndexId>,
    live: Option<&Obj>,
    out: &mut Vec<(IndexId, Option<&'r [u8]>)>,
    mut stamps: Option<&mut Stamps>,
) {
    const EMPTY: &[u8] = &[];
    // The all-objects index of a created object, merged in by index id.
    let mut all = all_index.filter(|_| p.created);
    let mut writes = plan.index_writes.range(p.index_writes.clone()).peekable();
    while let Some(first) = writes.peek() {
        let i = first.index;
        if let Some(a) = all.filter(|a| *a < i) {
            out.push((a, Some(EMPTY)));
            all = None;
        }
        let prefilled = all == Some(i);
        if prefilled {
            all = None;
        }
        let initial = if prefilled {
            Some(EMPTY)
        } else {
            live.and_then(|r| r.index(i))
        };
        // The value written last, once one differed from the value before it.
        let mut last: Option<Option<&'r [u8]>> = None;
        let run = stamps.as_ref().map(|s| s.values.len());
        while let Some(w) = writes.next_if(|w| w.index == i) {
            let new = w.value.as_deref();
            let current = last.unwrap_or(initial);
            if current == new {
                continue;
            }
            if let Some(s) = stamps.as_deref_mut() {
                if let Some(old) = current {
                    s.push(i, old);
                }
                if let Some(new) = new {
                    s.push(i, new);
                }
            }
            last = Some(new);
        }
        let value = match last {
            Some(v) => v,
            None if prefilled => Some(EMPTY),
            None => continue,
        };
        out.push((i, value));
        let joined = value.filter(|v| !p.deleted && live.and_then(|r| r.index(i)) != Some(v));
        if let (Some(s), Some(run), Some(v)) = (stamps.as_deref_mut(), run, joined) {
            // The value the object joins is stamped as it joins.
            s.forget_since(run, i, v);
        }
    }
    if let Some(a) = all {
        out.push((a, Some(EMPTY)));
    }
}

/// The last write of each field `p`'s writes touch, sorted by field id.
fn draft_fields<'r>(plan: &Plan<'r>, p: &Planned, out: &mut Vec<(FieldId, Option<&'r [u8]>)>) {
    out.clear();
    let mut writes = plan.writes.range(p.writes.clone()).peekable();
    while let Some(w) = writes.next() {
        if writes.peek().is_some_and(|next| next.field == w.field) {
            continue;
        }
        out.push((w.field, w.value.as_deref()));
    }
}

impl Store {
    /// Applies a checked commit at the next tid.
    pub(super) fn apply(&mut self, registry: &Registry, plan: &Plan<'_>) -> Applied {
        let tid = self.tid.next();
        self.tid = tid;
        let mut reused = self.reused.take();
        let Reused { stamps, scratch } = &mut reused;
        // Every object's final index values, and where each object's are (most objects a
        // commit touches write at most two).
        let mut indices: Vec<(IndexId, Option<&[u8]>)> = Vec::with_capacity(2 * plan.objects.len());
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(plan.objects.len());
        for p in &plan.objects {
            let all_index = registry.type_info(p.ty).map(|t| t.all_index);
            let live = self.objects.get(&p.id).map(|l| &l.obj);
            let start = indices.len();
            draft_indices(plan, p, all_index, live, &mut indices, Some(&mut *stamps));
            let draft = indices.get(start..).unwrap_or_default();
            ranges.push(start..indices.len());
            if p.deleted {
                // Every value the object holds until it is deleted changed.
                for (i, v) in final_indices(live, draft) {
                    stamps.push(i, v);
                }
            }
            if let Some(live) = live {
                let (members, history) = (&mut self.members, &mut self.history);
                leave(
                    members,
                    &self.objects,
                    history,
                    p.id,
                    live,
                    draft,
                    p.deleted,
                );
            }
        }
        self.objects.reserve(plan.created());
        // A commit that may add more index values than the table holds (a bulk load) makes
        // room for all of them at once: growing on the way would rehash every value at each
        // doubling, reading a member's record for each. Smaller commits let the table grow as
        // it fills. The empty value (a type's all-objects index) exists after the type's first
        // object, and is not counted.
        // Counted only when it can matter: the drafted values are at least the new ones.
        if indices.len() > self.members.len() {
            let new_values = indices
                .iter()
                .filter(|(_, v)| v.is_some_and(|v| !v.is_empty()))
                .count();
            if new_values > self.members.len() {
                self.members.reserve(&self.objects, new_values);
            }
        }
        let mut fields = Vec::with_capacity(8);
        let mut objects = Vec::with_capacity(plan.objects.len());
        for (p, range) in plan.objects.iter().zip(ranges) {
            let o = p.id;
            let draft = indices.get(range).unwrap_or_default();
            draft_fields(plan, p, &mut fields);
            if let Some(journal) = &mut self.journal {
                let live = self.objects.get(&o).map(|l| l.obj.clone());
                journal.entry(o).or_insert(live);
            }
            let before = if p.deleted {
                self.delete(o, &fields, tid)
            } else {
                self.write(scratch, o, p.ty, &fields, draft, tid)
            };
            objects.push(Touched { id: o, before });
        }
        for (i, v) in stamps.iter() {
            match self.members.get_mut(&self.objects, None, i, v) {
                Some(entry) => {
                    if entry.stamp() != tid {
                        self.history.live_restamp(entry.stamp(), tid);
                        entry.set_stamp(tid);
                        self.history.take_index(i, v);
                    }
                }
                None => self
                    .history
                    .keep(Key::Index(i, Bytes::copy_from_slice(v)), tid),
            }
        }
        self.history.record(tid);
        self.reused.give_back(reused);
        Applied { tid, objects }
    }

    /// Deletes `o`, keeping the stamps of its fields (and of those the commit wrote) in the
    /// history. Returns the object as it was.
    fn delete(
        &mut self,
        o: ObjectId,
        fields: &[(FieldId, Option<&[u8]>)],
        tid: Tid,
    ) -> Option<Obj> {
        let live = self.objects.remove(&o).map(|l| l.obj);
        if let Some(live) = &live {
            for slot in live.field_slots() {
                self.history.live_drop(slot.stamp);
                let written = fields.binary_search_by_key(&slot.id, |(f, _)| *f).is_ok();
                let stamp = if slot.value.is_some() || written {
                    tid
                } else {
                    slot.stamp
                };
                self.history.keep(Key::Field(o, slot.id), stamp);
            }
        }
        for (f, _) in fields {
            if live.as_ref().and_then(|r| r.field_stamp(*f)).is_none() {
                self.history.keep(Key::Field(o, *f), tid);
            }
        }
        live
    }

    /// Writes `fields` and `draft` to `o` (creating it), joining the index values it did not
    /// have. Returns the object as it was.
    fn write(
        &mut self,
        scratch: &mut Scratch,
        o: ObjectId,
        ty: TypeId,
        fields: &[(FieldId, Option<&[u8]>)],
        draft: &DraftIndices<'_>,
        tid: Tid,
    ) -> Option<Obj> {
        let pos = self.objects.position(&o);
        let live = pos.and_then(|p| self.objects.at(p)).map(|l| &l.obj);
        let obj = rebuild(scratch, &mut self.history, o, ty, live, fields, draft, tid);
        // The new record goes in first: the index values it joins read their value from it.
        let before = match pos.and_then(|p| self.objects.at_mut(p)) {
            Some(slot) => Some(std::mem::replace(&mut slot.obj, obj)),
            None => {
                self.put(o, obj);
                None
            }
        };
        for (i, v) in draft {
            let Some(v) = v else { continue };
            if before.as_ref().is_none_or(|r| r.index(*i) != Some(v)) {
                join(
                    &mut self.members,
                    &self.objects,
                    &mut self.history,
                    o,
                    *i,
                    v,
                    tid,
                );
            }
        }
        before
    }
}

/// Removes `o` from the member sets of the index values it leaves: those `draft` changes, or
/// all of them if it is deleted. An index value left empty is dropped (and stamped at the end of
/// the commit).
fn leave(
    members: &mut IndexValues,
    objects: &Objects,
    history: &mut History,
    o: ObjectId,
    live: &Obj,
    draft: &DraftIndices<'_>,
    deleted: bool,
) {
    if !deleted && draft.is_empty() {
        return;
    }
    for (i, v) in live.indices() {
        let stays = !deleted
            && match draft.binary_search_by_key(&i, |(di, _)| *di) {
                Ok(p) => draft.get(p).and_then(|(_, dv)| *dv) == Some(v),
                Err(_) => true,
            };
        if stays {
            continue;
        }
        if let Some(entry) = members.get_mut(objects, Some(live), i, v) {
            if entry.remove(o) {
                let stamp = entry.stamp();
                members.remove(objects, Some(live), i, v);
                history.live_drop(stamp);
            }
        }
    }
}

/// The index values an object holds at the end of a commit (before a delete): its live ones
/// with `draft` applied.
fn final_indices<'a>(
    live: Option<&'a Obj>,
    draft: &'a DraftIndices<'a>,
) -> impl Iterator<Item = (IndexId, &'a [u8])> + 'a {
    MergedIndices {
        old: live.into_iter().flat_map(Obj::indices).peekable(),
        new: draft,
    }
}

/// Adds `o` to the member set of index value `v` of index `i`, stamping the value with `tid`.
/// The record of `o` in `objects` holds the value already.
fn join(
    members: &mut IndexValues,
    objects: &Objects,
    history: &mut History,
    o: ObjectId,
    i: IndexId,
    v: &[u8],
    tid: Tid,
) {
    match members.get_mut(objects, None, i, v) {
        Some(entry) => {
            entry.insert(o);
            if entry.stamp() != tid {
                history.live_restamp(entry.stamp(), tid);
                entry.set_stamp(tid);
                history.take_index(i, v);
            }
        }
        None => {
            history.live_add(tid);
            history.take_index(i, v);
            add_value(members, objects, v, IndexValue::new(i, v, tid, o));
        }
    }
}

/// The fields of an object after a commit: its old slots merged with the commit's writes, in
/// field id order. Removed fields whose stamp no longer counts are dropped.
#[derive(Clone)]
struct MergedFields<'a, I: Iterator<Item = FieldSlot<'a>>> {
    old: std::iter::Peekable<I>,
    new: &'a [(FieldId, Option<&'a [u8]>)],
    tid: Tid,
    horizon: Tid,
}

/// Which side of a merge of two id-sorted sequences comes next, given their next ids:
/// `Some(true)` the old one, `Some(false)` the new one (also on equal ids, as the new entry
/// replaces the old), `None` when both are done.
fn old_first<K: Ord>(old: Option<K>, new: Option<K>) -> Option<bool> {
    match (old, new) {
        (None, None) => None,
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (Some(x), Some(y)) => Some(x < y),
    }
}

impl<'a, I: Iterator<Item = FieldSlot<'a>>> Iterator for MergedFields<'a, I> {
    type Item = (FieldId, Tid, Src<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_old = old_first(self.old.peek().map(|x| x.id), self.new.first().map(|y| y.0))?;
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
    new: &'a DraftIndices<'a>,
}

impl<'a, I: Iterator<Item = (IndexId, &'a [u8])>> Iterator for MergedIndices<'a, I> {
    type Item = (IndexId, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_old = old_first(self.old.peek().map(|x| x.0), self.new.first().map(|y| y.0))?;
            if take_old {
                return self.old.next();
            }
            let (&(i, v), rest) = self.new.split_first()?;
            self.new = rest;
            if self.old.peek().is_some_and(|x| x.0 == i) {
                self.old.next();
            }
            if let Some(v) = v {
                return Some((i, v));
            }
        }
    }
}

/// The object `o` after a commit at `tid` wrote `fields` and `draft` to it, counting the stamps
/// it replaces and adds.
#[allow(clippy::too_many_arguments)]
fn rebuild(
    scratch: &mut Scratch,
    history: &mut History,
    o: ObjectId,
    ty: TypeId,
    live: Option<&Obj>,
    fields: &[(FieldId, Option<&[u8]>)],
    draft: &DraftIndices<'_>,
    tid: Tid,
) -> Obj {
    let horizon = history.horizon();
    let mut old = live.into_iter().flat_map(Obj::field_slots).peekable();
    for &(f, _) in fields {
        while old.next_if(|s| s.id < f).is_some() {}
        match old.next_if(|s| s.id == f) {
            Some(slot) => history.live_restamp(slot.stamp, tid),
            None => history.live_add(tid),
        }
        history.take(&Key::Field(o, f));
    }
    // A commit's tid is newer than every stamp the object has; without field writes, the old
    // stamp still fits.
    let newest = match live {
        Some(live) if fields.is_empty() => live.stamp(),
        _ => tid,
    };
    let fields = MergedFields {
        old: live.into_iter().flat_map(Obj::field_slots).peekable(),
        new: fields,
        tid,
        horizon,
    };
    let indices = MergedIndices {
        old: live.into_iter().flat_map(Obj::indices).peekable(),
        new: draft,
    };
    Obj::build_in(scratch, o, ty, newest, fields, indices)
}
