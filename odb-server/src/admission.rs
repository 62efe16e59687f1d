//! Who gets to say hello: a cap on the connections each peer address may hold before they have
//! authenticated, a shorter hello timeout while the server is nearly full, and refusals logged
//! as a rate-limited summary rather than one line each.
//!
//! Without the cap, one address that keeps opening connections that never send a hello holds
//! every slot under the connection limit, and legitimate clients from other addresses are
//! refused. With it, such an address holds at most [`Admission::cap`] slots at once; the rest
//! stay free for others. The cap also bounds token guessing, since a failed hello keeps its slot
//! while its answer is delayed (see [`crate::auth_throttle`]).

use odb_wire::Refusal;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often at most the refusal summary is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The shortest hello timeout under pressure.
const MIN_HELLO_TIMEOUT: Duration = Duration::from_millis(500);

/// Connections in their hello, per peer address.
#[derive(Debug)]
pub(crate) struct Admission {
    cap: usize,
    in_hello: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place among its address's connections in their hello; given back on drop.
#[derive(Debug)]
pub(crate) struct HelloSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Allows `cap` connections in their hello per address (at least one).
    pub fn new(cap: usize) -> Self {
        Admission {
            cap: cap.max(1),
            in_hello: Mutex::new(HashMap::new()),
        }
    }

    /// The per-address cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Takes a place for a new connection from `ip`, or `None` if the address is at its cap.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<HelloSlot> {
        let mut in_hello = self.in_hello.lock();
        let count = in_hello.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(HelloSlot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for HelloSlot {
    fn drop(&mut self) {
        let mut in_hello = self.admission.in_hello.lock();
        if let Some(count) = in_hello.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_hello.remove(&self.ip);
            }
        }
    }
}

/// The hello timeout given how many connection slots are free: the configured one normally, a
/// quarter of it (at least [`MIN_HELLO_TIMEOUT`]) once fewer than a quarter of the slots are
/// free, so that idle connections hold slots for less long while legitimate clients queue up.
pub(crate) fn hello_timeout(configured: Duration, free: usize, max_connections: usize) -> Duration {
    if free.saturating_mul(4) < max_connections {
        (configured / 4).max(MIN_HELLO_TIMEOUT).min(configured)
    } else {
        configured
    }
}

/// Refusals counted by kind, logged at most once per [`LOG_EVERY`]: the first refusal after a
/// quiet period is logged at once, later ones are summed into the next summary.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    last: Option<Instant>,
    counts: HashMap<&'static str, u64>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            state: Mutex::new(LogState {
                last: None,
                counts: HashMap::new(),
            }),
        }
    }
}

/// A short name for a refusal in the summary.
fn kind(reason: &Refusal) -> &'static str {
    match reason {
        Refusal::Unauthorized => "wrong token",
        Refusal::ProtocolVersion { .. } => "protocol version",
        Refusal::NotHello { .. } => "not a hello",
        Refusal::HelloTimeout { .. } => "hello timeout",
        Refusal::ServerFull { .. } => "server full",
        Refusal::TooManyFromAddress { .. } => "too many from one address",
        Refusal::StorageUnavailable { .. } => "storage unavailable",
        Refusal::ShuttingDown => "shutting down",
        _ => "other",
    }
}

impl RefusalLog {
    /// Counts a refused connection, logging now if nothing was logged for a while.
    pub fn refused(&self, reason: &Refusal) {
        self.refused_at(reason, Instant::now());
    }

    fn refused_at(&self, reason: &Refusal, now: Instant) -> bool {
        let mut state = self.state.lock();
        *state.counts.entry(kind(reason)).or_insert(0) += 1;
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_EVERY);
        if !due {
            return false;
        }
        let mut counts: Vec<_> = state.counts.drain().collect();
        counts.sort_unstable();
        let summary = counts
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let since = match state.last {
            Some(last) => format!("in the last {:?}", now.saturating_duration_since(last)),
            None => "since the start".to_string(),
        };
        state.last = Some(now);
        tracing::warn!("refused connections {since} ({summary}); latest: {reason}");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_the_cap_and_gets_places_back() {
        let admission = Arc::new(Admission::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.enter(a).unwrap();
        let _second = admission.enter(a).unwrap();
        assert!(admission.enter(a).is_none());
        assert!(
            admission.enter(b).is_some(),
            "other addresses are not affected"
        );
        drop(first);
        assert!(admission.enter(a).is_some());
    }

    #[test]
    fn the_hello_timeout_shrinks_when_few_slots_are_free() {
        let ten = Duration::from_secs(10);
        assert_eq!(hello_timeout(ten, 50, 100), ten);
        assert_eq!(hello_timeout(ten, 24, 100), Duration::from_millis(2500));
        assert_eq!(
            hello_timeout(Duration::from_secs(1), 0, 100),
            MIN_HELLO_TIMEOUT
        );
        let short = Duration::from_millis(100);
        assert_eq!(hello_timeout(short, 0, 100), short, "never longer than set");
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_period() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let full = Refusal::ServerFull { limit: 1 };
        assert!(log.refused_at(&full, t0));
        let logged = (1..1000)
            .filter(|ms| log.refused_at(&full, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(logged, 0);
        assert!(log.refused_at(&full, t0 + LOG_EVERY));
    }
}
