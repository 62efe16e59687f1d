//! Slows down token guessing: failed hellos are counted per peer IP address, wrong tokens and
//! malformed first frames apart, and once an address has failed one way [`FREE_FAILURES`] times
//! within [`WINDOW`], the answer to each further such failure is sent only after a delay that
//! doubles with every failure, up to [`MAX_DELAY`]. A right token is always answered at once:
//! only failures wait, so a client with the right token is never locked out by its neighbours.
//!
//! The delay bounds guessing because the waiting connection keeps its place among the
//! address's connections in their hello, which are capped (see [`crate::admission`]): with a
//! cap of `C`, an address gets at most `C` guesses per [`MAX_DELAY`] once throttled.
//!
//! The table holds at most [`MAX_ENTRIES`] addresses; when it is full, entries whose window has
//! passed are dropped first, then the one that failed longest ago. An attacker with many
//! addresses can therefore push an address out of the table, but never grow the server's
//! memory, and the connection limit bounds how many delayed hellos wait at once.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures within the window that cost nothing.
pub(crate) const FREE_FAILURES: u32 = 5;
/// How long a failure is remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// The delay after the first failure past the free ones; it doubles with each further one.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);
/// Most addresses remembered at once.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// How a hello failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A readable hello with a wrong token.
    Token,
    /// A first frame that is not a readable hello.
    Malformed,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Wrong tokens since `since`.
    failures: u32,
    /// Malformed first frames since `since`.
    malformed: u32,
    /// When the first counted failure happened.
    since: Instant,
    /// When the last failure happened.
    last: Instant,
}

/// Failed authentications per peer address.
#[derive(Debug, Default)]
pub(crate) struct AuthThrottle {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl AuthThrottle {
    /// Records a failed hello from `ip`; returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr, failure: Failure) -> Duration {
        let now = Instant::now();
        self.failed_at(ip, failure, now);
        self.delay_at(ip, failure, now)
    }

    /// Forgets the failures of `ip` after it authenticated.
    pub fn succeeded(&self, ip: IpAddr) {
        self.entries.lock().remove(&ip);
    }

    fn delay_at(&self, ip: IpAddr, failure: Failure, now: Instant) -> Duration {
        let entries = self.entries.lock();
        let Some(entry) = entries.get(&ip) else {
            return Duration::ZERO;
        };
        let count = match failure {
            Failure::Token => entry.failures,
            Failure::Malformed => entry.malformed,
        };
        // The failure being answered is counted already: the free ones are answered at once.
        if now.saturating_duration_since(entry.since) > WINDOW || count <= FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (count - FREE_FAILURES - 1).min(16);
        FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
    }

    fn failed_at(&self, ip: IpAddr, failure: Failure, now: Instant) {
        let mut entries = self.entries.lock();
        if !entries.contains_key(&ip) && entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_duration_since(e.since) <= WINDOW);
            if entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        let fresh = Entry {
            failures: 0,
            malformed: 0,
            since: now,
            last: now,
        };
        let entry = entries.entry(ip).or_insert(fresh);
        if now.saturating_duration_since(entry.since) > WINDOW {
            *entry = fresh;
        }
        match failure {
            Failure::Token => entry.failures = entry.failures.saturating_add(1),
            Failure::Malformed => entry.malformed = entry.malformed.saturating_add(1),
        }
        entry.last = now;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_free_failures_and_are_capped() {
        let throttle = AuthThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let fail = |now| {
            throttle.failed_at(ip, Failure::Token, now);
            throttle.delay_at(ip, Failure::Token, now)
        };
        for _ in 0..FREE_FAILURES {
            assert_eq!(fail(t0), Duration::ZERO);
        }
        assert_eq!(fail(t0), FIRST_DELAY);
        assert_eq!(fail(t0), FIRST_DELAY * 2);
        for _ in 0..40 {
            fail(t0);
        }
        assert_eq!(fail(t0), MAX_DELAY);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(throttle.delay_at(other, Failure::Token, t0), Duration::ZERO);
        // The window passes: the address starts afresh.
        let later = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(fail(later), Duration::ZERO);
        throttle.succeeded(ip);
        assert_eq!(throttle.len(), 0);
    }

    #[test]
    fn malformed_frames_are_counted_apart_from_wrong_tokens() {
        let throttle = AuthThrottle::default();
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..13 {
            throttle.failed_at(ip, Failure::Malformed, t0);
        }
        assert!(throttle.delay_at(ip, Failure::Malformed, t0) > Duration::ZERO);
        assert_eq!(
            throttle.delay_at(ip, Failure::Token, t0),
            Duration::ZERO,
            "garbage does not slow down the answer to a hello with a token"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..(MAX_ENTRIES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(n));
            throttle.failed_at(ip, Failure::Token, t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(throttle.len(), MAX_ENTRIES);
    }
}
