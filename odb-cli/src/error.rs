//! What can go wrong when looking inside a server.

use odb_wire::CodecError;

/// An error of the `odb` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// The server cannot be reached, or the connection broke.
    #[error("{0}")]
    Connect(String),
    /// The server rejected the token.
    #[error(
        "unauthorized: the server rejected the service token (give it with --token or ODB_TOKEN)"
    )]
    Unauthorized,
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server refused a request.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// The server sent something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A schema, type, index or object the command names does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl From<CodecError> for CliError {
    fn from(e: CodecError) -> Self {
        CliError::Protocol(e.to_string())
    }
}
