//! Server settings.

use crate::tls::TlsConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a [`Server`](crate::Server). Start from [`ServerConfig::new`] (or `Default`) and
/// change the fields you need. `Debug` shows every setting but the token.
#[derive(Clone)]
pub struct ServerConfig {
    /// The service token every client must present in its `Hello`.
    pub token: String,
    /// How often the server sends a heartbeat to each connection; also announced to clients in
    /// `Welcome` so they send theirs at the same pace. Default 5 s.
    pub heartbeat_interval: Duration,
    /// A connection from which no frame at all arrived for `heartbeat_interval *
    /// missed_heartbeats` is closed. Default 4.
    pub missed_heartbeats: u32,
    /// A connection that has not sent its `Hello` within this time is closed. Default 10 s.
    pub hello_timeout: Duration,
    /// Largest frame accepted or sent, in bytes. Default [`odb_wire::DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
    /// Most bytes queued for one connection. A client that reads so slowly that its queue grows
    /// past this is disconnected, told [`Refusal::SlowReader`](odb_wire::Refusal::SlowReader),
    /// with the reason logged. A queued frame counts for its bytes plus what holding it costs
    /// (an eighth more and 80 bytes), so that the server's memory follows this figure even
    /// for small frames. Default 256 MiB.
    pub outbound_limit_bytes: usize,
    /// Most bytes queued for all connections together, counted like
    /// [`ServerConfig::outbound_limit_bytes`]. Past it, the connection with the largest queue
    /// is disconnected (told [`Refusal::OutboundBudget`](odb_wire::Refusal::OutboundBudget)),
    /// then the next largest, until the total is within the budget again. `None` (the
    /// default): a quarter of the machine's memory, or of the cgroup's memory limit when lower
    /// (1 GiB when neither can be read).
    pub max_outbound_total_bytes: Option<usize>,
    /// Smallest number of object ids granted to a client at once. Default 100 000.
    pub id_block_size: u64,
    /// How many tids of conflict history the server keeps. A commit whose base tid is more than
    /// this many commits old can no longer be validated and fails with `TooOld` (the client
    /// retries it on a fresh snapshot). Memory for the history grows with this number times the
    /// keys written per commit. Default 1 000 000.
    pub conflict_history: u64,
    /// Largest frame accepted before the client has authenticated, in bytes, so that an
    /// unauthenticated peer cannot make the server buffer `max_frame` bytes. Default 64 KiB.
    pub max_hello_frame: usize,
    /// Most field writes, index writes and deletes in one commit; more is refused with a reason
    /// naming [`Limit::WritesPerCommit`](odb_wire::limits::Limit::WritesPerCommit). Default 1 000 000.
    pub max_writes_per_commit: usize,
    /// Most field reads and index lookups recorded by one commit; more is refused with a reason
    /// naming [`Limit::ReadsPerCommit`](odb_wire::limits::Limit::ReadsPerCommit). Default 1 000 000.
    pub max_reads_per_commit: usize,
    /// Largest encoded field value or index value, in bytes; a larger one is refused with a
    /// refusal naming [`Limit::ValueSize`](odb_wire::limits::Limit::ValueSize). Default 16 MiB.
    pub max_value_bytes: usize,
    /// Most subscription targets one connection may hold; a subscription past it is refused
    /// naming [`Limit::SubscriptionsPerConnection`](odb_wire::limits::Limit::SubscriptionsPerConnection).
    /// Default 10 000.
    pub max_subscriptions: usize,
    /// Most connections open at once, authenticated or not (in-process ones included); one more
    /// is refused with `Rejected { ServerFull }` and closed. Default 4096.
    pub max_connections: usize,
    /// Most commit-id records kept: once more newer ones exist, the oldest is dropped. A client
    /// can learn what became of a commit whose answer it lost (and a repeated commit is refused
    /// as already applied) only while its record is kept. Memory grows by about 100 bytes per
    /// record. Must be at least 1. Default 100 000.
    pub commit_id_window_count: usize,
    /// Longest time a commit-id record is kept; older ones are dropped (whichever of this and
    /// [`ServerConfig::commit_id_window_count`] drops a record first wins). Default 10 minutes.
    pub commit_id_window_time: Duration,
    /// How many recent object changes the server remembers so that a reconnecting session is
    /// sent only the objects that changed while it was away. A session away for longer (more
    /// changes than this since its last tid, or a server restart in between) is sent its full
    /// data instead. Memory grows by 8 bytes per change plus 16 per commit. Default 262 144.
    pub resume_window_changes: usize,
    /// Most connections one peer address may hold before they have authenticated (TLS
    /// handshake and hello); one more from that address is refused with
    /// `Rejected { TooManyFromAddress }` without being read. `None` (the default): a tenth of
    /// [`ServerConfig::max_connections`] (409 of the default 4096), at least 2, so that one
    /// address cannot take more than a tenth of the server with idle connections.
    pub max_hello_connections_per_address: Option<usize>,
    /// TLS for TCP connections; `None` (the default) serves plaintext. In-process connections
    /// never use TLS.
    pub tls: Option<TlsConfig>,
    /// Allows plaintext TCP on an address other than loopback. Without it (the default),
    /// [`Server::start`](crate::Server::start) refuses to listen on such an address unless
    /// [`ServerConfig::tls`] is set.
    pub allow_plaintext: bool,
    /// Where to serve Prometheus metrics over HTTP, at `/metrics`, and the web inspector (its
    /// other pages, which need the service token); `None` (the default) serves neither. Port 0
    /// picks a free port (see [`Server::metrics_addr`](crate::Server::metrics_addr)).
    pub metrics_addr: Option<SocketAddr>,
    /// Allows [`ServerConfig::metrics_addr`] to be an address other than loopback. Without it
    /// (the default), the server refuses to start with such an address.
    pub metrics_allow_remote: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ServerConfig {
            token: _,
            heartbeat_interval,
            missed_heartbeats,
            hello_timeout,
            max_frame,
            outbound_limit_bytes,
            max_outbound_total_bytes,
            id_block_size,
            conflict_history,
            max_hello_frame,
            max_writes_per_commit,
            max_reads_per_commit,
            max_value_bytes,
            max_subscriptions,
            max_connections,
            max_hello_connections_per_address,
            tls,
            allow_plaintext,
            commit_id_window_count,
            commit_id_window_time,
            resume_window_changes,
            metrics_addr,
            metrics_allow_remote,
        } = self;
        f.debug_struct("ServerConfig")
            .field("token", &"<redacted>")
            .field("heartbeat_interval", heartbeat_interval)
            .field("missed_heartbeats", missed_heartbeats)
            .field("hello_timeout", hello_timeout)
            .field("max_frame", max_frame)
            .field("outbound_limit_bytes", outbound_limit_bytes)
            .field("max_outbound_total_bytes", max_outbound_total_bytes)
            .field("id_block_size", id_block_size)
            .field("conflict_history", conflict_history)
            .field("max_hello_frame", max_hello_frame)
            .field("max_writes_per_commit", max_writes_per_commit)
            .field("max_reads_per_commit", max_reads_per_commit)
            .field("max_value_bytes", max_value_bytes)
            .field("max_subscriptions", max_subscriptions)
            .field("max_connections", max_connections)
            .field(
                "max_hello_connections_per_address",
                max_hello_connections_per_address,
            )
            .field("tls", tls)
            .field("allow_plaintext", allow_plaintext)
            .field("commit_id_window_count", commit_id_window_count)
            .field("commit_id_window_time", commit_id_window_time)
            .field("resume_window_changes", resume_window_changes)
            .field("metrics_addr", metrics_addr)
            .field("metrics_allow_remote", metrics_allow_remote)
            .finish()
    }
}

