//! What the server's typed refusals mean to a user of the SDK: the one place that turns a
//! [`Refusal`], a refused request or a commit that did not commit into an [`Error`].

use crate::Error;
use odb_wire::limits::Limit;
use odb_wire::{CommitOutcome, Refusal, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// The error for a connection the server refused, or closed with a reason.
pub(crate) fn refusal_error(reason: &Refusal) -> Error {
    match reason {
        Refusal::Unauthorized => Error::Unauthorized,
        Refusal::ProtocolVersion { server, oldest } => Error::Protocol(format!(
            "the server speaks protocol versions {oldest} to {server}, this client \
             {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; upgrade the older side"
        )),
        other => Error::Refused(other.clone()),
    }
}

/// The error for a request the server refused (`RequestFailed`).
pub(crate) fn request_error(reason: String, limit: Option<Limit>) -> Error {
    match limit {
        Some(_) => Error::LimitExceeded { what: reason },
        None => Error::Server(reason),
    }
}

/// The error for a commit outcome other than `Committed`, `Conflict` and `TooOld` (which
/// need the client's state to describe).
pub(crate) fn commit_error(outcome: CommitOutcome) -> Error {
    match outcome {
        CommitOutcome::Invalid {
            reason,
            limit: Some(_),
        } => Error::LimitExceeded { what: reason },
        CommitOutcome::Invalid {
            reason,
            limit: None,
        } => Error::Server(reason),
        CommitOutcome::StorageUnavailable { reason } => Error::StorageUnavailable(reason),
        CommitOutcome::OutcomeUnknown { reason } => Error::CommitOutcomeUnknown { reason },
        other => Error::Protocol(format!("unexpected commit outcome {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_told_by_their_type_not_their_text() {
        let limited = request_error("anything".into(), Some(Limit::StoreSize));
        assert!(matches!(limited, Error::LimitExceeded { .. }), "{limited}");
        let plain = request_error("store size: looks like a limit".into(), None);
        assert!(matches!(plain, Error::Server(_)), "{plain}");
        let commit = commit_error(CommitOutcome::Invalid {
            reason: "store size: full".into(),
            limit: Some(Limit::StoreSize),
        });
        assert!(matches!(commit, Error::LimitExceeded { .. }), "{commit}");
    }

    #[test]
    fn refusals_keep_their_reason() {
        let full = refusal_error(&Refusal::ServerFull { limit: 3 });
        assert!(full.to_string().contains("server full"), "{full}");
        assert!(matches!(
            refusal_error(&Refusal::ShuttingDown),
            Error::Refused(Refusal::ShuttingDown)
        ));
        assert!(matches!(
            refusal_error(&Refusal::Unauthorized),
            Error::Unauthorized
        ));
        let unknown = commit_error(CommitOutcome::OutcomeUnknown {
            reason: "broken pipe".into(),
        });
        assert!(matches!(unknown, Error::CommitOutcomeUnknown { .. }));
    }
}
