//! The member set of an index value with two members or more: object ids kept sorted in chunks
//! of at most [`CHUNK`] ids, each id stored as a 32-bit offset from its chunk's base.
//!
//! Object ids are handed out in ascending order, so members mostly join at the end: a full last
//! chunk is then followed by a new one rather than split, and chunks stay full. Ids close to
//! each other also make the offsets small: a chunk holds ids less than 2^32 apart, and an id
//! further away from a chunk's base starts a chunk of its own. That takes a little over 4 bytes
//! per member, where a `BTreeSet` filled in order takes about 21. A chunk that fills up
//! elsewhere is split in two; chunks that empty are dropped, and a chunk much emptier than its
//! capacity gives memory back.

use odb_wire::ObjectId;

/// Most ids per chunk.
const CHUNK: usize = 512;

/// Sorted ids, each `base` plus an offset.
#[derive(Debug)]
struct Chunk {
    /// At or below every id of the chunk.
    base: u64,
    /// Sorted, not empty.
    offsets: Vec<u32>,
}

impl Chunk {
    /// A chunk holding `o` alone, with room for `capacity` ids.
    fn new(o: ObjectId, capacity: usize) -> Chunk {
        let mut offsets = Vec::with_capacity(capacity);
        offsets.push(0);
        Chunk { base: o.0, offsets }
    }

    fn first(&self) -> Option<ObjectId> {
        self.offsets.first().map(|&d| self.id(d))
    }

    fn id(&self, offset: u32) -> ObjectId {
        ObjectId(self.base + u64::from(offset))
    }

    /// The offset of `o`, if the chunk can hold it.
    fn offset(&self, o: ObjectId) -> Option<u32> {
        u32::try_from(o.0.checked_sub(self.base)?).ok()
    }

    /// Moves the base down to `o`, if the chunk can still hold its ids then.
    fn rebase(&mut self, o: ObjectId) -> bool {
        let Some(down) = self.base.checked_sub(o.0) else {
            return false;
        };
        let last = self.offsets.last().map_or(0, |&d| u64::from(d));
        let Ok(down) = u32::try_from(down) else {
            return false;
        };
        if last + u64::from(down) > u64::from(u32::MAX) {
            return false;
        }
        for d in &mut self.offsets {
            *d += down;
        }
        self.base = o.0;
        true
    }

    fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.offsets.iter().map(|&d| self.id(d))
    }
}

/// A sorted set of object ids; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct MemberSet {
    /// Non-empty chunks, each sorted, every id of a chunk below every id of the next.
    chunks: Vec<Chunk>,
    len: usize,
}

impl MemberSet {
    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The smallest id.
    pub fn first(&self) -> Option<ObjectId> {
        self.chunks.first()?.first()
    }

    /// The chunk where `o` is or belongs: the last one starting at or below it (or the first).
    fn chunk_of(&self, o: ObjectId) -> usize {
        self.chunks
            .partition_point(|c| c.first().is_some_and(|f| f <= o))
            .saturating_sub(1)
    }

