//! Index values: the objects that have one value of one index, and the tid of the last change of
//! that member set, kept in a dense [`Table`] and found by index id and value.
//!
//! An index value does not keep its value: every member's record holds it already (see
//! [`record`](super::record)), so it is read from the record of the value's first member. That
//! takes an index value from 40 bytes, with its own copy of the value, to 24. The price is an
//! ordering rule for the store: a member's record must hold the value whenever the table is
//! used, so an object leaves its old index values before its record changes, and joins its new
//! ones after the new record is in place. A lookup also reads one object's record, and growing
//! the table reads every first member's record once.

use super::member_set::MemberSet;
use super::record::Obj;
use super::table::{Full, Table};
use super::Objects;
use odb_wire::{IndexId, ObjectId, Tid};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// The objects that have one index value, and the tid of the last change of that set. A single
/// member is kept without a set.
#[derive(Debug)]
pub(super) struct IndexValue(Repr);

///
/// Whether the value is empty is kept beside it (in what would be padding): every object of a
/// type has its all-objects index's empty value, so each creation finds that value, which is
/// then told apart from the others without reading a member's record.
#[derive(Debug)]
enum Repr {
    One {
        index: IndexId,
        empty: bool,
        stamp: Tid,
        one: ObjectId,
    },
    Many {
        index: IndexId,
        empty: bool,
        stamp: Tid,
        many: Box<MemberSet>,
    },
}

impl IndexValue {
    /// Value `value` of `index` with a single member, whose record holds the value.
    pub fn new(index: IndexId, value: &[u8], stamp: Tid, member: ObjectId) -> IndexValue {
        IndexValue(Repr::One {
            index,
            empty: value.is_empty(),
            stamp,
            one: member,
        })
    }

    /// Its index.
    pub fn index(&self) -> IndexId {
        match &self.0 {
            Repr::One { index, .. } | Repr::Many { index, .. } => *index,
        }
    }

    /// The member whose record the value is read from: the smallest one.
    fn first(&self) -> Option<ObjectId> {
        match &self.0 {
            Repr::One { one, .. } => Some(*one),
            Repr::Many { many, .. } => many.first(),
        }
    }

