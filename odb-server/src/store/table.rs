//! A dense keyed table: the entries sit next to each other in fixed-size chunks, and a hash
//! table of their positions (four bytes per bucket, instead of a whole entry) finds them by key.
//!
//! Removing an entry moves the last one into its place, so the entries stay dense: memory freed
//! by deletions is reused, and chunks left empty are given back (one spare is kept, so that a
//! table going up and down around a chunk boundary does not allocate each time). The hash table
//! shrinks once it is mostly empty. Positions are only stable until the next removal.
//!
//! Growing by whole chunks, rather than by doubling one `Vec`, never copies the entries and
//! never frees a large block: a table of a million entries does not leave its previous, half as
//! large copy for the allocator to give back.

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

/// Most entries a [`Table`] holds: positions are stored as `u32`.
pub(crate) const MAX_ENTRIES: usize = u32::MAX as usize;

/// Entries per chunk (a power of two).
const CHUNK: usize = 4096;

/// Tables smaller than this never shrink.
const MIN_SHRINK: usize = 64;

/// An entry of a [`Table`], which carries its own key (possibly encoded, so it is given by
/// value).
pub(crate) trait Keyed {
    /// The key type.
    type Key: Copy + Hash + Eq;
    /// The entry's key.
    fn key(&self) -> Self::Key;
}

/// A table is full: it already holds as many entries as it may ([`MAX_ENTRIES`]).
#[derive(Debug)]
pub(crate) struct Full;

/// Entries in positional order, in chunks of [`CHUNK`] (the first one grows up to that size).
struct Chunks<E> {
    chunks: Vec<Vec<E>>,
    len: usize,
}

impl<E> Chunks<E> {
    fn get(&self, pos: usize) -> Option<&E> {
        self.chunks.get(pos / CHUNK)?.get(pos % CHUNK)
    }

    fn get_mut(&mut self, pos: usize) -> Option<&mut E> {
        self.chunks.get_mut(pos / CHUNK)?.get_mut(pos % CHUNK)
    }

    fn push(&mut self, entry: E) {
        let chunk = match self.chunks.get_mut(self.len / CHUNK) {
            Some(chunk) => chunk,
            None => {
                let capacity = if self.chunks.is_empty() { 0 } else { CHUNK };
                self.chunks.push(Vec::with_capacity(capacity));
                let Some(chunk) = self.chunks.last_mut() else {
                    return;
                };
                chunk
            }
        };
        if chunk.len() == chunk.capacity() {
            // Only the first chunk grows: to twice its size, at most to a whole chunk.
            let grow = chunk.capacity().max(4).min(CHUNK - chunk.len());
            chunk.reserve_exact(grow);
        }
        chunk.push(entry);
        self.len += 1;
    }

    /// Removes the last entry.
    fn pop(&mut self) -> Option<E> {
        let last = self.len.checked_sub(1)?;
        let entry = self.chunks.get_mut(last / CHUNK)?.pop()?;
        self.len = last;
        // The chunks the entries need, and one spare.
        self.chunks.truncate(last.div_ceil(CHUNK) + 1);
        if last < CHUNK / 2 {
            // Down to the first chunk, which shrinks as it empties.
            self.chunks.truncate(1);
            if let Some(first) = self.chunks.first_mut() {
                if first.capacity() > MIN_SHRINK.max(4 * last) {
                    first.shrink_to(2 * last);
                }
            }
        }
        Some(entry)
    }

    /// Removes the entry at `pos`, moving the last one into its place.
    fn swap_remove(&mut self, pos: usize) -> Option<E> {
        let last = self.pop()?;
        if pos == self.len {
            return Some(last);
        }
        self.get_mut(pos).map(|slot| std::mem::replace(slot, last))
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

/// Entries found by key; see the module documentation.
pub(crate) struct Table<E, S> {
    entries: Chunks<E>,
    positions: HashTable<u32>,
    build: S,
    /// Most entries: [`MAX_ENTRIES`], less in tests that fill a table.
    max: usize,
}

impl<E, S: Default> Default for Table<E, S> {
    fn default() -> Self {
        Table {
            entries: Chunks {
                chunks: Vec::new(),
                len: 0,
            },
            positions: HashTable::new(),
            build: S::default(),
            max: MAX_ENTRIES,
        }
    }
}

impl<E, S: Default> Table<E, S> {
    /// An empty table that holds at most `max` entries, to test what happens when one is full.
    #[cfg(test)]
    pub fn with_max(max: usize) -> Self {
        Table {
            max: max.min(MAX_ENTRIES),
            ..Table::default()
        }
    }
}

/// The hash of the entry at `pos`, as `rehash` computes it.
fn hash_at<E>(entries: &Chunks<E>, rehash: &impl Fn(&E) -> u64, pos: u32) -> u64 {
    entries.get(pos as usize).map_or(0, rehash)
}

/// Operations by hash: the caller hashes the key it looks for, says which entry matches it, and
/// gives the hash of any entry (for when the hash table grows, shrinks or repoints an entry).
/// This lets an entry's key live outside the entry, as an index value's does.
impl<E, S> Table<E, S> {
    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len
    }

    /// How many more entries the table can take.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.entries.len)
    }

