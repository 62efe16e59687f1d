//! Figures about a running server, for monitoring and for tests that check nothing leaks.

use odb_wire::Tid;

/// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
///
/// The figures are read one after the other while the server keeps running, so they need not
/// describe one single instant; each one is exact for the moment it was read. The sequencer
/// updates its figures (tid, connections, objects, conflict stamps) after every request it
/// processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// The tid of the last commit.
    pub tid: Tid,
    /// Live authenticated connections.
    pub connections: usize,
    /// Live objects, `core.Connection` objects included.
    pub objects: usize,
    /// Conflict keys with a stamp in the conflict history. Bounded by the keys written in the
    /// last [`ServerConfig::conflict_history`](crate::ServerConfig::conflict_history) tids.
    pub conflict_stamps: usize,
    /// What the encoded messages queued for all open connections and not yet written to their
    /// sockets cost in memory, in bytes: their bytes plus what holding each costs, as counted
    /// against the outbound limits (subscription snapshots being streamed are not counted).
    pub outbound_bytes: usize,
    /// Subscription snapshots queued or being streamed to clients.
    pub outbound_snapshots: usize,
}