    /// Whether the value is empty.
    fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::One { empty, .. } | Repr::Many { empty, .. } => *empty,
        }
    }

    /// Whether this is value `value` of `index`, reading the value from the record of its first
    /// member (`near` or the one in `objects`, as for [`IndexValue::value`]) unless it is empty.
    fn is(&self, objects: &Objects, near: Option<&Obj>, index: IndexId, value: &[u8]) -> bool {
        let empty = self.is_empty();
        self.index() == index
            && empty == value.is_empty()
            && (empty || self.value(objects, near) == Some(value))
    }

    /// The value, as the record of its first member holds it: `near`, when that is the first
    /// member's record (which saves a lookup), or else the one in `objects`.
    fn value<'a>(&self, objects: &'a Objects, near: Option<&'a Obj>) -> Option<&'a [u8]> {
        let first = self.first()?;
        let record = match near {
            Some(near) if near.id() == first => near,
            _ => &objects.get(&first)?.obj,
        };
        record.index(self.index())
    }

    /// The tid of the last change of the member set.
    pub fn stamp(&self) -> Tid {
        match &self.0 {
            Repr::One { stamp, .. } | Repr::Many { stamp, .. } => *stamp,
        }
    }

    /// Sets the tid of the last change of the member set.
    pub fn set_stamp(&mut self, tid: Tid) {
        match &mut self.0 {
            Repr::One { stamp, .. } | Repr::Many { stamp, .. } => *stamp = tid,
        }
    }

    /// Adds a member.
    pub fn insert(&mut self, o: ObjectId) {
        match &mut self.0 {
            Repr::One { one, .. } if *one == o => {}
            Repr::One {
                index,
                empty,
                stamp,
                one,
            } => {
                let many = Box::new([*one, o].into_iter().collect());
                self.0 = Repr::Many {
                    index: *index,
                    empty: *empty,
                    stamp: *stamp,
                    many,
                };
            }
            Repr::Many { many, .. } => {
                many.insert(o);
            }
        }
    }

    /// Removes a member; returns whether the set is empty now.
    pub fn remove(&mut self, o: ObjectId) -> bool {
        match &mut self.0 {
            Repr::One { one, .. } => *one == o,
            Repr::Many {
                index,
                empty,
                stamp,
                many,
            } => {
                many.remove(o);
                if let (1, Some(last)) = (many.len(), many.first()) {
                    self.0 = Repr::One {
                        index: *index,
                        empty: *empty,
                        stamp: *stamp,
                        one: last,
                    };
                }
                false
            }
        }
    }

    /// The members from `lo` to `hi` (inclusive) in ascending order.
    pub fn members_in(&self, lo: ObjectId, hi: ObjectId) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match &self.0 {
            Repr::One { one, .. } => ((lo <= *one && *one <= hi).then_some(*one), None),
            Repr::Many { many, .. } => (None, Some(many.range(lo, hi))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// How many members the value has.
    pub fn member_count(&self) -> usize {
        match &self.0 {
            Repr::One { .. } => 1,
            Repr::Many { many, .. } => many.len(),
        }
    }

    /// The members in ascending order.
    pub fn members(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match &self.0 {
            Repr::One { one, .. } => (Some(*one), None),
            Repr::Many { many, .. } => (None, Some(many.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// The index values of the store, found by index id and value. Every method takes the object
/// table, where the values are read.
#[derive(Default)]
pub(super) struct IndexValues {
    pub(super) table: Table<IndexValue, ()>,
    /// Index values come from clients, so their hash is keyed with a random seed.
    build: RandomState,
}

/// The hash of value `value` of index `index`.
fn hash(build: &RandomState, index: IndexId, value: &[u8]) -> u64 {
    let mut h = build.build_hasher();
    h.write_u32(index.0);
    h.write(value);
    h.finish()
}

/// The hash of an index value, its value read from `objects`.
fn rehash(build: &RandomState, objects: &Objects, e: &IndexValue) -> u64 {
    if e.is_empty() {
        return hash(build, e.index(), b"");
    }
    match e.value(objects, None) {
        Some(v) => hash(build, e.index(), v),
        None => {
            debug_assert!(false, "an index value's first member does not hold it");
            0
        }
    }
}

impl IndexValues {
    /// How many index values there are.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// How many more index values the table can take.
    pub fn room(&self) -> usize {
        self.table.room()
    }

    /// Makes room for `additional` more values at once: growing the table on the way would
    /// rehash every value each time, and a value's hash needs its first member's record.
    pub fn reserve(&mut self, objects: &Objects, additional: usize) {
        let build = &self.build;
        self.table
            .reserve_with(additional, |e| rehash(build, objects, e));
    }

    /// Where value `value` of index `index` is; `near` is the record of an object that may be
    /// its first member.
    fn position(
        &self,
        objects: &Objects,
        near: Option<&Obj>,
        index: IndexId,
        value: &[u8],
    ) -> Option<usize> {
        self.table.find(hash(&self.build, index, value), |e| {
            e.is(objects, near, index, value)
        })
    }

    /// Value `value` of index `index`.
    pub fn get(&self, objects: &Objects, index: IndexId, value: &[u8]) -> Option<&IndexValue> {
        let p = self.position(objects, None, index, value)?;
        self.table.at(p)
    }

    /// Value `value` of index `index`, to change (its members must keep holding the value);
    /// `near` is the record of an object that may be its first member.
    pub fn get_mut(
        &mut self,
        objects: &Objects,
        near: Option<&Obj>,
        index: IndexId,
        value: &[u8],
    ) -> Option<&mut IndexValue> {
        let p = self.position(objects, near, index, value)?;
        self.table.at_mut(p)
    }

    /// Adds `entry`, which no index value of its index has yet, as value `value`: its member's
    /// record must already hold it. Fails, giving the entry back, if the table is full.
    pub fn add(
        &mut self,
        objects: &Objects,
        value: &[u8],
        entry: IndexValue,
    ) -> Result<(), (Full, IndexValue)> {
        let build = &self.build;
        let h = hash(build, entry.index(), value);
        self.table
            .insert_new(h, entry, |e| rehash(build, objects, e))
    }

    /// Removes value `value` of index `index`; `near` is the record of an object that may be
    /// its first member.
    pub fn remove(
        &mut self,
        objects: &Objects,
        near: Option<&Obj>,
        index: IndexId,
        value: &[u8],
    ) -> Option<IndexValue> {
        let build = &self.build;
        self.table.remove_by(
            hash(build, index, value),
            |e| e.is(objects, near, index, value),
            |e| rehash(build, objects, e),
        )
    }

    /// Every index value, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &IndexValue> {
        self.table.iter()
    }

    /// Index values that hold at most `max` values, to test what happens when they are full.
    #[cfg(test)]
    pub fn with_max(max: usize) -> Self {
        IndexValues {
            table: Table::with_max(max),
            build: RandomState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Obj;
    use crate::store::Live;
    use odb_wire::TypeId;

    /// An object table whose object `o` has value `v` of index `i` for each `(o, i, v)`.
    fn objects(values: &[(u64, IndexId, Vec<u8>)]) -> Objects {
        let mut objects = Objects::default();
        for (o, i, v) in values {
            let indices = [(*i, &v[..])].into_iter();
            let obj = Obj::build(ObjectId(*o), TypeId(1), [].into_iter(), indices);
            objects.insert(Live { obj }).unwrap();
        }
        objects
    }

    #[test]
    fn an_index_value_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<IndexValue>(), 24);
    }

    #[test]
    fn members_shrink_back_to_one() {
        let mut v = IndexValue::new(IndexId(2), b"v", Tid(1), ObjectId(5));
        v.insert(ObjectId(5));
        assert!(matches!(v.0, Repr::One { .. }));
        v.insert(ObjectId(3));
        v.insert(ObjectId(9));
        v.set_stamp(Tid(4));
        assert!(matches!(v.0, Repr::Many { .. }));
        assert_eq!(v.members().collect::<Vec<_>>(), [3, 5, 9].map(ObjectId));
        assert!(!v.remove(ObjectId(5)));
        assert!(!v.remove(ObjectId(9)));
        assert!(matches!(
            v.0,
            Repr::One {
                one: ObjectId(3),
                ..
            }
        ));
        assert_eq!((v.index(), v.stamp()), (IndexId(2), Tid(4)));
        assert!(!v.remove(ObjectId(4)), "not a member");
        assert!(v.remove(ObjectId(3)));
    }

    #[test]
    fn values_are_found_by_index_and_value_read_from_their_first_member() {
        let n = 3000u64;
        let value = |o: u64| format!("value-{}", o / 2).into_bytes();
        let index = |o: u64| IndexId((o % 3) as u32);
        let objects = objects(&(0..n).map(|o| (o, index(o), value(o))).collect::<Vec<_>>());
        let mut values = IndexValues::default();
        for o in 0..n {
            let (i, v) = (index(o), value(o));
            match values.get_mut(&objects, None, i, &v) {
                Some(e) => e.insert(ObjectId(o)),
                None => values
                    .add(&objects, &v, IndexValue::new(i, &v, Tid(1), ObjectId(o)))
                    .unwrap(),
            }
        }
        // Objects 2k and 2k+1 share a value but not an index: every object has its own value.
        assert_eq!(values.len(), n as usize);
        let found = values.get(&objects, IndexId(7 % 3), b"value-3");
        assert_eq!(
            found.map(|e| e.members().collect::<Vec<_>>()),
            Some(vec![ObjectId(7)])
        );
        assert!(values.get(&objects, IndexId(2), b"value-3").is_none());
        assert!(values.get(&objects, IndexId(1), b"value-4000").is_none());
        for o in (0..n).filter(|o| o % 5 != 0) {
            assert!(values.remove(&objects, None, index(o), &value(o)).is_some());
        }
        assert_eq!(values.len(), (n / 5) as usize);
        for o in 0..n {
            let e = values.get(&objects, index(o), &value(o));
            assert_eq!(e.is_some(), o % 5 == 0, "{o}");
        }
    }

    #[test]
    fn empty_values_are_told_apart_from_the_others_and_from_each_other() {
        let entries: [(u64, u32, &[u8]); 5] = [
            (1, 1, b""),
            (2, 1, b""),
            (3, 1, b""),
            (4, 1, b"x"),
            (5, 2, b""),
        ];
        let objects = objects(
            &entries
                .iter()
                .map(|&(o, i, v)| (o, IndexId(i), v.to_vec()))
                .collect::<Vec<_>>(),
        );
        let mut values = IndexValues::default();
        for (o, i, v) in entries {
            match values.get_mut(&objects, None, IndexId(i), v) {
                Some(e) => e.insert(ObjectId(o)),
                None => values
                    .add(
                        &objects,
                        v,
                        IndexValue::new(IndexId(i), v, Tid(1), ObjectId(o)),
                    )
                    .unwrap(),
            }
        }
        let members = |values: &IndexValues, i: u32, v: &[u8]| {
            values
                .get(&objects, IndexId(i), v)
                .map(|e| e.members().map(|o| o.0).collect::<Vec<_>>())
        };
        let check = |values: &IndexValues| {
            assert_eq!(values.len(), 3);
            assert_eq!(members(values, 1, b""), Some(vec![1, 2, 3]));
            assert_eq!(members(values, 1, b"x"), Some(vec![4]));
            assert_eq!(members(values, 2, b""), Some(vec![5]));
            assert_eq!(members(values, 2, b"x"), None);
            assert_eq!(members(values, 3, b""), None);
        };
        check(&values);
        // Growing the table rehashes every value, the empty ones without reading a record.
        values.reserve(&objects, 1000);
        check(&values);
        assert!(values.remove(&objects, None, IndexId(1), b"").is_some());
        assert_eq!(members(&values, 1, b""), None);
        assert_eq!(members(&values, 1, b"x"), Some(vec![4]));
    }

    #[test]
    fn a_value_with_many_members_is_read_from_the_smallest() {
        let objects = objects(&[
            (4, IndexId(1), b"k".to_vec()),
            (9, IndexId(1), b"k".to_vec()),
            (12, IndexId(1), b"k".to_vec()),
        ]);
        let mut values = IndexValues::default();
        values
            .add(
                &objects,
                b"k",
                IndexValue::new(IndexId(1), b"k", Tid(1), ObjectId(9)),
            )
            .unwrap();
        let record = |o: u64| objects.get(&ObjectId(o)).map(|l| &l.obj);
        for o in [4, 12] {
            values
                .get_mut(&objects, record(o), IndexId(1), b"k")
                .unwrap()
                .insert(ObjectId(o));
        }
        // The first member leaves: the value is read from the next one.
        let e = values
            .get_mut(&objects, record(4), IndexId(1), b"k")
            .unwrap();
        assert!(!e.remove(ObjectId(4)));
        let e = values.get(&objects, IndexId(1), b"k").unwrap();
        assert_eq!(e.members().collect::<Vec<_>>(), [9, 12].map(ObjectId));
        // A record that is not the first member's, or holds another value, finds nothing wrong.
        let other = Obj::build(ObjectId(9), TypeId(1), [].into_iter(), [].into_iter());
        assert!(values
            .get_mut(&objects, Some(&other), IndexId(1), b"k")
            .is_none());
        assert!(values
            .get_mut(&objects, record(12), IndexId(1), b"k")
            .is_some());
        assert!(values
            .remove(&objects, record(9), IndexId(1), b"k")
            .is_some());
        assert_eq!(values.len(), 0);
    }
}
