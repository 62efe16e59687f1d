//! Why the server refuses a hello or closes a connection, as a value: the client shows the
//! reason to its user and decides from it whether connecting again can help.

use serde::{Deserialize, Serialize};

/// Why the server refused a connection ([`crate::ServerMessage::Rejected`]) or is about to close
/// it ([`crate::ServerMessage::Closing`]). `Display` gives the reason in words fit for the user.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The token did not match.
    #[error("the server rejected the service token")]
    Unauthorized,
    /// The client speaks another protocol version.
    #[error(
        "the server speaks protocol versions {oldest} to {server}, none of the versions this \
         client speaks; upgrade the older side"
    )]
    ProtocolVersion {
        /// The newest version the server speaks.
        server: u32,
        /// The oldest version the server speaks.
        oldest: u32,
    },
    /// The first frame was not a readable `Hello`: the peer does not speak the ODB protocol.
    #[error("not an ODB client: {detail}")]
    NotHello {
        /// What was wrong with the first frame.
        detail: String,
    },
    /// No `Hello` arrived in time.
    #[error("no Hello within {after_ms} ms")]
    HelloTimeout {
        /// How long the server waited, in milliseconds.
        after_ms: u64,
    },
    /// The server holds as many connections as it allows.
    #[error("server full: {limit} connections are open, the server's limit; try again later")]
    ServerFull {
        /// The connection limit.
        limit: u64,
    },
    /// The client's address holds as many connections still in their hello as it may.
    #[error(
        "too many connections from this address are still in their hello (limit {limit}); \
         try again later"
    )]
    TooManyFromAddress {
        /// The per-address limit of unauthenticated connections.
        limit: u64,
    },
    /// The server cannot store data right now, so it cannot welcome this client.
    #[error("storage unavailable: {detail}")]
    StorageUnavailable {
        /// What the storage said.
        detail: String,
    },
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server is a standby that lost (or never held) the lease of the leader: another
    /// server serves the database now.
    #[error("not the leader: {detail}")]
    NotLeader {
        /// Why this server stopped leading.
        detail: String,
    },
    /// The client sent nothing, not even a heartbeat, for too long.
    #[error("no frame received for {after_ms} ms (missed heartbeats)")]
    Silent {
        /// How long the server waited, in milliseconds.
        after_ms: u64,
    },
    /// The client announced a frame larger than the server accepts.
    #[error("a frame exceeds the server's limit of {limit} bytes")]
    FrameTooLarge {
        /// The frame limit, in bytes.
        limit: u64,
    },
    /// What the server had queued for the client grew past a limit: the client does not read
    /// fast enough.
    #[error(
        "the client does not read fast enough: {queued} bytes queued for it, over the limit \
         of {limit} bytes"
    )]
    SlowReader {
        /// Bytes queued when the connection was closed.
        queued: u64,
        /// The per-connection limit that was exceeded.
        limit: u64,
    },
    /// The server has handed out every object id.
    #[error("the server has run out of object ids")]
    OutOfIds,
    /// The client broke the protocol after its hello.
    #[error("protocol violation: {detail}")]
    ProtocolViolation {
        /// What the client did.
        detail: String,
    },
    /// The server failed internally while serving this connection.
    #[error("internal server error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
    /// What the server had queued for all its clients together grew past its server-wide
    /// budget, and this connection had the largest queue: the client does not read fast enough
    /// for the server's load.
    #[error(
        "the server's memory for unsent data is full ({budget} bytes for all clients) and this \
         client had the most waiting: {queued} bytes"
    )]
    OutboundBudget {
        /// Bytes queued for this connection when it was closed.
        queued: u64,
        /// The server-wide budget of queued bytes.
        budget: u64,
    },
}

impl Refusal {
    /// True when connecting again as before is pointless: a wrong token, another protocol
    /// version, a peer that does not speak ODB, exhausted ids or a broken protocol. False for
    /// reasons that pass (storage unavailable, server full, shutting down, timeouts, a slow
    /// reader).
    pub fn is_permanent(&self) -> bool {
        match self {
            Refusal::Unauthorized
            | Refusal::ProtocolVersion { .. }
            | Refusal::NotHello { .. }
            | Refusal::OutOfIds
            | Refusal::ProtocolViolation { .. } => true,
            Refusal::HelloTimeout { .. }
            | Refusal::ServerFull { .. }
            | Refusal::TooManyFromAddress { .. }
            | Refusal::StorageUnavailable { .. }
            | Refusal::ShuttingDown
            | Refusal::NotLeader { .. }
            | Refusal::Silent { .. }
            | Refusal::FrameTooLarge { .. }
            | Refusal::SlowReader { .. }
            | Refusal::OutboundBudget { .. }
            | Refusal::Internal { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reasons_that_do_not_pass_are_permanent() {
        assert!(Refusal::Unauthorized.is_permanent());
        assert!(Refusal::ProtocolVersion {
            server: 2,
            oldest: 2
        }
        .is_permanent());
        assert!(Refusal::NotHello {
            detail: "HTTP".into()
        }
        .is_permanent());
        for passing in [
            Refusal::ShuttingDown,
            Refusal::ServerFull { limit: 1 },
            Refusal::HelloTimeout { after_ms: 1 },
            Refusal::StorageUnavailable {
                detail: "disk full".into(),
            },
            Refusal::OutboundBudget {
                queued: 10,
                budget: 20,
            },
        ] {
            assert!(!passing.is_permanent(), "{passing}");
        }
    }
}
