//! Index values: the objects that have one value of one index, and the tid of the last change of
//! that member set. They are kept in a dense [`Table`] keyed by the index id followed by the
//! value, and a short key is kept inline rather than in an allocation of its own.

use super::member_set::MemberSet;
use super::table::{Keyed, Table};
use odb_wire::{IndexId, ObjectId, Tid};
use std::collections::hash_map::RandomState;

/// The index values, by [`index_key`]. Index values come from clients, so their hash is keyed
/// with a random seed.
pub(super) type IndexValues = Table<IndexValue, RandomState>;

/// The key of an index value: the index id, then the value.
pub(super) fn index_key(out: &mut Vec<u8>, index: IndexId, value: &[u8]) {
    out.clear();
    out.extend_from_slice(&index.0.to_le_bytes());
    out.extend_from_slice(value);
}

/// Longest key kept inline.
const INLINE: usize = 22;

/// The objects that have one index value, and the tid of the last change of that set.
///
/// The key is kept inline when short, and a single member without a set; both choices share
/// one tag, so that an index value takes 40 bytes.
#[derive(Debug)]
pub(super) struct IndexValue(Repr);

#[derive(Debug)]
enum Repr {
    InlineOne {
        len: u8,
        bytes: [u8; INLINE],
        stamp: Tid,
        one: ObjectId,
    },
    InlineMany {
        len: u8,
        bytes: [u8; INLINE],
        stamp: Tid,
        many: Box<MemberSet>,
    },
    HeapOne {
        key: Box<[u8]>,
        stamp: Tid,
        one: ObjectId,
    },
    HeapMany {
        key: Box<[u8]>,
        stamp: Tid,
        many: Box<MemberSet>,
    },
}

/// An index value's key, taken apart.
enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

/// An index value's members, taken apart.
enum Members {
    One(ObjectId),
    Many(Box<MemberSet>),
}

