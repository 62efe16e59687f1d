//! What the registry knows per type, field or index id, found with one bounds-checked load.
//!
//! The registry assigns these ids counting up from 1, so they are dense: a vector indexed by id
//! holds them. Every write of every commit is looked up here (the type of its field, whether it
//! is an existence field), several times on the way through validation, planning and apply.

use odb_wire::hash::FastMap;
use odb_wire::{FieldId, IndexId, TypeId};

/// Ids below this are kept in the vector. A registry read back from storage could name a larger
/// one (the counters are stored with it, not bounded); those go to a map, so that one damaged
/// id cannot make the vector huge.
const DENSE: u32 = 1 << 16;

/// A registry-assigned id.
pub(crate) trait Id: Copy {
    /// The id's number.
    fn number(self) -> u32;
}

impl Id for TypeId {
    fn number(self) -> u32 {
        self.0
    }
}

impl Id for FieldId {
    fn number(self) -> u32 {
        self.0
    }
}

impl Id for IndexId {
    fn number(self) -> u32 {
        self.0
    }
}

/// A map from registry ids to small `Copy` values.
#[derive(Clone)]
pub(crate) struct ById<K, V> {
    dense: Vec<Option<V>>,
    sparse: FastMap<u32, V>,
    _key: std::marker::PhantomData<K>,
}

impl<K, V> Default for ById<K, V> {
    fn default() -> Self {
        ById {
            dense: Vec::new(),
            sparse: FastMap::default(),
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: Id, V: Copy> ById<K, V> {
    /// The value of `id`, if it has one.
    #[inline]
    pub fn get(&self, id: K) -> Option<V> {
        let n = id.number();
        if n < DENSE {
            self.dense.get(n as usize).copied().flatten()
        } else {
            self.sparse.get(&n).copied()
        }
    }

    /// Whether `id` has a value.
    pub fn contains(&self, id: K) -> bool {
        self.get(id).is_some()
    }

    /// Gives `id` the value `v`, returning the value it had.
    pub fn insert(&mut self, id: K, v: V) -> Option<V> {
        let n = id.number();
        if n >= DENSE {
            return self.sparse.insert(n, v);
        }
        let at = n as usize;
        if self.dense.len() <= at {
            self.dense.resize(at + 1, None);
        }
        self.dense.get_mut(at).and_then(|slot| slot.replace(v))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = V> + '_ {
        self.dense
            .iter()
            .filter_map(|v| *v)
            .chain(self.sparse.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_ids_keep_their_values() {
        let mut m: ById<FieldId, TypeId> = ById::default();
        assert_eq!(m.get(FieldId(0)), None);
        assert_eq!(m.insert(FieldId(3), TypeId(1)), None);
        assert_eq!(m.insert(FieldId(u32::MAX), TypeId(2)), None);
        assert_eq!(m.insert(FieldId(DENSE), TypeId(4)), None);
        assert_eq!(m.get(FieldId(3)), Some(TypeId(1)));
        assert_eq!(m.get(FieldId(2)), None);
        assert_eq!(m.get(FieldId(4)), None);
        assert_eq!(m.get(FieldId(u32::MAX)), Some(TypeId(2)));
        assert_eq!(m.get(FieldId(DENSE)), Some(TypeId(4)));
        assert_eq!(m.insert(FieldId(3), TypeId(5)), Some(TypeId(1)));
        assert!(m.contains(FieldId(3)));
        assert!(!m.contains(FieldId(DENSE - 1)));
        // One large id does not grow the vector.
        assert!(m.dense.len() <= 4);
        let mut values: Vec<u32> = m.values().map(|t| t.0).collect();
        values.sort_unstable();
        assert_eq!(values, [2, 4, 5]);
    }
}
