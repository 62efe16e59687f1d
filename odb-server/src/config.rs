//! Server settings.

use std::time::Duration;

/// Settings of a [`Server`](crate::Server). Start from [`ServerConfig::new`] (or `Default`) and
/// change the fields you need.
#[derive(Clone, Debug)]
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
    /// Largest number of bytes queued for one connection. A client that reads so slowly that its
    /// queue grows past this is disconnected, with the reason logged. Default 256 MiB.
    pub outbound_limit_bytes: usize,
    /// Smallest number of object ids granted to a client at once. Default 100 000.
    pub id_block_size: u64,
}

impl ServerConfig {
    /// Default settings with the given service token.
    pub fn new(token: impl Into<String>) -> Self {
        ServerConfig {
            token: token.into(),
            ..ServerConfig::default()
        }
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
            id_block_size: 100_000,
        }
    }
}
