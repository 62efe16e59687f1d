//! A fast hasher for maps keyed by object ids.
//!
//! Object ids are mostly handed out in sequence, so the hasher mixes them with a full 64-bit
//! multiplication and folds the high half into the low half: nearby ids spread over all bits,
//! including the high ones the hash table uses to pick control bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Odd constant with well distributed bits (the golden ratio scaled to 64 bits).
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// Hashes integer keys by multiply-and-fold; other input is folded in eight bytes at a time.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher {
    state: u64,
}

impl IdHasher {
    fn mix(&mut self, v: u64) {
        let product = u128::from(self.state ^ v).wrapping_mul(u128::from(MULTIPLIER));
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
}

/// Builds [`IdHasher`]s.
pub(crate) type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// A hash map keyed by ids.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildIdHasher>;

/// An empty [`IdMap`] with room for `n` entries.
pub(crate) fn id_map<K, V>(n: usize) -> IdMap<K, V> {
    IdMap::with_capacity_and_hasher(n, BuildIdHasher::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_high_bits() {
        let build = BuildIdHasher::default();
        let tops: HashSet<u64> = (0..1024u64).map(|i| build.hash_one(i) >> 57).collect();
        assert!(tops.len() > 100, "only {} distinct top bits", tops.len());
        let lows: HashSet<u64> = (0..1024u64).map(|i| build.hash_one(i) & 1023).collect();
        assert!(lows.len() > 500, "only {} distinct low bits", lows.len());
    }
}
