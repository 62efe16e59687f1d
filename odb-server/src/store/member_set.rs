//! The member set of an index value with two members or more: object ids kept sorted in chunks
//! of at most [`CHUNK`] ids.
//!
//! Object ids are handed out in ascending order, so members mostly join at the end: a full last
//! chunk is then followed by a new one rather than split, and chunks stay full. That takes a
//! little over 8 bytes per member, where a `BTreeSet` filled in order takes about 21. A chunk
//! that fills up elsewhere is split in two; chunks that empty are dropped, and a chunk much
//! emptier than its capacity gives memory back.

use odb_wire::ObjectId;

/// Most ids per chunk.
const CHUNK: usize = 512;

/// A sorted set of object ids; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct MemberSet {
    /// Non-empty chunks, each sorted, every id of a chunk below every id of the next.
    chunks: Vec<Vec<ObjectId>>,
    len: usize,
}

impl MemberSet {
    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The smallest id.
    pub fn first(&self) -> Option<ObjectId> {
        self.chunks.first()?.first().copied()
    }

    /// The chunk where `o` is or belongs: the last one starting at or below it (or the first).
    fn chunk_of(&self, o: ObjectId) -> usize {
        self.chunks
            .partition_point(|c| c.first().is_some_and(|&f| f <= o))
            .saturating_sub(1)
    }

    /// Adds an id; returns whether it was new.
    pub fn insert(&mut self, o: ObjectId) -> bool {
        let c = self.chunk_of(o);
        let last = c + 1 == self.chunks.len();
        let Some(chunk) = self.chunks.get_mut(c) else {
            self.chunks.push(vec![o]);
            self.len += 1;
            return true;
        };
        let Err(pos) = chunk.binary_search(&o) else {
            return false;
        };
        self.len += 1;
        if chunk.len() < CHUNK {
            chunk.insert(pos, o);
            return true;
        }
        if pos == chunk.len() && last {
            // Appending to the full last chunk: start a new one.
            let mut next = Vec::with_capacity(CHUNK);
            next.push(o);
            self.chunks.push(next);
            return true;
        }
        // Split the full chunk in two halves, then insert.
        let mut upper = Vec::with_capacity(CHUNK);
        upper.extend(chunk.drain(CHUNK / 2..));
        if pos <= CHUNK / 2 {
            chunk.insert(pos, o);
        } else {
            upper.insert(pos - CHUNK / 2, o);
        }
        self.chunks.insert(c + 1, upper);
        true
    }

    /// Removes an id; returns whether it was there.
    pub fn remove(&mut self, o: ObjectId) -> bool {
        let c = self.chunk_of(o);
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let Ok(pos) = chunk.binary_search(&o) else {
            return false;
        };
        chunk.remove(pos);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(c);
        } else if chunk.capacity() >= 64 && chunk.len() < chunk.capacity() / 4 {
            chunk.shrink_to(chunk.len() * 2);
        }
        true
    }

    /// The ids from `lo` to `hi` (inclusive) in ascending order, found without walking the
    /// chunks before `lo`.
    pub fn range(&self, lo: ObjectId, hi: ObjectId) -> impl Iterator<Item = ObjectId> + '_ {
        let from = self.chunk_of(lo);
        self.chunks
            .get(from..)
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
            .skip_while(move |&o| o < lo)
            .take_while(move |&o| o <= hi)
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// How many ids the chunks have room for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

impl FromIterator<ObjectId> for MemberSet {
    fn from_iter<I: IntoIterator<Item = ObjectId>>(ids: I) -> Self {
        let mut set = MemberSet::default();
        for o in ids {
            set.insert(o);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_joining_in_order_fill_their_chunks() {
        let n = 100 * CHUNK as u64;
        let set: MemberSet = (1..=n).map(ObjectId).collect();
        assert_eq!(set.len(), n as usize);
        assert_eq!(set.chunks.len(), 100);
        assert!(set.capacity() <= n as usize + CHUNK, "{}", set.capacity());
        assert!(set.iter().eq((1..=n).map(ObjectId)));
        assert_eq!(set.first(), Some(ObjectId(1)));
    }

    #[test]
    fn agrees_with_a_btree_set() {
        let mut set = MemberSet::default();
        let mut model = BTreeSet::new();
        let mut x = 7u64;
        for step in 0..200_000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let o = ObjectId((x >> 33) % 5000);
            // Mostly inserts at first, mostly removals later.
            let insert = (x >> 20) % 100 < if step < 100_000 { 70 } else { 30 };
            if insert {
                assert_eq!(set.insert(o), model.insert(o));
            } else {
                assert_eq!(set.remove(o), model.remove(&o));
            }
            assert_eq!(set.len(), model.len());
        }
        assert!(set.iter().eq(model.iter().copied()));
        assert_eq!(set.first(), model.first().copied());
        for (lo, hi) in [(0, 5000), (17, 17), (100, 2600), (4990, 9000), (300, 200)] {
            let (lo, hi) = (ObjectId(lo), ObjectId(hi));
            let expected: Vec<ObjectId> = model
                .iter()
                .copied()
                .filter(|&o| lo <= o && o <= hi)
                .collect();
            assert_eq!(set.range(lo, hi).collect::<Vec<_>>(), expected);
        }
        for c in &set.chunks {
            assert!(!c.is_empty() && c.len() <= CHUNK);
        }
        for o in model.iter().copied().collect::<Vec<_>>() {
            assert!(set.remove(o));
        }
        assert_eq!((set.len(), set.chunks.len()), (0, 0));
        assert!(!set.remove(ObjectId(1)));
    }

    #[test]
    fn removing_most_ids_gives_memory_back() {
        let n = 20 * CHUNK as u64;
        let mut set: MemberSet = (0..n).map(ObjectId).collect();
        for o in (0..n).filter(|o| o & 15 != 0) {
            set.remove(ObjectId(o));
        }
        assert!(set.capacity() <= n as usize / 4, "{}", set.capacity());
        assert!(set.iter().eq((0..n).step_by(16).map(ObjectId)));
    }
}