    /// Adds an id; returns whether it was new.
    pub fn insert(&mut self, o: ObjectId) -> bool {
        let c = self.chunk_of(o);
        let last = c + 1 == self.chunks.len();
        let Some(chunk) = self.chunks.get_mut(c) else {
            self.chunks.push(Chunk::new(o, 1));
            self.len += 1;
            return true;
        };
        let offset = match chunk.offset(o) {
            Some(d) => d,
            // Below every id: the chunk takes it if its ids stay close enough.
            None if o.0 < chunk.base && chunk.rebase(o) => 0,
            None => {
                // Too far from the chunk's ids: a chunk of its own, before or after.
                let at = if o.0 < chunk.base { c } else { c + 1 };
                self.chunks.insert(at, Chunk::new(o, 1));
                self.len += 1;
                return true;
            }
        };
        let Err(pos) = chunk.offsets.binary_search(&offset) else {
            return false;
        };
        self.len += 1;
        if chunk.offsets.len() < CHUNK {
            chunk.offsets.insert(pos, offset);
            return true;
        }
        if pos == chunk.offsets.len() && last {
            // Appending to the full last chunk: start a new one.
            self.chunks.push(Chunk::new(o, CHUNK));
            return true;
        }
        // Split the full chunk in two halves, then insert.
        let mut upper = Vec::with_capacity(CHUNK);
        upper.extend(chunk.offsets.drain(CHUNK / 2..));
        let mut upper = Chunk {
            base: chunk.base,
            offsets: upper,
        };
        if pos <= CHUNK / 2 {
            chunk.offsets.insert(pos, offset);
        } else {
            upper.offsets.insert(pos - CHUNK / 2, offset);
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
        let Some(offset) = chunk.offset(o) else {
            return false;
        };
        let Ok(pos) = chunk.offsets.binary_search(&offset) else {
            return false;
        };
        chunk.offsets.remove(pos);
        self.len -= 1;
        let offsets = &mut chunk.offsets;
        if offsets.is_empty() {
            self.chunks.remove(c);
        } else if offsets.capacity() >= 64 && offsets.len() < offsets.capacity() / 4 {
            offsets.shrink_to(offsets.len() * 2);
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
            .flat_map(Chunk::ids)
            .skip_while(move |&o| o < lo)
            .take_while(move |&o| o <= hi)
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.chunks.iter().flat_map(Chunk::ids)
    }

    /// How many ids the chunks have room for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.offsets.capacity()).sum()
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

    /// Applies `steps` pseudo-random inserts and removals, chosen by `pick(step, x)` from the
    /// step and a random `x`, to `set` and to a `BTreeSet` model, checking every answer.
    fn drive(
        set: &mut MemberSet,
        model: &mut BTreeSet<ObjectId>,
        mut x: u64,
        steps: u64,
        pick: impl Fn(u64, u64) -> (ObjectId, bool),
    ) {
        for step in 0..steps {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (o, insert) = pick(step, x);
            if insert {
                assert_eq!(set.insert(o), model.insert(o));
            } else {
                assert_eq!(set.remove(o), model.remove(&o));
            }
            assert_eq!(set.len(), model.len());
        }
    }

    /// Checks the set's contents and chunks against the model, then removes every id.
    fn check_then_empty(mut set: MemberSet, model: &BTreeSet<ObjectId>) {
        assert!(set.iter().eq(model.iter().copied()));
        assert_eq!(set.first(), model.first().copied());
        for c in &set.chunks {
            assert!(!c.offsets.is_empty() && c.offsets.len() <= CHUNK);
        }
        for &o in model {
            assert!(set.remove(o));
        }
        assert_eq!((set.len(), set.chunks.len()), (0, 0));
        assert!(!set.remove(ObjectId(1)));
    }

    #[test]
    fn agrees_with_a_btree_set() {
        let mut set = MemberSet::default();
        let mut model = BTreeSet::new();
        drive(&mut set, &mut model, 7, 200_000, |step, x| {
            // Mostly inserts at first, mostly removals later.
            let insert = (x >> 20) % 100 < if step < 100_000 { 70 } else { 30 };
            (ObjectId((x >> 33) % 5000), insert)
        });
        for (lo, hi) in [(0, 5000), (17, 17), (100, 2600), (4990, 9000), (300, 200)] {
            let (lo, hi) = (ObjectId(lo), ObjectId(hi));
            let expected: Vec<ObjectId> = model
                .iter()
                .copied()
                .filter(|&o| lo <= o && o <= hi)
                .collect();
            assert_eq!(set.range(lo, hi).collect::<Vec<_>>(), expected);
        }
        check_then_empty(set, &model);
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

    #[test]
    fn ids_far_apart_agree_with_a_btree_set() {
        // Ids spread over the whole range, many more than 2^32 apart, with runs of close ones.
        let mut set = MemberSet::default();
        let mut model = BTreeSet::new();
        drive(&mut set, &mut model, 11, 20_000, |step, x| {
            let o = match x % 4 {
                0 => x >> 1,
                1 => u64::MAX - (x >> 40),
                2 => (x >> 20) % 3000,
                _ => (1 << 32) + (x >> 24) % 3000,
            };
            (ObjectId(o), step < 12_000 || !x.is_multiple_of(3))
        });
        for o in [0, 1 << 32, (1 << 32) - 1, u64::MAX] {
            assert_eq!(set.insert(ObjectId(o)), model.insert(ObjectId(o)));
        }
        assert_eq!(set.len(), model.len());
        let (lo, hi) = (ObjectId(1000), ObjectId((1 << 32) + 1000));
        let expected: Vec<ObjectId> = model.range(lo..=hi).copied().collect();
        assert_eq!(set.range(lo, hi).collect::<Vec<_>>(), expected);
        check_then_empty(set, &model);
    }

    #[test]
    fn an_id_below_the_first_chunk_moves_its_base_down() {
        let mut set: MemberSet = (100..200).map(ObjectId).collect();
        assert!(set.insert(ObjectId(50)));
        assert_eq!(set.chunks.len(), 1);
        assert_eq!(set.first(), Some(ObjectId(50)));
        // Too far below the chunk's last id: a chunk of its own.
        let mut set: MemberSet = [ObjectId(1 << 33)].into_iter().collect();
        assert!(set.insert(ObjectId(5)));
        assert_eq!(set.chunks.len(), 2);
        assert!(set.iter().eq([ObjectId(5), ObjectId(1 << 33)]));
    }
}