impl ServerConfig {
    /// Default settings with the given service token.
    pub fn new(token: impl Into<String>) -> Self {
        ServerConfig {
            token: token.into(),
            ..ServerConfig::default()
        }
    }

    /// The per-address cap of connections in their hello that is in force.
    pub(crate) fn hello_cap_per_address(&self) -> usize {
        self.max_hello_connections_per_address
            .unwrap_or((self.max_connections / 10).max(2))
            .max(1)
    }

    /// The server-wide budget of queued outbound bytes that is in force.
    pub(crate) fn outbound_budget(&self) -> usize {
        self.max_outbound_total_bytes
            .unwrap_or_else(crate::memory::default_outbound_budget)
    }

    /// How long a connection may stay silent before it is closed.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.missed_heartbeats.max(1))
    }
}

impl Default for ServerConfig {
    /// Default settings with an empty token: set [`ServerConfig::token`] before starting.
    fn default() -> Self {
        ServerConfig {
            token: String::new(),
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 4,
            hello_timeout: Duration::from_secs(10),
            max_frame: odb_wire::DEFAULT_MAX_FRAME,
            outbound_limit_bytes: 256 << 20,
            max_outbound_total_bytes: None,
            id_block_size: 100_000,
            conflict_history: 1_000_000,
            max_hello_frame: 64 << 10,
            max_writes_per_commit: 1_000_000,
            max_reads_per_commit: 1_000_000,
            max_value_bytes: 16 << 20,
            max_subscriptions: 10_000,
            max_connections: 4096,
            commit_id_window_count: 100_000,
            commit_id_window_time: Duration::from_secs(600),
            resume_window_changes: 1 << 18,
            max_hello_connections_per_address: None,
            tls: None,
            allow_plaintext: false,
            metrics_addr: None,
            metrics_allow_remote: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_token() {
        let shown = format!("{:?}", ServerConfig::new("sekrit-token"));
        assert!(!shown.contains("sekrit-token"), "{shown}");
        assert!(shown.contains("max_connections"), "{shown}");
    }
}
