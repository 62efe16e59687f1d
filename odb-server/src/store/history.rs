//! The conflict history of keys that have no live holder, and the count of live stamps.
//!
//! The tid of the last write of a field is kept in its object, and that of an index value in the
//! value's member set, while they exist. What is left when an object is deleted or an index value
//! loses its last member is kept here, for the most recent tids only.
//!
//! A commit is validated by comparing its base tid with the stamps of the keys it read. A stamp
//! at or below the base tid can never cause a conflict, so once every base tid the server still
//! accepts is at least `horizon`, stamps at or below `horizon` carry no information and are
//! dropped. Each commit's stamped keys are remembered in tid order, so dropping the oldest tids
//! costs time proportional to what they stamped, never a scan of the whole map.

use bytes::Bytes;
use odb_wire::hash::FastMap;
use odb_wire::{FieldId, IndexId, Key, ObjectId, Tid};
use std::collections::{HashMap, VecDeque};

/// The stamps of holderless keys. Field keys, by server-granted object ids, use the fast id
/// hasher; index values come from clients and keep the default, seeded one. Index values are
/// grouped by index so that they can be looked up by their bytes.
#[derive(Debug, Default)]
struct Stamps {
    fields: FastMap<(ObjectId, FieldId), Tid>,
    values: FastMap<IndexId, HashMap<Bytes, Tid>>,
    len: usize,
}

impl Stamps {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = Stamps::default();
    }

    fn get(&self, key: &Key) -> Option<Tid> {
        match key {
            Key::Field(o, f) => self.fields.get(&(*o, *f)).copied(),
            Key::Index(i, v) => self.values.get(i)?.get(&v[..]).copied(),
        }
    }

    fn insert(&mut self, key: &Key, tid: Tid) {
        let previous = match key {
            Key::Field(o, f) => self.fields.insert((*o, *f), tid),
            Key::Index(i, v) => self.values.entry(*i).or_default().insert(v.clone(), tid),
        };
        if previous.is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Tid> {
        match key {
            Key::Field(o, f) => {
                let removed = self.fields.remove(&(*o, *f));
                self.len -= usize::from(removed.is_some());
                removed
            }
            Key::Index(i, v) => self.remove_index(*i, v),
        }
    }

    fn remove_index(&mut self, index: IndexId, value: &[u8]) -> Option<Tid> {
        let values = self.values.get_mut(&index)?;
        let removed = values.remove(value);
        if values.is_empty() {
            self.values.remove(&index);
        }
        self.len -= usize::from(removed.is_some());
        removed
    }
}

