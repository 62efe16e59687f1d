//! The conflict history: the tid of the last write of every conflict key, kept only for the
//! most recent tids.
//!
//! A commit is validated by comparing its base tid with the stamps of the keys it read. A stamp
//! at or below the base tid can never cause a conflict, so once every base tid the server still
//! accepts is at least `horizon`, stamps at or below `horizon` carry no information and are
//! dropped. Each commit's stamped keys are remembered in tid order, so dropping the oldest tids
//! costs time proportional to what they stamped, never a scan of the whole map.

use odb_wire::{Key, Tid};
use std::collections::{HashMap, VecDeque};

/// Stamps of the last write of every key written after the horizon.
#[derive(Debug)]
pub(crate) struct History {
    last_write: HashMap<Key, Tid>,
    /// Keys stamped by each retained commit, oldest first.
    by_tid: VecDeque<(Tid, Vec<Key>)>,
    /// The oldest base tid that can still be validated.
    horizon: Tid,
    /// How many tids after the horizon are kept.
    retained: u64,
}

impl Default for History {
    /// A history that never forgets.
    fn default() -> Self {
        History::new(u64::MAX)
    }
}

impl History {
    /// An empty history keeping the stamps of the last `retained` tids.
    pub fn new(retained: u64) -> Self {
        History {
            last_write: HashMap::new(),
            by_tid: VecDeque::new(),
            horizon: Tid(0),
            retained,
        }
    }

    /// The oldest base tid whose reads can still be validated.
    pub fn horizon(&self) -> Tid {
        self.horizon
    }

    /// The tid that last wrote a key; `Tid(0)` if it was never written or its stamp is older
    /// than the horizon (which, for any acceptable base tid, means the same thing).
    pub fn last_write(&self, key: &Key) -> Tid {
        self.last_write.get(key).copied().unwrap_or_default()
    }

    /// How many keys have a stamp.
    pub fn len(&self) -> usize {
        self.last_write.len()
    }

    /// Changes how many tids are kept and forgets what falls out, as of the current tid.
    pub fn set_retained(&mut self, retained: u64, now: Tid) {
        self.retained = retained;
        self.advance(now);
    }

    /// Forgets every stamp: from now on only base tids of at least `now` are accepted. For a
    /// database whose history was not kept (loaded from storage, for example).
    pub fn forget_all(&mut self, now: Tid) {
        self.last_write.clear();
        self.by_tid.clear();
        self.horizon = self.horizon.max(now);
    }

    /// Records every key a commit at `tid` wrote, then forgets what falls out of the retained
    /// window. `tid` must be newer than every tid recorded before.
    pub fn record(&mut self, tid: Tid, keys: Vec<Key>) {
        for key in &keys {
            self.last_write.insert(key.clone(), tid);
        }
        if !keys.is_empty() {
            self.by_tid.push_back((tid, keys));
        }
        self.advance(tid);
    }

    /// Moves the horizon to `now - retained` if that is later, dropping the stamps at or below
    /// it (unless a later commit wrote the key again).
    fn advance(&mut self, now: Tid) {
        let Some(horizon) = now.0.checked_sub(self.retained) else {
            return;
        };
        if horizon <= self.horizon.0 {
            return;
        }
        self.horizon = Tid(horizon);
        while let Some((tid, _)) = self.by_tid.front() {
            if tid.0 > horizon {
                break;
            }
            let Some((tid, keys)) = self.by_tid.pop_front() else {
                break;
            };
            for key in keys {
                if self.last_write.get(&key) == Some(&tid) {
                    self.last_write.remove(&key);
                }
            }
        }
        if self.by_tid.capacity() > 4 * self.by_tid.len().max(16) {
            self.by_tid.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::{FieldId, ObjectId};

    fn key(o: u64) -> Key {
        Key::Field(ObjectId(o), FieldId(1))
    }

    #[test]
    fn keeps_only_the_retained_tids() {
        let mut h = History::new(3);
        for t in 1..=10 {
            h.record(Tid(t), vec![key(t), key(0)]);
        }
        assert_eq!(h.horizon(), Tid(7));
        assert_eq!(h.len(), 4, "keys 8, 9, 10 and the one written every time");
        assert_eq!(h.last_write(&key(0)), Tid(10));
        assert_eq!(h.last_write(&key(7)), Tid(0), "at the horizon: forgotten");
        assert_eq!(h.last_write(&key(8)), Tid(8));
    }

    #[test]
    fn a_commit_without_keys_still_moves_the_horizon() {
        let mut h = History::new(2);
        h.record(Tid(1), vec![key(1)]);
        h.record(Tid(5), Vec::new());
        assert_eq!(h.horizon(), Tid(3));
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn unbounded_by_default_and_shrinkable_later() {
        let mut h = History::default();
        for t in 1..=100 {
            h.record(Tid(t), vec![key(t)]);
        }
        assert_eq!((h.horizon(), h.len()), (Tid(0), 100));
        h.set_retained(10, Tid(100));
        assert_eq!((h.horizon(), h.len()), (Tid(90), 10));
        h.forget_all(Tid(100));
        assert_eq!((h.horizon(), h.len()), (Tid(100), 0));
    }
}