    /// Where the entry with this hash matching `eq` is.
    pub fn find(&self, hash: u64, eq: impl Fn(&E) -> bool) -> Option<usize> {
        let entries = &self.entries;
        self.positions
            .find(hash, |&p| entries.get(p as usize).is_some_and(&eq))
            .map(|&p| p as usize)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &E> {
        self.entries.chunks.iter().flatten()
    }

    /// How many entries the `Vec` and the hash table have room for.
    #[cfg(test)]
    pub fn capacity(&self) -> (usize, usize) {
        (self.entries.capacity(), self.positions.capacity())
    }

    /// The entry at a position.
    pub fn at(&self, pos: usize) -> Option<&E> {
        self.entries.get(pos)
    }

    /// The entry at a position, to change (but not its key).
    pub fn at_mut(&mut self, pos: usize) -> Option<&mut E> {
        self.entries.get_mut(pos)
    }

    /// Makes room in the hash table for `additional` more entries; `rehash` gives an entry's
    /// hash, for the entries moved if the table grows.
    pub fn reserve_with(&mut self, additional: usize, rehash: impl Fn(&E) -> u64) {
        let entries = &self.entries;
        self.positions
            .reserve(additional, |&p| hash_at(entries, &rehash, p));
    }

    /// Adds an entry whose key no entry has, with that key's `hash`. Fails, giving the entry
    /// back, if the table is full.
    pub fn insert_new(
        &mut self,
        hash: u64,
        entry: E,
        rehash: impl Fn(&E) -> u64,
    ) -> Result<(), (Full, E)> {
        let Ok(pos) = u32::try_from(self.entries.len) else {
            return Err((Full, entry));
        };
        if pos == u32::MAX || self.entries.len >= self.max {
            return Err((Full, entry));
        }
        self.entries.push(entry);
        let entries = &self.entries;
        self.positions
            .insert_unique(hash, pos, |&p| hash_at(entries, &rehash, p));
        Ok(())
    }

    /// Removes the entry with this hash matching `eq`. The last entry takes its position.
    pub fn remove_by(
        &mut self,
        hash: u64,
        eq: impl Fn(&E) -> bool,
        rehash: impl Fn(&E) -> u64,
    ) -> Option<E> {
        let entries = &self.entries;
        let found = self
            .positions
            .find_entry(hash, |&p| entries.get(p as usize).is_some_and(&eq))
            .ok()?;
        let (pos, _) = found.remove();
        let last = self.entries.len.checked_sub(1)?;
        if pos as usize != last {
            // The last entry moves to `pos`: repoint its position.
            let moved = hash_at(&self.entries, &rehash, last as u32);
            if let Some(p) = self.positions.find_mut(moved, |&p| p as usize == last) {
                *p = pos;
            }
        }
        let removed = self.entries.swap_remove(pos as usize);
        self.shrink(&rehash);
        removed
    }

    /// Gives the hash table's memory back once it is mostly empty.
    fn shrink(&mut self, rehash: &impl Fn(&E) -> u64) {
        let len = self.entries.len;
        if self.positions.capacity() > MIN_SHRINK.max(4 * len) {
            let entries = &self.entries;
            self.positions
                .shrink_to(2 * len, |&p| hash_at(entries, rehash, p));
        }
    }
}

/// Operations by key, for entries that carry their key.
impl<E: Keyed, S: BuildHasher + Clone> Table<E, S> {
    /// The hash of a key, as the table computes it.
    pub fn hash(&self, key: &E::Key) -> u64 {
        self.build.hash_one(key)
    }

    /// Where the entry with this key is.
    pub fn position(&self, key: &E::Key) -> Option<usize> {
        self.find(self.hash(key), |e| e.key() == *key)
    }

    /// The entry with this key.
    pub fn get(&self, key: &E::Key) -> Option<&E> {
        self.position(key).and_then(|p| self.entries.get(p))
    }

    /// Makes room in the hash table for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        let build = self.build.clone();
        self.reserve_with(additional, |e| build.hash_one(e.key()));
    }

    /// Adds an entry, or replaces the one with the same key (which is returned). Fails, giving
    /// the entry back, if the table is full.
    pub fn insert(&mut self, entry: E) -> Result<Option<E>, (Full, E)> {
        let key = entry.key();
        let hash = self.hash(&key);
        if let Some(pos) = self.find(hash, |e| e.key() == key) {
            return match self.entries.get_mut(pos) {
                Some(slot) => Ok(Some(std::mem::replace(slot, entry))),
                None => Err((Full, entry)),
            };
        }
        let build = self.build.clone();
        self.insert_new(hash, entry, |e| build.hash_one(e.key()))
            .map(|()| None)
    }

