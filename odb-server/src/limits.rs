//! The per-commit limits a connection's requests must respect, checked by the sequencer before
//! the store validates a commit: how many writes and reads one commit may carry, and how large
//! one value may be. A refusal carries the [`Limit`] it hit, which clients turn into a limit error.

use crate::config::ServerConfig;
use odb_wire::limits::Limit;
use odb_wire::{CommitOutcome, CommitRequest};

/// Refuses a commit that carries more writes or reads than allowed, or a value that is too
/// large. Cheap: it only counts and measures.
pub(crate) fn check_commit(
    config: &ServerConfig,
    req: &CommitRequest,
) -> Result<(), CommitOutcome> {
    let invalid = |limit: Limit, detail: std::fmt::Arguments<'_>| {
        Err(CommitOutcome::Invalid {
            reason: limit.reason(detail),
            limit: Some(limit),
        })
    };
    let writes = req
        .writes
        .len()
        .saturating_add(req.index_writes.len())
        .saturating_add(req.deletes.len());
    if writes > config.max_writes_per_commit {
        return invalid(
            Limit::WritesPerCommit,
            format_args!(
                "the commit has {writes} writes and deletes, over the server's limit of {}; \
                 split it into several transactions",
                config.max_writes_per_commit
            ),
        );
    }
    let reads = req.reads.len().saturating_add(req.index_reads.len());
    if reads > config.max_reads_per_commit {
        return invalid(
            Limit::ReadsPerCommit,
            format_args!(
                "the commit recorded {reads} reads and lookups, over the server's limit of {}; \
                 read less in one transaction",
                config.max_reads_per_commit
            ),
        );
    }
    let field_values = req
        .writes
        .iter()
        .filter_map(|w| w.value.as_ref().map(|v| (w.object, v.len())));
    let index_values = req
        .index_writes
        .iter()
        .filter_map(|w| w.value.as_ref().map(|v| (w.object, v.len())));
    let lookups = req
        .index_reads
        .iter()
        .map(|(_, v)| (Default::default(), v.len()));
    if let Some((object, len)) = field_values
        .chain(index_values)
        .chain(lookups)
        .find(|(_, len)| *len > config.max_value_bytes)
    {
        return invalid(
            Limit::ValueSize,
            format_args!(
                "a value of {len} bytes (object {object}) is over the server's limit of {} bytes \
                 per value",
                config.max_value_bytes
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use odb_wire::{FieldId, FieldWrite, IndexId, ObjectId};

    fn write(value: usize) -> FieldWrite {
        FieldWrite {
            object: ObjectId(1),
            field: FieldId(1),
            value: Some(Bytes::from(vec![0; value])),
        }
    }

    fn limit(outcome: Result<(), CommitOutcome>) -> Limit {
        match outcome {
            Err(CommitOutcome::Invalid {
                reason,
                limit: Some(limit),
            }) => {
                assert!(reason.starts_with(limit.name()), "{reason}");
                limit
            }
            other => panic!("expected a limit refusal, got {other:?}"),
        }
    }

    #[test]
    fn each_limit_is_named() {
        let config = ServerConfig {
            max_writes_per_commit: 2,
            max_reads_per_commit: 1,
            max_value_bytes: 4,
            ..ServerConfig::default()
        };
        let ok = CommitRequest {
            writes: vec![write(4)],
            deletes: vec![ObjectId(2)],
            reads: vec![(ObjectId(1), FieldId(1))],
            ..CommitRequest::default()
        };
        assert_eq!(check_commit(&config, &ok), Ok(()));

        let mut many = ok.clone();
        many.writes.push(write(1));
        assert_eq!(limit(check_commit(&config, &many)), Limit::WritesPerCommit);

        let mut reads = ok.clone();
        reads.index_reads.push((IndexId(1), Bytes::new()));
        assert_eq!(limit(check_commit(&config, &reads)), Limit::ReadsPerCommit);

        let mut big = ok.clone();
        big.writes[0] = write(5);
        assert_eq!(limit(check_commit(&config, &big)), Limit::ValueSize);
    }
}
