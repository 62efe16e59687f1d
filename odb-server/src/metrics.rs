//! Prometheus metrics of a server, in the text exposition format (see [`crate::http`] for where
//! they are served).
//!
//! Counters and histograms are updated where things happen, by one call each into [`Metrics`];
//! they are atomics, so the sequencer and the connection tasks update them without locks.
//! Figures that describe the current state (objects, subscriptions, queued bytes) are not
//! tracked as they change: a scrape asks the sequencer for them ([`Gauges`]) and sets the gauges
//! just before encoding, so they cost nothing between scrapes.

use odb_wire::CommitOutcome;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// One label: its name and value.
type Label = [(&'static str, &'static str); 1];

/// Why a connection was refused before it was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the connection limit.
    Full,
    /// The token did not match.
    Unauthorized,
    /// Another protocol version.
    ProtocolVersion,
    /// No hello in time, or a first message that is not a readable hello.
    BadHello,
}

impl Refusal {
    /// The kind of a connection's refusal.
    pub fn of(reason: &odb_wire::Refusal) -> Refusal {
        match reason {
            odb_wire::Refusal::ServerFull { .. } | odb_wire::Refusal::TooManyFromAddress { .. } => {
                Refusal::Full
            }
            odb_wire::Refusal::Unauthorized => Refusal::Unauthorized,
            odb_wire::Refusal::ProtocolVersion { .. } => Refusal::ProtocolVersion,
            _ => Refusal::BadHello,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Unauthorized => "unauthorized",
            Refusal::ProtocolVersion => "protocol_version",
            Refusal::BadHello => "bad_hello",
        }
    }
}

/// Figures of the current state, computed by the sequencer when a scrape asks for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    /// Distinct (index, value) pairs with at least one member, type indices included.
    pub index_values: usize,
    /// Bytes of the objects' compact records (field values, index values, stamps).
    pub store_bytes: usize,
    /// Type subscriptions held, summed over connections.
    pub type_subscriptions: usize,
    /// Index-value subscriptions held (type subscriptions not included).
    pub index_subscriptions: usize,
    /// Single-object subscriptions held.
    pub object_subscriptions: usize,
    /// The largest outbound queue of one connection, in bytes.
    pub outbound_max_bytes: usize,
}

/// Figures the server handle reads itself, without the sequencer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    /// The current tid.
    pub tid: u64,
    /// Live authenticated connections.
    pub connections: usize,
    /// Live objects.
    pub objects: usize,
    /// Conflict keys in the conflict history.
    pub conflict_stamps: usize,
    /// Bytes queued for all connections.
    pub outbound_bytes: usize,
    /// Subscription snapshots queued or being sent.
    pub outbound_snapshots: usize,
}

/// Every metric of one server.
pub(crate) struct Metrics {
    registry: Registry,
    commits: Family<Label, Counter>,
    /// The `committed` series of `commits`, counted for nearly every commit: kept at hand
    /// rather than found in the family by its label each time.
    committed: Counter,
    as_sent: Counter,
    refused: Family<Label, Counter>,
    queue_wait: Histogram,
    apply: Histogram,
    commit: Histogram,
    batch_requests: Histogram,
    batch_commits: Histogram,
    persist: Histogram,
    persist_failures: Counter,
    connections_accepted: Counter,
    connections_refused: Family<Label, Counter>,
    heartbeat_expiries: Counter,
    outbound_disconnects: Family<Label, Counter>,
    auth_failures: Counter,
    resumes: Family<Label, Counter>,
    tid: Gauge,
    connections: Gauge,
    objects: Gauge,
    index_values: Gauge,
    store_bytes: Gauge,
    conflict_stamps: Gauge,
    subscriptions: Family<Label, Gauge>,
    outbound_bytes: Gauge,
    outbound_max_bytes: Gauge,
    outbound_snapshots: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latency buckets from 10 µs to about 5 s: server-side steps range from microseconds (apply)
/// to seconds (a slow storage).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 20))
}

