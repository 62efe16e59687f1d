//! Index lookup candidates: per index value, every object that had that value at some retained
//! version.

use super::value::Value;
use hashbrown::hash_map::EntryRef;
use odb_wire::hash::FastBuild;
use odb_wire::ObjectId;
use std::collections::BTreeSet;

/// The objects that had one index value at some retained version. Most index values belong
/// to a single object, which is then stored without a set of its own.
#[derive(Debug, Default)]
pub(super) enum Candidates {
    #[default]
    None,
    One(ObjectId),
    // Boxed so that the common cases (none, one) take two words in the value map.
    #[allow(clippy::box_collection)]
    Many(Box<BTreeSet<ObjectId>>),
}

impl Candidates {
    fn insert(&mut self, id: ObjectId) {
        match self {
            Candidates::None => *self = Candidates::One(id),
            Candidates::One(one) if *one == id => {}
            Candidates::One(one) => {
                *self = Candidates::Many(Box::new(BTreeSet::from([*one, id])));
            }
            Candidates::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Adds many ids at once. A batch at least a quarter the size of the set is merged in one
    /// pass, which builds full tree nodes instead of inserting one id at a time (a
    /// subscription's snapshot adds every object of a type to the type's set this way).
    fn extend(&mut self, mut ids: Vec<ObjectId>) {
        match self {
            _ if ids.is_empty() => {}
            Candidates::None if ids.len() == 1 => *self = Candidates::One(ids[0]),
            Candidates::None => *self = Candidates::Many(Box::new(ids.into_iter().collect())),
            Candidates::One(one) => {
                ids.push(*one);
                *self = Candidates::Many(Box::new(ids.into_iter().collect()));
            }
            Candidates::Many(set) if ids.len() >= set.len() / 4 => {
                let mut batch: BTreeSet<ObjectId> = ids.into_iter().collect();
                set.append(&mut batch);
            }
            Candidates::Many(set) => set.extend(ids),
        }
    }

    fn remove(&mut self, id: ObjectId) {
        match self {
            Candidates::One(one) if *one == id => *self = Candidates::None,
            Candidates::None | Candidates::One(_) => {}
            Candidates::Many(set) => {
                set.remove(&id);
                if set.is_empty() {
                    *self = Candidates::None;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Candidates::None)
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let (one, many) = match self {
            Candidates::None => (None, None),
            Candidates::One(id) => (Some(*id), None),
            Candidates::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// The candidates of every value of one index.
///
/// The empty value (shared by every member of a type's all-objects index) is kept apart from
/// the others: it is the most common one, and is then found without hashing or comparing it.
#[derive(Debug, Default)]
pub(super) struct IndexCandidates {
    empty: Candidates,
    values: hashbrown::HashMap<Value, Candidates, FastBuild>,
}

impl IndexCandidates {
    /// Records that `id` has (or had) `value`.
    pub fn insert(&mut self, value: &[u8], id: ObjectId) {
        if value.is_empty() {
            self.empty.insert(id);
            return;
        }
        match self.values.entry_ref(value) {
            EntryRef::Occupied(mut e) => e.get_mut().insert(id),
            EntryRef::Vacant(e) => {
                e.insert_with_key(Value::new(value), Candidates::One(id));
            }
        }
    }

    /// Adds objects that have the index with the empty value (as every object has its type's
    /// all-objects index), many at once.
    pub fn extend_empty(&mut self, ids: Vec<ObjectId>) {
        self.empty.extend(ids);
    }

    /// Makes room for `additional` more values without growing the table on the way.
    pub fn reserve(&mut self, additional: usize) {
        self.values.reserve(additional);
    }

    /// Forgets that `id` had `value`.
    pub fn remove(&mut self, value: &[u8], id: ObjectId) {
        if value.is_empty() {
            self.empty.remove(id);
            return;
        }
        if let Some(candidates) = self.values.get_mut(value) {
            candidates.remove(id);
            if candidates.is_empty() {
                self.values.remove(value);
            }
        }
    }

    /// The objects that have or had `value`, if any.
    pub fn get(&self, value: &[u8]) -> Option<&Candidates> {
        let candidates = match value.is_empty() {
            true => &self.empty,
            false => self.values.get(value)?,
        };
        (!candidates.is_empty()).then_some(candidates)
    }

    /// How many (value, object) pairs are recorded.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.empty.iter().count()
            + self
                .values
                .values()
                .map(|c| c.iter().count())
                .sum::<usize>()
    }

    /// Whether no object has or had any value.
    pub fn is_empty(&self) -> bool {
        self.empty.is_empty() && self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_of_one_value_take_two_words() {
        assert_eq!(std::mem::size_of::<Candidates>(), 16);
    }

    #[test]
    fn ids_added_in_a_batch_join_those_already_there() {
        let ids = |c: &IndexCandidates| {
            c.get(b"")
                .map(|c| c.iter().map(|id| id.0).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut c = IndexCandidates::default();
        c.extend_empty(Vec::new());
        assert!(c.is_empty());
        c.extend_empty(vec![ObjectId(7)]);
        assert_eq!(ids(&c), [7]);
        c.extend_empty(vec![ObjectId(9), ObjectId(3), ObjectId(7)]);
        assert_eq!(ids(&c), [3, 7, 9]);
        // Large enough to be merged, then small enough to be inserted one by one.
        c.extend_empty((10..20).map(ObjectId).collect());
        c.extend_empty(vec![ObjectId(1), ObjectId(15)]);
        let mut expected = vec![1, 3, 7, 9];
        expected.extend(10..20);
        assert_eq!(ids(&c), expected);
        c.insert(b"", ObjectId(2));
        c.remove(b"", ObjectId(19));
        expected.insert(1, 2);
        expected.pop();
        assert_eq!(ids(&c), expected);
    }

    #[test]
    fn empty_and_other_values_come_and_go() {
        let mut c = IndexCandidates::default();
        c.insert(b"", ObjectId(2));
        c.insert(&Vec::new(), ObjectId(1));
        c.insert(b"x", ObjectId(3));
        let ids = |v: &[u8], c: &IndexCandidates| {
            c.get(v)
                .map(|c| c.iter().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(ids(b"", &c), vec![ObjectId(1), ObjectId(2)]);
        assert_eq!(ids(b"x", &c), vec![ObjectId(3)]);
        c.remove(b"", ObjectId(1));
        c.remove(b"", ObjectId(2));
        assert!(c.get(b"").is_none());
        assert!(!c.is_empty());
        c.remove(b"x", ObjectId(3));
        assert!(c.is_empty());
    }
}
