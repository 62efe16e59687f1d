//! A fast, non-cryptographic hasher for maps keyed by ids, shared by the client's replica and
//! the server's store.
//!
//! The keys are object ids (mostly sequential integers handed out by the server), small
//! integer ids and short encoded index values. It does not resist crafted collisions: use it
//! only where the keys an untrusted peer can insert are limited (the server only creates objects
//! whose ids it granted to that connection). Each word is mixed in with one
//! multiplication, and the final value is folded so that both its low bits (the bucket) and
//! its high bits (the tag the hash table compares first) depend on every input bit.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Multiply-and-fold hasher; see the module documentation.
#[derive(Default, Clone, Copy, Debug)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let full = u128::from(self.hash) * u128::from(SEED);
        (full as u64) ^ ((full >> 64) as u64)
    }
}

/// Builds [`FastHasher`]s.
pub type FastBuild = BuildHasherDefault<FastHasher>;
/// A hash map using [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;
/// A hash set using [`FastHasher`].
pub type FastSet<K> = HashSet<K, FastBuild>;

/// An empty [`FastMap`] with room for `n` entries.
pub fn fast_map<K, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, FastBuild::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        let build = FastBuild::default();
        let hashes: Vec<u64> = (0..4096u64).map(|i| build.hash_one(i)).collect();
        let buckets: FastSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        let tags: FastSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(buckets.len() > 2000, "{} buckets", buckets.len());
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn strings_differing_in_their_last_bytes_spread() {
        let build = FastBuild::default();
        let hashes: Vec<u64> = (0..4096)
            .map(|i| build.hash_one(format!("item-{i:08}").as_bytes()))
            .collect();
        let buckets: FastSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        let tags: FastSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(buckets.len() > 2000, "{} buckets", buckets.len());
        assert_eq!(tags.len(), 128);
    }
}