    /// Removes the entry with this key. The last entry takes its position.
    pub fn remove(&mut self, key: &E::Key) -> Option<E> {
        let build = self.build.clone();
        self.remove_by(
            build.hash_one(key),
            |e| e.key() == *key,
            |e| build.hash_one(e.key()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::hash::FastBuild;

    #[derive(Debug, PartialEq)]
    struct E(u64, &'static str);

    impl Keyed for E {
        type Key = u64;
        fn key(&self) -> u64 {
            self.0
        }
    }

    type T = Table<E, FastBuild>;

    fn check(t: &T, live: impl Iterator<Item = u64>) {
        let mut n = 0;
        for k in live {
            let pos = t.position(&k).unwrap();
            assert_eq!(t.at(pos).unwrap().0, k);
            n += 1;
        }
        assert_eq!(t.len(), n);
    }

    #[test]
    fn inserts_replaces_and_finds() {
        let mut t = T::default();
        assert!(t.insert(E(1, "a")).unwrap().is_none());
        assert!(t.insert(E(2, "b")).unwrap().is_none());
        assert_eq!(t.insert(E(1, "c")).unwrap(), Some(E(1, "a")));
        assert_eq!(t.get(&1), Some(&E(1, "c")));
        assert_eq!(t.len(), 2);
        assert!(t.get(&3).is_none());
        let p = t.position(&2).unwrap();
        t.at_mut(p).unwrap().1 = "d";
        assert_eq!(t.get(&2), Some(&E(2, "d")));
    }

    #[test]
    fn removal_moves_the_last_entry_into_the_gap() {
        let mut t = T::default();
        for k in 0..10 {
            t.insert(E(k, "")).unwrap();
        }
        assert_eq!(t.position(&9), Some(9));
        assert_eq!(t.remove(&3), Some(E(3, "")));
        assert_eq!(
            t.position(&9),
            Some(3),
            "the last entry took the freed position"
        );
        assert_eq!(t.remove(&9), Some(E(9, "")));
        assert_eq!(t.remove(&9), None);
        assert_eq!(t.position(&8), Some(3));
        check(&t, [0, 1, 2, 4, 5, 6, 7, 8].into_iter());
        // Removing the last entry moves nothing.
        assert_eq!(t.remove(&7), Some(E(7, "")));
        check(&t, [0, 1, 2, 4, 5, 6, 8].into_iter());
    }

    /// Whether the removal test keeps a key: one in a thousand.
    fn kept(k: u64) -> bool {
        k.rem_euclid(1000) == 0
    }

    #[test]
    fn lookups_stay_right_after_many_removals_and_memory_shrinks() {
        let mut t = T::default();
        let n = 100_000u64;
        for k in 0..n {
            t.insert(E(k * 7, "")).unwrap();
        }
        let (entries, positions) = t.capacity();
        assert!(entries >= n as usize && positions >= n as usize);
        // Remove all but every 1000th, in an order unrelated to the positions.
        for k in 0..n {
            let k = (k * 7919) % n;
            if !kept(k) {
                assert_eq!(t.remove(&(k * 7)).map(|e| e.0), Some(k * 7));
            }
        }
        check(&t, (0..n).filter(|&k| kept(k)).map(|k| k * 7));
        let (entries, positions) = t.capacity();
        assert!(entries < 1000 && positions < 1000, "{entries} {positions}");
        for k in 0..n {
            t.insert(E(k * 7 + 1, "")).unwrap();
        }
        check(
            &t,
            (0..n)
                .filter(|&k| kept(k))
                .map(|k| k * 7)
                .chain((0..n).map(|k| k * 7 + 1)),
        );
    }

    #[test]
    fn chunks_are_kept_with_one_spare_at_most() {
        let mut t = T::default();
        let n = 3 * CHUNK as u64;
        for k in 0..n {
            t.insert(E(k, "")).unwrap();
        }
        assert_eq!(t.capacity().0, 3 * CHUNK);
        for k in (CHUNK as u64..n).rev() {
            t.remove(&k).unwrap();
        }
        assert_eq!(t.capacity().0, 2 * CHUNK, "the first chunk and one spare");
        // Going back and forth over the boundary reuses the spare.
        for _ in 0..3 {
            t.insert(E(n, "")).unwrap();
            assert_eq!(t.capacity().0, 2 * CHUNK);
            t.remove(&n).unwrap();
        }
        for k in 0..=CHUNK as u64 / 2 {
            t.remove(&k).unwrap();
        }
        assert_eq!(t.capacity().0, CHUNK, "the spare is dropped");
        check(&t, CHUNK as u64 / 2 + 1..CHUNK as u64);
        for k in CHUNK as u64 / 2 + 1..CHUNK as u64 - 10 {
            t.remove(&k).unwrap();
        }
        assert!(t.capacity().0 < 64, "the first chunk shrinks");
        check(&t, CHUNK as u64 - 10..CHUNK as u64);
    }

    #[test]
    fn a_create_delete_cycle_does_not_grow() {
        let mut t = T::default();
        for round in 0..50u64 {
            for k in 0..1000 {
                t.insert(E(round * 1000 + k, "")).unwrap();
            }
            for k in 0..1000 {
                t.remove(&(round * 1000 + k)).unwrap();
            }
        }
        assert_eq!(t.len(), 0);
        let (entries, positions) = t.capacity();
        assert!(
            entries <= 2048 && positions <= 2048,
            "{entries} {positions}"
        );
    }
}