/// Stamps of the last write of every holderless key written after the horizon.
#[derive(Debug)]
pub(crate) struct History {
    last_write: Stamps,
    /// Keys stamped at each retained tid, oldest first.
    by_tid: VecDeque<(Tid, Vec<Key>)>,
    /// How many live stamps (kept by objects and index values) each retained tid holds: one
    /// count per tid from `live_first` on, so that a stamp's count is found by subtraction.
    live: VecDeque<u64>,
    /// The tid of `live`'s first count.
    live_first: Tid,
    /// Their sum.
    live_total: u64,
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
            last_write: Stamps::default(),
            by_tid: VecDeque::new(),
            live: VecDeque::new(),
            live_first: Tid(0),
            live_total: 0,
            horizon: Tid(0),
            retained,
        }
    }

    /// The oldest base tid whose reads can still be validated.
    pub fn horizon(&self) -> Tid {
        self.horizon
    }

    /// Whether a stamp still carries information.
    pub fn counts(&self, stamp: Tid) -> bool {
        stamp > self.horizon
    }

    /// The tid that last wrote a holderless key; `Tid(0)` if it has none after the horizon.
    pub fn last_write(&self, key: &Key) -> Tid {
        if self.last_write.is_empty() {
            return Tid(0);
        }
        self.last_write.get(key).unwrap_or_default()
    }

    /// How many keys have a stamp after the horizon, live or holderless.
    pub fn len(&self) -> usize {
        self.last_write.len() + self.live_total as usize
    }

    /// How many live stamps are counted.
    #[cfg(test)]
    pub fn live_count(&self) -> u64 {
        self.live_total
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
        self.live.clear();
        self.live_total = 0;
        self.horizon = self.horizon.max(now);
    }

    /// Counts a live stamp at `tid`: usually the newest tid so far; an older one (a roll-back
    /// restoring the stamps it undid) is counted in its place.
    pub fn live_add(&mut self, tid: Tid) {
        if !self.counts(tid) {
            return;
        }
        if self.live.is_empty() {
            self.live_first = tid;
        }
        // Tids without stamps get a zero count, before or after those counted so far.
        while tid < self.live_first {
            self.live.push_front(0);
            self.live_first = Tid(self.live_first.0 - 1);
        }
        let at = (tid.0 - self.live_first.0) as usize;
        if at >= self.live.len() {
            self.live.resize(at + 1, 0);
        }
        if let Some(n) = self.live.get_mut(at) {
            *n += 1;
            self.live_total += 1;
        }
    }

    /// Stops counting a live stamp (overwritten, or moved here).
    pub fn live_drop(&mut self, tid: Tid) {
        if !self.counts(tid) || tid < self.live_first {
            return;
        }
        let at = (tid.0 - self.live_first.0) as usize;
        if let Some(n) = self.live.get_mut(at) {
            if *n > 0 {
                *n -= 1;
                self.live_total -= 1;
            }
        }
    }

    /// Replaces a live stamp by one at `tid`.
    pub fn live_restamp(&mut self, old: Tid, tid: Tid) {
        if old != tid {
            self.live_drop(old);
            self.live_add(tid);
        }
    }

    /// Keeps the stamp of a key that lost its holder (if it still carries information and no
    /// later stamp is kept).
    pub fn keep(&mut self, key: Key, tid: Tid) {
        if !self.counts(tid) {
            return;
        }
        if let Some(previous) = self.last_write.get(&key) {
            if previous >= tid {
                return;
            }
        }
        self.last_write.insert(&key, tid);
        match self.by_tid.back_mut() {
            Some((t, keys)) if *t == tid => keys.push(key),
            Some((t, _)) if *t > tid => {
                let p = self.by_tid.partition_point(|(t, _)| *t < tid);
                match self.by_tid.get_mut(p) {
                    Some((t, keys)) if *t == tid => keys.push(key),
                    _ => self.by_tid.insert(p, (tid, vec![key])),
                }
            }
            _ => self.by_tid.push_back((tid, vec![key])),
        }
    }

    /// Removes the stamp of a holderless key (it has a holder again), returning it if it still
    /// carries information.
    pub fn take(&mut self, key: &Key) -> Option<Tid> {
        if self.last_write.is_empty() {
            return None;
        }
        self.last_write.remove(key)
    }

    /// [`History::take`] for an index value, without building its key.
    pub fn take_index(&mut self, index: IndexId, value: &[u8]) -> Option<Tid> {
        if self.last_write.is_empty() {
            return None;
        }
        self.last_write.remove_index(index, value)
    }

    /// Ends a commit at `tid` (newer than every tid recorded before): forgets what falls out of
    /// the retained window.
    pub fn record(&mut self, tid: Tid) {
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
                if self.last_write.get(&key) == Some(tid) {
                    self.last_write.remove(&key);
                }
            }
        }
        while self.live_first.0 <= horizon {
            let Some(n) = self.live.pop_front() else {
                break;
            };
            self.live_first = Tid(self.live_first.0 + 1);
            self.live_total -= n;
        }
        if self.by_tid.capacity() > 4 * self.by_tid.len().max(16) {
            self.by_tid.shrink_to_fit();
        }
        if self.live.capacity() > 4 * self.live.len().max(16) {
            self.live.shrink_to_fit();
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
            h.keep(key(t), Tid(t));
            h.keep(key(0), Tid(t));
            h.record(Tid(t));
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
        h.keep(key(1), Tid(1));
        h.record(Tid(1));
        h.record(Tid(5));
        assert_eq!(h.horizon(), Tid(3));
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn unbounded_by_default_and_shrinkable_later() {
        let mut h = History::default();
        for t in 1..=100 {
            h.keep(key(t), Tid(t));
            h.record(Tid(t));
        }
        assert_eq!((h.horizon(), h.len()), (Tid(0), 100));
        h.set_retained(10, Tid(100));
        assert_eq!((h.horizon(), h.len()), (Tid(90), 10));
        h.forget_all(Tid(100));
        assert_eq!((h.horizon(), h.len()), (Tid(100), 0));
    }
}
