//! The one error type of the client SDK.

use odb_wire::{Key, Tid};

/// Everything that can go wrong when using ODB. Messages say what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A commit failed because something the transaction read was changed by another commit
    /// after the transaction's snapshot. `Client::transaction` retries these by itself.
    #[error("conflict: {key} was changed by the commit at tid {written_at} after this transaction's snapshot; run the transaction again on fresh data")]
    Conflict {
        /// The conflicting key, described with type and field or index names where known.
        key: String,
        /// The tid of the commit that changed it.
        written_at: Tid,
        /// The raw key.
        raw: Key,
    },
    /// The transaction's snapshot is older than the server's conflict history.
    #[error("transaction snapshot at tid {base_tid} is older than the server's conflict horizon {horizon}; retry on a fresh snapshot")]
    TooOld {
        /// The transaction's snapshot tid.
        base_tid: Tid,
        /// The oldest snapshot the server can still validate.
        horizon: Tid,
    },
    /// The object does not exist (never created, deleted, or not visible to this client).
    #[error("object {object} of type {type_name} does not exist (deleted, never created, or not visible to this client); check `exists()` first")]
    ObjectDoesNotExist {
        /// The type's qualified name.
        type_name: String,
        /// The object's id.
        object: u64,
    },
    /// A read touched data this client has not subscribed to.
    #[error("type {type_name} is not subscribed; call {hint} first")]
    NotSubscribed {
        /// The type's qualified name.
        type_name: String,
        /// What to call to subscribe.
        hint: String,
    },
    /// `lookup_unique` found more than one object.
    #[error("{count} objects of type {type_name} have index {index} equal to the looked-up value, expected at most one; use lookup_all to see them")]
    NotUnique {
        /// The type's qualified name.
        type_name: String,
        /// The index's name.
        index: String,
        /// How many objects matched.
        count: usize,
    },
    /// `lookup_one` found nothing.
    #[error("no object of type {type_name} has index {index} equal to {value}; use lookup_any to get an Option")]
    NotFound {
        /// The type's qualified name.
        type_name: String,
        /// The index's name.
        index: String,
        /// The value looked up, in its `Debug` form (shortened when long), or a note that its
        /// type has no `Debug` implementation.
        value: String,
    },
    /// A field has no stored value and no default.
    #[error("field {field} of {type_name} object {object} has no value and no default; mark the field #[odb(default)] to read missing values as Default::default()")]
    MissingField {
        /// The type's qualified name.
        type_name: String,
        /// The field's name.
        field: String,
        /// The object's id.
        object: u64,
    },
    /// A stored value could not be decoded as the field's Rust type.
    #[error("cannot decode field {field} of {type_name}: {reason}; the stored value was written with an incompatible Rust type")]
    Decode {
        /// The type's qualified name.
        type_name: String,
        /// The field's name.
        field: String,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode a value: {0}")]
    Encode(String),
    /// The operation is not allowed here (e.g. writing an object this transaction deleted).
    #[error("invalid operation: {0}")]
    Invalid(String),
    /// The client is closed: closed by the program, or it stopped reconnecting (see
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)).
    #[error("disconnected from the server: {0}")]
    Disconnected(String),
    /// The commit was not applied, and never will be: the connection broke before the server
    /// received it. [`Client::transaction`](crate::Client::transaction) runs the closure again
    /// (as after a conflict); with [`Client::transaction_async`](crate::Client::transaction_async)
    /// the program may simply try again.
    #[error("the commit was not applied: {reason}")]
    CommitNotApplied {
        /// Why.
        reason: String,
    },
    /// Whether the commit was applied cannot be known: the connection broke after it was sent,
    /// and the server that could have said lost its memory (an in-memory server restarted), or
    /// the client stopped reconnecting; or the server's storage cannot tell whether it stored
    /// the commit. Read the data to find out before committing again if doing it twice
    /// matters.
    #[error("the outcome of the commit is unknown: {reason}; read the data again to find out whether it was applied")]
    CommitOutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// The server refused the service token.
    #[error("unauthorized: the server rejected the service token; check the token passed to Client::builder(..).token(..) (ODB_TOKEN in the examples)")]
    Unauthorized,
    /// TLS failed.
    #[error("TLS error: {0}")]
    Tls(String),
    /// An operation did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// A limit was exceeded.
    #[error("limit exceeded: {what}")]
    LimitExceeded {
        /// Which limit, and its value.
        what: String,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An I/O error on the connection.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused a request.
    #[error("the server refused the request: {0}")]
    Server(String),
    /// The server refused the connection, or closed it, for this reason
    /// ([`Refusal::is_permanent`](odb_wire::Refusal::is_permanent) tells whether connecting
    /// again can help).
    #[error("the server refused the connection: {0}")]
    Refused(odb_wire::Refusal),
    /// The server cannot store commits right now (a full disk, an unreachable Redis). Nothing
    /// was applied; the same transaction may succeed once the storage is back.
    #[error("storage unavailable: {0}; nothing was committed, try again later")]
    StorageUnavailable(String),
    /// The transaction's closure asked to stop (see [`Error::abort`]).
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// The server's database was replaced (an in-memory server restarted) while this view
    /// was open, so the view cannot read on. Open a new view; a transaction runs again by
    /// itself.
    #[error("the server's database was replaced while this view was open (an in-memory server restarted); read again on a new view")]
    DatabaseReplaced,
    /// A historical view asked for a state the replica no longer retains.
    #[error("the state at tid {tid} is no longer retained by this client (the oldest retained is tid {oldest}); raise ClientBuilder::retain_history to keep more history")]
    HistoryUnavailable {
        /// The tid asked for.
        tid: Tid,
        /// The oldest tid whose state is still retained.
        oldest: Tid,
    },
}

impl Error {
    /// An error a transaction closure can return to stop without committing or retrying.
    ///
    /// A closure whose error type is the program's own (see [`Client::transaction`]) returns
    /// one of its own errors instead, and gets it back unchanged.
    ///
    /// [`Client::transaction`]: crate::Client::transaction
    pub fn abort(reason: impl Into<String>) -> Error {
        Error::Aborted(reason.into())
    }

    /// True for errors that a new attempt on a fresh snapshot may not hit again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::TooOld { .. } | Error::CommitNotApplied { .. }
        )
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
