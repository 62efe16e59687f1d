//! Applying a commit of this client's own when the server answers `CommittedAsSent`.
//!
//! The server skips pushing a commit back to its committer when what the commit changed, for
//! this connection, is exactly what its request wrote (protocol version 3). The committer then
//! applies its request at the commit's tid, as it would have applied the push: the same field
//! values, the same index values, and the one thing the server adds, each created object's
//! membership of its type's all-objects index. Every commit the server made before it and that
//! this client sees was pushed before the answer, so the replica stays in tid order.

use crate::registry::Registry;
use odb_wire::{
    CommitData, CommitRequest, FieldWrite, IndexWrite, ObjectId, Tid, ALL_OBJECTS_VALUE,
    EXISTS_VALUE,
};

/// What a commit wrote, kept until its answer.
#[derive(Debug)]
pub(crate) struct Written {
    writes: Vec<FieldWrite>,
    index_writes: Vec<IndexWrite>,
    deletes: Vec<ObjectId>,
}

impl Written {
    /// Keeps the writes of a request that was just encoded.
    pub fn of(request: CommitRequest) -> Written {
        Written {
            writes: request.writes,
            index_writes: request.index_writes,
            deletes: request.deletes,
        }
    }

    /// How many writes it keeps.
    pub fn len(&self) -> usize {
        self.writes.len() + self.index_writes.len() + self.deletes.len()
    }

    /// The commit the server would have pushed to this client, at `tid`. An object is created
    /// by the request when it writes the object's existence field; the server adds it to its
    /// type's all-objects index. (A value the request removes from an object it creates is
    /// absent from the replica's record either way.)
    pub fn into_commit(self, tid: Tid, registry: &Registry) -> CommitData {
        let Written {
            writes,
            index_writes,
            deletes,
        } = self;
        let mut joins = writes
            .iter()
            .filter(|w| w.value.as_ref() == Some(&EXISTS_VALUE))
            .filter_map(|w| {
                let info = registry.by_exists_field(w.field)?;
                Some(IndexWrite {
                    object: w.object,
                    index: info.all_index,
                    value: Some(ALL_OBJECTS_VALUE),
                })
            })
            .peekable();
        // Each created object's membership goes right after its other index values (a
        // request lists objects in id order), so that the replica rebuilds every object once.
        let mut merged = Vec::with_capacity(index_writes.len() + writes.len() / 2);
        for w in index_writes {
            while let Some(join) = joins.next_if(|j| j.object < w.object) {
                merged.push(join);
            }
            merged.push(w);
        }
        merged.extend(joins);
        CommitData {
            tid,
            writes,
            index_writes: merged,
            deletes,
        }
    }
}
