//! Size limits on what a commit may write.
//!
//! Everything a commit writes reaches subscribers inside one `Commit` message, and an object
//! that becomes visible to a subscriber travels whole inside it. Both must stay well below the
//! frame limit, or subscribers would be sent frames they cannot read. So a commit is rejected
//! when the entries it writes, or any object it leaves behind, would encode to more than the
//! limits below (by default half the frame limit for a commit and a quarter of it for one object,
//! leaving room in a push for objects that become visible whole).
//!
//! Sizes are counted as the value's length plus [`ENTRY_OVERHEAD`] per field or index entry,
//! which covers the object id, the field or index id and the length prefix in any encoding of
//! the entry, so a count never underestimates the bytes on the wire.

use super::plan::Plan;
use super::table::MAX_ENTRIES;
use super::Store;
use odb_wire::limits::Limit;
use odb_wire::{CommitOutcome, CommitRequest};

/// Bytes counted for each field or index entry besides its value.
pub(crate) const ENTRY_OVERHEAD: usize = 24;

/// Bytes counted for each deleted object.
const DELETE_SIZE: usize = 9;

/// What the store enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// How many tids of conflict history are kept.
    pub conflict_history: u64,
    /// Largest size of one object: its fields and index values.
    pub object_bytes: usize,
    /// Largest size of what one commit writes: its field writes, index writes and deletes.
    pub commit_bytes: usize,
}

impl Default for Limits {
    /// No limits.
    fn default() -> Self {
        Limits {
            conflict_history: u64::MAX,
            object_bytes: usize::MAX,
            commit_bytes: usize::MAX,
        }
    }
}

impl Limits {
    /// The limits for a server with this frame limit and conflict history.
    pub fn for_server(max_frame: usize, conflict_history: u64) -> Limits {
        Limits {
            conflict_history,
            object_bytes: max_frame / 4,
            commit_bytes: max_frame / 2,
        }
    }
}

/// Bytes counted for one entry whose value has `len` bytes.
fn entry(len: usize) -> usize {
    len.saturating_add(ENTRY_OVERHEAD)
}

/// The bytes counted for the entries of an object, given their value lengths.
fn total(lens: impl Iterator<Item = usize>) -> usize {
    lens.map(entry).fold(0, usize::saturating_add)
}

/// Merges an object's entries (id and value length, sorted by id) with the last write of each
/// id (sorted by id; `None`: removed), and counts the result.
fn merged_size<K: Ord + Copy>(
    old: impl Iterator<Item = (K, usize)>,
    writes: impl Iterator<Item = (K, Option<usize>)>,
) -> usize {
    let mut old = old.peekable();
    let mut writes = writes.peekable();
    let mut size = 0usize;
    loop {
        let len = match (old.peek(), writes.peek()) {
            (None, None) => return size,
            (Some(_), None) => old.next().map(|(_, len)| len),
            (Some(x), Some(y)) if x.0 < y.0 => old.next().map(|(_, len)| len),
            (_, Some(&(k, _))) => {
                old.next_if(|x| x.0 == k);
                let mut last = None;
                while let Some((_, len)) = writes.next_if(|w| w.0 == k) {
                    last = len;
                }
                last
            }
        };
        if let Some(len) = len {
            size = size.saturating_add(entry(len));
        }
    }
}

impl Store {
    /// Rejects a commit that would overfill the store's tables, writes more than
    /// [`Limits::commit_bytes`] or leaves an object larger than [`Limits::object_bytes`].
    pub(super) fn check_sizes(
        &self,
        req: &CommitRequest,
        plan: &Plan<'_>,
    ) -> Result<(), CommitOutcome> {
        // Each created object, and each index write, adds at most one entry to a table.
        let created = plan.created();
        let objects = self.objects.len().saturating_add(created);
        let values = (self.members.len())
            .saturating_add(created)
            .saturating_add(req.index_writes.len());
        if objects.max(values) > MAX_ENTRIES {
            return Err(CommitOutcome::Invalid {
                reason: Limit::StoreSize.reason(format!(
                    "the store holds {} objects and {} index values, and cannot \
                     take the ones this commit would add",
                    self.objects.len(),
                    self.members.len()
                )),
                limit: Some(Limit::StoreSize),
            });
        }
        let limits = self.limits;
        let value_len = |v: &Option<bytes::Bytes>| v.as_ref().map_or(0, |v| v.len());
        let written = total(
            req.writes
                .iter()
                .map(|w| value_len(&w.value))
                .chain(req.index_writes.iter().map(|w| value_len(&w.value))),
        )
        .saturating_add(req.deletes.len().saturating_mul(DELETE_SIZE));
        if written > limits.commit_bytes {
            return Err(CommitOutcome::Invalid {
                reason: Limit::CommitSize.reason(format!(
                    "the commit writes about {written} bytes, over the limit of {} \
                     bytes per commit; split it into several transactions",
                    limits.commit_bytes
                )),
                limit: Some(Limit::CommitSize),
            });
        }
        for p in plan.objects.iter().filter(|p| !p.deleted) {
            let live = self.record(p.id);
            let writes = || plan.writes.range(p.writes.clone());
            let index_writes = || plan.index_writes.range(p.index_writes.clone());
            // The server adds every created object to its type's all-objects index.
            let extra = if p.created { ENTRY_OVERHEAD } else { 0 };
            let live_size = live.map_or(0, |r| {
                total(r.fields().map(|(_, v)| v.len()))
                    .saturating_add(total(r.indices().map(|(_, v)| v.len())))
            });
            // No object grows by more than what the commit writes to it: in the common case
            // this cheap bound settles it.
            let bound = total(
                writes()
                    .map(|w| value_len(&w.value))
                    .chain(index_writes().map(|w| value_len(&w.value))),
            )
            .saturating_add(live_size)
            .saturating_add(extra);
            if bound <= limits.object_bytes {
                continue;
            }
            let fields = merged_size(
                live.into_iter()
                    .flat_map(|r| r.fields().map(|(f, v)| (f, v.len()))),
                writes().map(|w| (w.field, w.value.as_ref().map(|v| v.len()))),
            );
            let indices = merged_size(
                live.into_iter()
                    .flat_map(|r| r.indices().map(|(i, v)| (i, v.len()))),
                index_writes().map(|w| (w.index, w.value.as_ref().map(|v| v.len()))),
            );
            let size = fields.saturating_add(indices).saturating_add(extra);
            if size > limits.object_bytes {
                return Err(CommitOutcome::Invalid {
                    reason: Limit::ObjectSize.reason(format!(
                        "object {} would take about {size} bytes, over the limit \
                         of {} bytes per object",
                        p.id, limits.object_bytes
                    )),
                    limit: Some(Limit::ObjectSize),
                });
            }
        }
        Ok(())
    }
}