/// Size buckets from 1 to 4096 (a sequencer batch holds at most 256 requests; a persisted
/// batch at most that many commits).
fn size_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let commits: Family<Label, Counter> = Family::default();
        let committed = commits.get_or_create(&[("outcome", "committed")]).clone();
        let mut m = Metrics {
            registry: Registry::with_prefix("odb"),
            commits,
            committed,
            as_sent: Counter::default(),
            refused: Family::default(),
            queue_wait: latency_buckets(),
            apply: latency_buckets(),
            commit: latency_buckets(),
            batch_requests: size_buckets(),
            batch_commits: size_buckets(),
            persist: latency_buckets(),
            persist_failures: Counter::default(),
            connections_accepted: Counter::default(),
            connections_refused: Family::default(),
            heartbeat_expiries: Counter::default(),
            outbound_disconnects: Family::default(),
            auth_failures: Counter::default(),
            resumes: Family::default(),
            tid: Gauge::default(),
            connections: Gauge::default(),
            objects: Gauge::default(),
            index_values: Gauge::default(),
            store_bytes: Gauge::default(),
            conflict_stamps: Gauge::default(),
            subscriptions: Family::default(),
            outbound_bytes: Gauge::default(),
            outbound_max_bytes: Gauge::default(),
            outbound_snapshots: Gauge::default(),
        };
        m.register();
        m
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "commits",
            "Commits answered, by outcome (committed, conflict, too_old, refused)",
            self.commits.clone(),
        );
        r.register(
            "commits_as_sent",
            "Commits answered CommittedAsSent (counted as committed as well): not pushed back \
             to their committer, which applied its own writes",
            self.as_sent.clone(),
        );
        r.register(
            "commits_refused",
            "Commits refused as invalid, by reason (a limit's name, storage_unavailable, \
             foreign_id, other)",
            self.refused.clone(),
        );
        r.register(
            "commit_queue_wait_seconds",
            "Time a commit request waited between its frame being read and the sequencer \
             taking it",
            self.queue_wait.clone(),
        );
        r.register(
            "commit_apply_seconds",
            "Time the sequencer spent validating and applying one commit (checks, conflict \
             validation, store update, fan-out to subscribers)",
            self.apply.clone(),
        );
        r.register(
            "commit_seconds",
            "Time from a commit's frame being read until its answer was released (after its \
             batch was stored, with a durable storage)",
            self.commit.clone(),
        );
        r.register(
            "sequencer_batch_requests",
            "Requests the sequencer took from its queue at once",
            self.batch_requests.clone(),
        );
        r.register(
            "sequencer_batch_commits",
            "Commit requests in one sequencer batch (stored together with a durable storage)",
            self.batch_commits.clone(),
        );
        r.register(
            "storage_persist_seconds",
            "Time one batch took to be stored",
            self.persist.clone(),
        );
        r.register(
            "storage_persist_failures",
            "Batches that could not be stored (their commits failed)",
            self.persist_failures.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections authenticated",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused before being served, by reason (full, unauthorized, \
             protocol_version, bad_hello)",
            self.connections_refused.clone(),
        );
        r.register(
            "heartbeat_expiries",
            "Connections closed for sending nothing for the idle timeout",
            self.heartbeat_expiries.clone(),
        );
        r.register(
            "resumes",
            "Sessions resumed on a new connection, by answer (delta: only what changed; full: \
             all the session's data)",
            self.resumes.clone(),
        );
        r.register(
            "outbound_disconnects",
            "Connections closed because what was queued for them grew too large, by limit \
             (connection: their own queue's limit; server: the budget of all queues, as the \
             largest queue)",
            self.outbound_disconnects.clone(),
        );
        r.register(
            "auth_failures",
            "Hellos with a wrong token",
            self.auth_failures.clone(),
        );
        r.register("tid", "The tid of the last commit", self.tid.clone());
        r.register(
            "connections",
            "Live authenticated connections",
            self.connections.clone(),
        );
        r.register(
            "objects",
            "Live objects, connection objects included",
            self.objects.clone(),
        );
        r.register(
            "index_values",
            "Distinct index values with at least one member",
            self.index_values.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of the objects' records held in memory (values, index values, stamps)",
            self.store_bytes.clone(),
        );
        r.register(
            "conflict_stamps",
            "Conflict keys with a stamp in the conflict history",
            self.conflict_stamps.clone(),
        );
        r.register(
            "subscriptions",
            "Subscription targets held, by kind (type, index, object)",
            self.subscriptions.clone(),
        );
        r.register(
            "outbound_queue_bytes",
            "What the frames queued for all open connections and not yet written cost in \
             memory (bytes plus per-frame bookkeeping), as counted against the outbound limits",
            self.outbound_bytes.clone(),
        );
        r.register(
            "outbound_queue_max_bytes",
            "Bytes queued for the connection with the longest queue",
            self.outbound_max_bytes.clone(),
        );
        r.register(
            "outbound_snapshots",
            "Subscription snapshots queued or being streamed",
            self.outbound_snapshots.clone(),
        );
    }

    /// Counts a commit's outcome.
    pub fn commit_outcome(&self, outcome: &CommitOutcome) {
        let label = match outcome {
            CommitOutcome::Committed { .. } => {
                self.committed.inc();
                return;
            }
            CommitOutcome::CommittedAsSent { .. } => {
                self.as_sent.inc();
                self.committed.inc();
                return;
            }
            CommitOutcome::AlreadyApplied { .. } => "already_applied",
            CommitOutcome::Conflict { .. } => "conflict",
            CommitOutcome::TooOld { .. } => "too_old",
            CommitOutcome::Invalid { reason, limit } => {
                self.refused
                    .get_or_create(&[("reason", refusal_reason(reason, *limit))])
                    .inc();
                "refused"
            }
            CommitOutcome::StorageUnavailable { .. } => {
                self.refused
                    .get_or_create(&[("reason", "storage_unavailable")])
                    .inc();
                "refused"
            }
            CommitOutcome::OutcomeUnknown { .. } => "outcome_unknown",
        };
        self.commits.get_or_create(&[("outcome", label)]).inc();
    }

    /// Records how long a commit request waited for the sequencer.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Records how long the sequencer spent on one commit.
    pub fn apply(&self, took: Duration) {
        self.apply.observe(took.as_secs_f64());
    }

    /// Records a commit's whole time in the server.
    pub fn commit_total(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// Records the size of one sequencer batch.
    pub fn batch(&self, requests: usize, commits: usize) {
        self.batch_requests.observe(requests as f64);
        self.batch_commits.observe(commits as f64);
    }

    /// Records one attempt to store a batch.
    pub fn persist(&self, took: Duration, stored: bool) {
        self.persist.observe(took.as_secs_f64());
        if !stored {
            self.persist_failures.inc();
        }
    }

    /// Counts an authenticated connection.
    pub fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// Counts a refused connection.
    pub fn connection_refused(&self, why: Refusal) {
        if why == Refusal::Unauthorized {
            self.auth_failures.inc();
        }
        self.connections_refused
            .get_or_create(&[("reason", why.label())])
            .inc();
    }

    /// Counts a resumed session, answered with only what changed (`delta`) or in full.
    pub fn resumed(&self, delta: bool) {
        let kind = if delta { "delta" } else { "full" };
        self.resumes.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a connection closed for silence.
    pub fn heartbeat_expired(&self) {
        self.heartbeat_expiries.inc();
    }

    /// Counts a connection closed for the size of its outbound queue, if `reason` says so.
    pub fn connection_closed(&self, reason: &odb_wire::Refusal) {
        let limit = match reason {
            odb_wire::Refusal::SlowReader { .. } => "connection",
            odb_wire::Refusal::OutboundBudget { .. } => "server",
            _ => return,
        };
        self.outbound_disconnects
            .get_or_create(&[("limit", limit)])
            .inc();
    }

    /// The text exposition of every metric, with the state gauges set from `counts` and
    /// `gauges` (left as they were when `gauges` is `None`: the sequencer did not answer).
    pub fn render(&self, counts: &Counts, gauges: Option<&Gauges>) -> String {
        self.tid.set(clamp(counts.tid));
        self.connections.set(clamp(counts.connections));
        self.objects.set(clamp(counts.objects));
        self.conflict_stamps.set(clamp(counts.conflict_stamps));
        self.outbound_bytes.set(clamp(counts.outbound_bytes));
        self.outbound_snapshots
            .set(clamp(counts.outbound_snapshots));
        if let Some(g) = gauges {
            self.index_values.set(clamp(g.index_values));
            self.store_bytes.set(clamp(g.store_bytes));
            self.outbound_max_bytes.set(clamp(g.outbound_max_bytes));
            for (kind, n) in [
                ("type", g.type_subscriptions),
                ("index", g.index_subscriptions),
                ("object", g.object_subscriptions),
            ] {
                self.subscriptions
                    .get_or_create(&[("kind", kind)])
                    .set(clamp(n));
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The label of an `Invalid` commit's reason: the limit it names, or a few known causes.
fn refusal_reason(reason: &str, limit: Option<odb_wire::limits::Limit>) -> &'static str {
    use odb_wire::limits::Limit;
    match limit {
        Some(Limit::WritesPerCommit) => "writes_per_commit",
        Some(Limit::ReadsPerCommit) => "reads_per_commit",
        Some(Limit::ValueSize) => "value_size",
        Some(Limit::CommitSize) => "commit_size",
        Some(Limit::ObjectSize) => "object_size",
        Some(Limit::StoreSize) => "store_size",
        Some(_) => "other_limit",
        None if reason.contains("was not granted to this connection") => "foreign_id",
        None => "other",
    }
}

fn clamp<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::Tid;

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line {name} in\n{text}"))
    }

    #[test]
    fn outcomes_and_reasons_are_labelled() {
        let m = Metrics::default();
        m.commit_outcome(&CommitOutcome::Committed { tid: Tid(1) });
        m.commit_outcome(&CommitOutcome::Committed { tid: Tid(2) });
        m.commit_outcome(&CommitOutcome::Invalid {
            reason: odb_wire::limits::Limit::ValueSize.reason("too big"),
            limit: Some(odb_wire::limits::Limit::ValueSize),
        });
        m.connection_refused(Refusal::Unauthorized);
        m.connection_closed(&odb_wire::Refusal::OutboundBudget {
            queued: 2,
            budget: 1,
        });
        m.connection_closed(&odb_wire::Refusal::ShuttingDown);
        let text = m.render(&Counts::default(), Some(&Gauges::default()));
        assert_eq!(
            line(&text, "odb_commits_total{outcome=\"committed\"}"),
            "odb_commits_total{outcome=\"committed\"} 2"
        );
        assert!(text.contains("odb_commits_refused_total{reason=\"value_size\"} 1"));
        assert!(text.contains("odb_auth_failures_total 1"));
        assert!(text.contains("odb_outbound_disconnects_total{limit=\"server\"} 1"));
        assert!(!text.contains("odb_outbound_disconnects_total{limit=\"connection\"}"));
        assert!(text.contains("odb_subscriptions{kind=\"object\"} 0"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn state_gauges_take_the_figures_given() {
        let m = Metrics::default();
        let counts = Counts {
            tid: 7,
            objects: 3,
            ..Counts::default()
        };
        let gauges = Gauges {
            index_subscriptions: 2,
            store_bytes: 100,
            ..Gauges::default()
        };
        let text = m.render(&counts, Some(&gauges));
        assert!(text.contains("odb_tid 7"), "{text}");
        assert!(text.contains("odb_objects 3"));
        assert!(text.contains("odb_store_bytes 100"));
        assert!(text.contains("odb_subscriptions{kind=\"index\"} 2"));
        // Without the sequencer's answer the last figures stay.
        let text = m.render(&counts, None);
        assert!(text.contains("odb_store_bytes 100"));
    }
}