impl IndexValue {
    /// An index value with a single member.
    pub fn new(key: &[u8], stamp: Tid, member: ObjectId) -> IndexValue {
        let mut bytes = [0u8; INLINE];
        let key = match (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(key);
                Key::Inline(len, bytes)
            }
            _ => Key::Heap(key.into()),
        };
        IndexValue::from_parts(key, stamp, Members::One(member))
    }

    fn from_parts(key: Key, stamp: Tid, members: Members) -> IndexValue {
        IndexValue(match (key, members) {
            (Key::Inline(len, bytes), Members::One(one)) => Repr::InlineOne {
                len,
                bytes,
                stamp,
                one,
            },
            (Key::Inline(len, bytes), Members::Many(many)) => Repr::InlineMany {
                len,
                bytes,
                stamp,
                many,
            },
            (Key::Heap(key), Members::One(one)) => Repr::HeapOne { key, stamp, one },
            (Key::Heap(key), Members::Many(many)) => Repr::HeapMany { key, stamp, many },
        })
    }

    /// Takes the value apart, leaving an empty placeholder.
    fn take_parts(&mut self) -> (Key, Tid, Members) {
        let placeholder = Repr::InlineOne {
            len: 0,
            bytes: [0; INLINE],
            stamp: Tid(0),
            one: ObjectId(0),
        };
        match std::mem::replace(&mut self.0, placeholder) {
            Repr::InlineOne {
                len,
                bytes,
                stamp,
                one,
            } => (Key::Inline(len, bytes), stamp, Members::One(one)),
            Repr::InlineMany {
                len,
                bytes,
                stamp,
                many,
            } => (Key::Inline(len, bytes), stamp, Members::Many(many)),
            Repr::HeapOne { key, stamp, one } => (Key::Heap(key), stamp, Members::One(one)),
            Repr::HeapMany { key, stamp, many } => (Key::Heap(key), stamp, Members::Many(many)),
        }
    }

    /// The tid of the last change of the member set.
    pub fn stamp(&self) -> Tid {
        match &self.0 {
            Repr::InlineOne { stamp, .. }
            | Repr::InlineMany { stamp, .. }
            | Repr::HeapOne { stamp, .. }
            | Repr::HeapMany { stamp, .. } => *stamp,
        }
    }

    /// Sets the tid of the last change of the member set.
    pub fn set_stamp(&mut self, tid: Tid) {
        match &mut self.0 {
            Repr::InlineOne { stamp, .. }
            | Repr::InlineMany { stamp, .. }
            | Repr::HeapOne { stamp, .. }
            | Repr::HeapMany { stamp, .. } => *stamp = tid,
        }
    }

    /// Adds a member.
    pub fn insert(&mut self, o: ObjectId) {
        match &mut self.0 {
            Repr::InlineOne { one, .. } | Repr::HeapOne { one, .. } if *one == o => {}
            Repr::InlineMany { many, .. } | Repr::HeapMany { many, .. } => {
                many.insert(o);
            }
            Repr::InlineOne { .. } | Repr::HeapOne { .. } => {
                let (key, stamp, members) = self.take_parts();
                let set = match members {
                    Members::One(one) => [one, o].into_iter().collect(),
                    Members::Many(set) => *set,
                };
                *self = IndexValue::from_parts(key, stamp, Members::Many(Box::new(set)));
            }
        }
    }

    /// Removes a member; returns whether the set is empty now.
    pub fn remove(&mut self, o: ObjectId) -> bool {
        match &mut self.0 {
            Repr::InlineOne { one, .. } | Repr::HeapOne { one, .. } => *one == o,
            Repr::InlineMany { many, .. } | Repr::HeapMany { many, .. } => {
                many.remove(o);
                if let (1, Some(last)) = (many.len(), many.first()) {
                    let (key, stamp, _) = self.take_parts();
                    *self = IndexValue::from_parts(key, stamp, Members::One(last));
                }
                false
            }
        }
    }

    /// The members from `lo` to `hi` (inclusive) in ascending order.
    pub fn members_in(&self, lo: ObjectId, hi: ObjectId) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match &self.0 {
            Repr::InlineOne { one, .. } | Repr::HeapOne { one, .. } => {
                ((lo <= *one && *one <= hi).then_some(*one), None)
            }
            Repr::InlineMany { many, .. } | Repr::HeapMany { many, .. } => {
                (None, Some(many.range(lo, hi)))
            }
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// How many members the value has.
    pub fn member_count(&self) -> usize {
        match &self.0 {
            Repr::InlineOne { .. } | Repr::HeapOne { .. } => 1,
            Repr::InlineMany { many, .. } | Repr::HeapMany { many, .. } => many.len(),
        }
    }

    /// The members in ascending order.
    pub fn members(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match &self.0 {
            Repr::InlineOne { one, .. } | Repr::HeapOne { one, .. } => (Some(*one), None),
            Repr::InlineMany { many, .. } | Repr::HeapMany { many, .. } => {
                (None, Some(many.iter()))
            }
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl Keyed for IndexValue {
    type Key = [u8];

    fn key(&self) -> &[u8] {
        match &self.0 {
            Repr::InlineOne { len, bytes, .. } | Repr::InlineMany { len, bytes, .. } => {
                bytes.get(..usize::from(*len)).unwrap_or_default()
            }
            Repr::HeapOne { key, .. } | Repr::HeapMany { key, .. } => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_and_an_index_value_takes_40_bytes() {
        assert_eq!(std::mem::size_of::<IndexValue>(), 40);
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut v = IndexValue::new(&key, Tid(3), ObjectId(1));
            assert_eq!(v.key(), &key[..]);
            let inline = matches!(v.0, Repr::InlineOne { .. });
            assert_eq!(inline, len <= INLINE, "{len}");
            v.insert(ObjectId(2));
            v.set_stamp(Tid(4));
            assert_eq!((v.key(), v.stamp()), (&key[..], Tid(4)));
            assert!(!v.remove(ObjectId(1)));
            assert_eq!((v.key(), v.stamp()), (&key[..], Tid(4)));
            assert!(v.remove(ObjectId(2)));
        }
    }

    #[test]
    fn members_shrink_back_to_one() {
        let mut v = IndexValue::new(b"k", Tid(1), ObjectId(5));
        v.insert(ObjectId(5));
        assert!(matches!(v.0, Repr::InlineOne { .. }));
        v.insert(ObjectId(3));
        v.insert(ObjectId(9));
        assert!(matches!(v.0, Repr::InlineMany { .. }));
        assert_eq!(v.members().collect::<Vec<_>>(), [3, 5, 9].map(ObjectId));
        assert!(!v.remove(ObjectId(5)));
        assert!(!v.remove(ObjectId(9)));
        assert!(matches!(
            v.0,
            Repr::InlineOne {
                one: ObjectId(3),
                ..
            }
        ));
        assert!(!v.remove(ObjectId(4)), "not a member");
        assert!(v.remove(ObjectId(3)));
    }

    #[test]
    fn values_are_found_by_index_and_value() {
        let mut values = IndexValues::default();
        let mut k = Vec::new();
        for i in 0..1000u32 {
            index_key(&mut k, IndexId(i % 3), format!("value-{i}").as_bytes());
            assert!(values
                .insert(IndexValue::new(&k, Tid(1), ObjectId(u64::from(i))))
                .unwrap()
                .is_none());
        }
        index_key(&mut k, IndexId(7 % 3), b"value-7");
        assert_eq!(
            values.get(&k).map(|v| v.members().collect::<Vec<_>>()),
            Some(vec![ObjectId(7)])
        );
        index_key(&mut k, IndexId(0), b"value-7");
        assert!(values.get(&k).is_none());
    }
}
