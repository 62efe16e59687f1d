//! A set of object ids kept as runs of consecutive ids.
//!
//! A connection creates objects with ids from the blocks the server granted it, mostly in
//! order, so the ids it created form a few long runs: a million creations in a row take one
//! entry instead of a million. Removing an id from the middle of a run splits it, so the set
//! never takes more entries than it holds ids.

use odb_wire::ObjectId;
use std::collections::BTreeMap;

/// Runs of consecutive ids: first id to last id, both included (so `u64::MAX` fits).
#[derive(Debug, Default)]
pub(crate) struct IdRuns {
    runs: BTreeMap<u64, u64>,
}

impl IdRuns {
    /// The run holding `id`, as (first, last).
    fn run_of(&self, id: u64) -> Option<(u64, u64)> {
        let (&first, &last) = self.runs.range(..=id).next_back()?;
        (id <= last).then_some((first, last))
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: ObjectId) -> bool {
        self.run_of(id.0).is_some()
    }

    /// Adds `id`, joining it to the runs it touches.
    pub fn insert(&mut self, id: ObjectId) {
        let id = id.0;
        if self.run_of(id).is_some() {
            return;
        }
        let before = id
            .checked_sub(1)
            .and_then(|prev| self.run_of(prev))
            .map(|(first, _)| first);
        let after_last = id
            .checked_add(1)
            .and_then(|next| self.runs.remove(&next))
            .unwrap_or(id);
        match before {
            Some(first) => self.runs.insert(first, after_last),
            None => self.runs.insert(id, after_last),
        };
    }

    /// Removes `id`, splitting its run if it lies inside one.
    pub fn remove(&mut self, id: ObjectId) {
        let id = id.0;
        let Some((first, last)) = self.run_of(id) else {
            return;
        };
        if id > first {
            self.runs.insert(first, id - 1);
        } else {
            self.runs.remove(&first);
        }
        if id < last {
            self.runs.insert(id + 1, last);
        }
    }

    /// How many runs the set takes.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(n: u64) -> ObjectId {
        ObjectId(n)
    }

    #[test]
    fn consecutive_ids_take_one_run() {
        let mut set = IdRuns::default();
        for n in 1..=1_000_000 {
            set.insert(id(n));
        }
        assert_eq!(set.runs(), 1);
        assert!(set.contains(id(1)) && set.contains(id(1_000_000)));
        assert!(!set.contains(id(0)) && !set.contains(id(1_000_001)));
    }

    #[test]
    fn runs_join_from_both_sides_and_split_on_removal() {
        let mut set = IdRuns::default();
        set.insert(id(10));
        set.insert(id(12));
        assert_eq!(set.runs(), 2);
        set.insert(id(11));
        assert_eq!(set.runs(), 1, "11 joins 10 and 12");
        set.remove(id(11));
        assert_eq!(set.runs(), 2);
        assert!(set.contains(id(10)) && !set.contains(id(11)) && set.contains(id(12)));
        set.remove(id(10));
        set.remove(id(12));
        assert_eq!(set.runs(), 0);
        set.remove(id(12));
        assert_eq!(set.runs(), 0, "removing a missing id changes nothing");
    }

    #[test]
    fn the_ends_of_the_id_space_fit() {
        let mut set = IdRuns::default();
        for n in [0, 1, u64::MAX - 1, u64::MAX] {
            set.insert(id(n));
        }
        assert_eq!(set.runs(), 2);
        set.remove(id(u64::MAX));
        set.remove(id(0));
        assert!(set.contains(id(1)) && set.contains(id(u64::MAX - 1)));
        assert!(!set.contains(id(0)) && !set.contains(id(u64::MAX)));
    }

    #[test]
    fn agrees_with_a_plain_set() {
        // A fixed pseudo-random sequence of inserts and removals over a small id range.
        let (mut runs, mut plain) = (IdRuns::default(), BTreeSet::new());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 200;
            if x & (1 << 40) == 0 {
                runs.insert(id(n));
                plain.insert(n);
            } else {
                runs.remove(id(n));
                plain.remove(&n);
            }
        }
        for n in 0..200 {
            assert_eq!(runs.contains(id(n)), plain.contains(&n), "id {n}");
        }
        assert!(runs.runs() <= plain.len());
    }
}
