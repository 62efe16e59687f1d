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

/// The bytes of a key: inline when short.
#[derive(Debug)]
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    fn new(key: &[u8]) -> KeyBytes {
        let mut bytes = [0u8; INLINE];
        match (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(key);
                KeyBytes::Inline { len, bytes }
            }
            _ => KeyBytes::Heap(key.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            KeyBytes::Heap(b) => b,
        }
    }
}

/// The objects that have one index value, and the tid of the last change of that set.
#[derive(Debug)]
pub(super) struct IndexValue {
    key: KeyBytes,
    /// The tid of the last change of the member set.
    pub stamp: Tid,
    /// The members.
    pub members: Members,
}

impl IndexValue {
    /// An index value with a single member.
    pub fn new(key: &[u8], stamp: Tid, member: ObjectId) -> IndexValue {
        IndexValue {
            key: KeyBytes::new(key),
            stamp,
            members: Members::One(member),
        }
    }
}

impl Keyed for IndexValue {
    type Key = [u8];

    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }
}

/// A member set; most index values have a single member.
#[derive(Debug)]
pub(super) enum Members {
    /// The only member.
    One(ObjectId),
    /// Two members or more. Boxed so that the common single-member case takes 16 bytes, not a
    /// set's 32.
    Many(Box<MemberSet>),
}

impl Members {
    /// Adds a member.
    pub fn insert(&mut self, o: ObjectId) {
        match self {
            Members::One(only) if *only == o => {}
            Members::One(only) => {
                let set = [*only, o].into_iter().collect();
                *self = Members::Many(Box::new(set));
            }
            Members::Many(set) => {
                set.insert(o);
            }
        }
    }

    /// Removes a member; returns whether the set is empty now.
    pub fn remove(&mut self, o: ObjectId) -> bool {
        match self {
            Members::One(only) => *only == o,
            Members::Many(set) => {
                set.remove(o);
                if set.len() == 1 {
                    if let Some(last) = set.first() {
                        *self = Members::One(last);
                    }
                }
                false
            }
        }
    }

    /// The members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match self {
            Members::One(o) => (Some(*o), None),
            Members::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_and_an_index_value_takes_48_bytes() {
        assert_eq!(std::mem::size_of::<IndexValue>(), 48);
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let k = KeyBytes::new(&key);
            assert_eq!(k.as_slice(), &key[..]);
            assert_eq!(matches!(k, KeyBytes::Inline { .. }), len <= INLINE, "{len}");
        }
    }

    #[test]
    fn members_shrink_back_to_one() {
        let mut m = Members::One(ObjectId(5));
        m.insert(ObjectId(3));
        m.insert(ObjectId(9));
        assert_eq!(m.iter().collect::<Vec<_>>(), [3, 5, 9].map(ObjectId));
        assert!(!m.remove(ObjectId(5)));
        assert!(!m.remove(ObjectId(9)));
        assert!(matches!(m, Members::One(ObjectId(3))));
        assert!(m.remove(ObjectId(3)));
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
        assert!(matches!(
            values.get(&k).map(|v| &v.members),
            Some(Members::One(ObjectId(7)))
        ));
        index_key(&mut k, IndexId(0), b"value-7");
        assert!(values.get(&k).is_none());
    }
}
