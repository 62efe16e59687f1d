//! The server's error type.

use std::net::SocketAddr;

/// Why the server could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server already using this port?)")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server was shut down; start a new one.
    #[error("the server has been shut down; start a new one")]
    Stopped,
    /// A setting is unusable.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The storage cannot be read or written, or holds data this server cannot use.
    #[error("storage: {0}")]
    Storage(String),
    /// The server failed on its own and stopped (see [`crate::Server::failure`]).
    #[error("the server failed: {0}")]
    Failed(String),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}
