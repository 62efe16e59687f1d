//! The one random number generator of the end-to-end tests, seeded per test and logged so that
//! a failing run can be repeated: every test that draws random numbers starts from
//! [`Rng::for_test`], which prints `<test>: ODB_TEST_SEED=<seed>` on standard error. The seed
//! comes from the clock, or from the `ODB_TEST_SEED` environment variable when it is set (to
//! rerun a failure with the seed it printed).
#![allow(dead_code)]

/// A seeded pseudo-random generator (splitmix64): a run is reproducible from its seed, and the
/// tests need no extra dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// The seed for this run: `ODB_TEST_SEED` if set and a number, else one from the clock.
pub fn seed() -> u64 {
    std::env::var("ODB_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

impl Rng {
    /// The generator of the test `name`, from this run's [`seed`], which is logged.
    pub fn for_test(name: &str) -> Rng {
        let seed = seed();
        eprintln!("{name}: ODB_TEST_SEED={seed}");
        Rng::new(seed)
    }

    /// A generator for one seed; different seeds give unrelated sequences.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    /// An independent generator for part `n` of a test (a task, a client), drawn from this
    /// one: the whole run still follows from the one logged seed.
    pub fn fork(&mut self, n: u64) -> Rng {
        Rng::new(self.next_u64() ^ n.wrapping_mul(0xA24B_AED4_963E_E407))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..hi` (`lo < hi`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}
