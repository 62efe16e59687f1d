//! How a client reconnects: the policy users set, and the backoff state that follows it.

use std::time::Duration;

/// How a client reconnects after its connection breaks (see
/// [`ClientBuilder::reconnect`](crate::ClientBuilder::reconnect)).
///
/// After a break the client tries the server URLs in turn. The first attempt waits
/// [`ReconnectPolicy::initial_delay`]; each failed attempt doubles the wait, up to
/// [`ReconnectPolicy::max_delay`]. Each wait is drawn at random between half and all of its
/// value, so that clients cut off together do not come back together. With the defaults the
/// waits are 50-100 ms, 100-200 ms, ... and never more than 5 s: a server that comes back is
/// found again within 5 s.
///
/// Reconnecting stops only when it is pointless (the server refused the token, or speaks no
/// protocol version this client speaks), after [`ReconnectPolicy::max_attempts`] failed
/// attempts in a row if set, or when reconnecting is [`ReconnectPolicy::disabled`]. The client
/// is then closed with the reason, which [`Client::status`](crate::Client::status) reports.
///
/// ```
/// use std::time::Duration;
/// let policy = odb::ReconnectPolicy::default()
///     .initial_delay(Duration::from_millis(20))
///     .max_delay(Duration::from_secs(2))
///     .max_attempts(Some(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    enabled: bool,
    initial: Duration,
    max: Duration,
    max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: a broken connection closes the client.
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        }
    }

    /// The wait before the first attempt after a break (default 100 ms; the actual wait is
    /// drawn between half and all of it).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// The longest wait between two attempts (default 5 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max = delay;
        self
    }

    /// After this many failed attempts in a row, give up and close the client (default
    /// `None`: never give up).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Whether the client reconnects at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The wait before attempt number `attempt` (counting from 1), before jitter.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let doubled = self
            .initial
            .checked_mul(1u32 << attempt.saturating_sub(1).min(20))
            .unwrap_or(self.max);
        doubled.min(self.max)
    }

    /// Whether another attempt may follow `failed` failed attempts in a row.
    pub(crate) fn allows(&self, failed: u32) -> bool {
        self.enabled && self.max_attempts.is_none_or(|max| failed < max)
    }
}

/// A small deterministic random number generator (xorshift64*), seeded per client: jitter and
/// commit session ids need no cryptographic quality, and a seed makes simulations repeatable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 spreads neighbouring seeds apart; xorshift needs a state that is not 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A seed from the standard library's randomly keyed hasher.
    pub fn seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration drawn uniformly between half of `d` and `d`.
    pub fn jitter(&mut self, d: Duration) -> Duration {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let span = nanos - half;
        Duration::from_nanos(
            half + if span == 0 {
                0
            } else {
                self.next_u64() % (span + 1)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let p = ReconnectPolicy::default()
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1));
        let delays: Vec<_> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn attempts_are_bounded_only_when_asked() {
        assert!(ReconnectPolicy::default().allows(1_000_000));
        let p = ReconnectPolicy::default().max_attempts(Some(3));
        assert!(p.allows(2));
        assert!(!p.allows(3));
        assert!(!ReconnectPolicy::disabled().allows(0));
    }

    #[test]
    fn jitter_stays_within_half_and_all() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let d = rng.jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
