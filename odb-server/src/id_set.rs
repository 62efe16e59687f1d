//! A set of object ids kept as ranges of consecutive ids. The objects a connection creates come
//! from the id blocks granted to it, in order, so their ids are mostly consecutive: a million
//! of them usually take a handful of ranges instead of a hash set's 18 or more bytes each.

use odb_wire::ObjectId;
use std::collections::BTreeMap;

/// A set of ids; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct IdSet {
    /// First id of each range -> its last id (inclusive). Ranges neither overlap nor touch.
    ranges: BTreeMap<u64, u64>,
}

impl IdSet {
    /// The range holding `id`, as (first, last).
    fn range_of(&self, id: u64) -> Option<(u64, u64)> {
        let (&first, &last) = self.ranges.range(..=id).next_back()?;
        (id <= last).then_some((first, last))
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: ObjectId) -> bool {
        self.range_of(id.0).is_some()
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: ObjectId) {
        let id = id.0;
        if self.range_of(id).is_some() {
            return;
        }
        // Join the range ending right before `id` and the one starting right after it.
        let before = id
            .checked_sub(1)
            .and_then(|prev| self.range_of(prev))
            .map(|(first, _)| first);
        let after = id
            .checked_add(1)
            .and_then(|next| self.ranges.remove_entry(&next))
            .map(|(_, last)| last);
        let first = before.unwrap_or(id);
        self.ranges.insert(first, after.unwrap_or(id));
    }

    /// Adds every id from `first` to `last` (inclusive).
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        // Every range overlapping or touching the new one joins it.
        let joined: Vec<(u64, u64)> = self
            .ranges
            .range(..=last.saturating_add(1))
            .rev()
            .take_while(|(_, &l)| l.saturating_add(1) >= first)
            .map(|(&f, &l)| (f, l))
            .collect();
        let (mut first, mut last) = (first, last);
        for (f, l) in joined {
            self.ranges.remove(&f);
            first = first.min(f);
            last = last.max(l);
        }
        self.ranges.insert(first, last);
    }

    /// The ranges, as (first, last) inclusive, in ascending order.
    pub fn iter_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&f, &l)| (f, l))
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: ObjectId) {
        let id = id.0;
        let Some((first, last)) = self.range_of(id) else {
            return;
        };
        self.ranges.remove(&first);
        if first < id {
            self.ranges.insert(first, id - 1);
        }
        if id < last {
            self.ranges.insert(id + 1, last);
        }
    }

    /// How many ranges the set takes.
    #[cfg(test)]
    fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn consecutive_ids_take_one_range() {
        let mut s = IdSet::default();
        for id in (1..=1000).rev().chain(2000..3000) {
            s.insert(ObjectId(id));
        }
        assert_eq!(s.ranges(), 2);
        s.insert(ObjectId(1001));
        for id in 1002..2000 {
            s.insert(ObjectId(id));
        }
        assert_eq!(s.ranges(), 1, "filling the gap joins both ranges");
        assert!(s.contains(ObjectId(1)) && s.contains(ObjectId(2999)));
        assert!(!s.contains(ObjectId(0)) && !s.contains(ObjectId(3000)));
    }

    #[test]
    fn removal_splits_ranges() {
        let mut s = IdSet::default();
        for id in 10..20 {
            s.insert(ObjectId(id));
        }
        s.remove(ObjectId(15));
        s.remove(ObjectId(10));
        s.remove(ObjectId(19));
        s.remove(ObjectId(100));
        assert_eq!(s.ranges(), 2);
        let members: Vec<u64> = (0..30).filter(|&i| s.contains(ObjectId(i))).collect();
        assert_eq!(members, [11, 12, 13, 14, 16, 17, 18]);
    }

    #[test]
    fn ranges_join_what_they_overlap_or_touch() {
        let mut s = IdSet::default();
        s.insert(ObjectId(5));
        s.insert_range(10, 19);
        s.insert_range(30, 39);
        s.insert_range(20, 29);
        assert_eq!(s.iter_ranges().collect::<Vec<_>>(), [(5, 5), (10, 39)]);
        s.insert_range(0, 6);
        s.insert_range(8, 9);
        s.insert_range(u64::MAX - 1, u64::MAX);
        assert_eq!(
            s.iter_ranges().collect::<Vec<_>>(),
            [(0, 6), (8, 39), (u64::MAX - 1, u64::MAX)]
        );
        s.insert_range(3, 2);
        assert_eq!(s.ranges(), 3, "an empty range adds nothing");
        s.remove(ObjectId(20));
        assert!(!s.contains(ObjectId(20)) && s.contains(ObjectId(21)));
    }

    #[test]
    fn extreme_ids() {
        let mut s = IdSet::default();
        for id in [0, u64::MAX, u64::MAX - 1, 1] {
            s.insert(ObjectId(id));
        }
        assert_eq!(s.ranges(), 2);
        s.remove(ObjectId(u64::MAX));
        s.remove(ObjectId(0));
        assert!(s.contains(ObjectId(u64::MAX - 1)) && s.contains(ObjectId(1)));
        assert!(!s.contains(ObjectId(u64::MAX)) && !s.contains(ObjectId(0)));
    }

    #[test]
    fn agrees_with_a_set_on_a_random_sequence() {
        let mut s = IdSet::default();
        let mut model = BTreeSet::new();
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 33) % 200;
            if (x >> 20) & 1 == 0 {
                s.insert(ObjectId(id));
                model.insert(id);
            } else {
                s.remove(ObjectId(id));
                model.remove(&id);
            }
            for probe in [id.saturating_sub(1), id, id + 1] {
                assert_eq!(s.contains(ObjectId(probe)), model.contains(&probe));
            }
        }
        for id in 0..201 {
            assert_eq!(s.contains(ObjectId(id)), model.contains(&id));
        }
    }
}
