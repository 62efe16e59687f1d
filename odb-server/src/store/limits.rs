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

use super::table::MAX_ENTRIES;
use super::Store;
use odb_wire::hash::FastMap;
use odb_wire::{CommitOutcome, CommitRequest, FieldId, IndexId, ObjectId, TypeId};
use std::collections::{BTreeMap, HashMap};

/// Bytes counted for each field or index entry besides its value.
pub(crate) const ENTRY_OVERHEAD: usize = 24;

/// How a refusal for the size of a commit starts.
pub(crate) const COMMIT_SIZE: &str = "commit size";
/// How a refusal for the size of an object starts.
pub(crate) const OBJECT_SIZE: &str = "object size";

/// How a refusal because the store is full starts.
pub(crate) const STORE_SIZE: &str = "store size";

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

/// The sizes of one object's entries after a commit.
#[derive(Default)]
struct Sizes {
    fields: BTreeMap<FieldId, usize>,
    indices: BTreeMap<IndexId, usize>,
    /// Entries the server adds.
    extra: usize,
}

impl Sizes {
    fn total(&self) -> usize {
        self.fields
            .values()
            .chain(self.indices.values())
            .fold(self.extra, |sum, len| {
                sum.saturating_add(len.saturating_add(ENTRY_OVERHEAD))
            })
    }
}

impl Store {
    /// Rejects a commit that would overfill the store's tables, writes more than
    /// [`Limits::commit_bytes`] or leaves an object larger than [`Limits::object_bytes`].
    /// `created` are the objects the commit creates.
    pub(super) fn check_sizes(
        &self,
        req: &CommitRequest,
        created: &FastMap<ObjectId, TypeId>,
    ) -> Result<(), CommitOutcome> {
        // Each created object, and each index write, adds at most one entry to a table.
        let objects = self.objects.len().saturating_add(created.len());
        let values = (self.members.len())
            .saturating_add(created.len())
            .saturating_add(req.index_writes.len());
        if objects.max(values) > MAX_ENTRIES {
            return Err(CommitOutcome::Invalid {
                reason: format!(
                    "{STORE_SIZE}: the store holds {} objects and {} index values, and cannot \
                     take the ones this commit would add",
                    self.objects.len(),
                    self.members.len()
                ),
            });
        }
        let limits = self.limits;
        let entry = |len: usize| len.saturating_add(ENTRY_OVERHEAD);
        let written = req
            .writes
            .iter()
            .map(|w| entry(w.value.as_ref().map_or(0, |v| v.len())))
            .chain(
                req.index_writes
                    .iter()
                    .map(|w| entry(w.value.as_ref().map_or(0, |v| v.len()))),
            )
            .fold(0usize, usize::saturating_add)
            .saturating_add(req.deletes.len().saturating_mul(DELETE_SIZE));
        if written > limits.commit_bytes {
            return Err(CommitOutcome::Invalid {
                reason: format!(
                    "{COMMIT_SIZE}: the commit writes about {written} bytes, over the limit of {} \
                     bytes per commit; split it into several transactions",
                    limits.commit_bytes
                ),
            });
        }
        // No object grows by more than what the commit writes to it (plus the all-objects index
        // entry of a created object), so in the common case a cheap bound settles it.
        let bound = self
            .largest_touched(req)
            .saturating_add(written)
            .saturating_add(ENTRY_OVERHEAD);
        if bound <= limits.object_bytes {
            return Ok(());
        }
        let mut sizes: HashMap<ObjectId, Sizes> = HashMap::new();
        let start = |sizes: &mut HashMap<ObjectId, Sizes>, o: ObjectId| {
            if sizes.contains_key(&o) {
                return;
            }
            let mut s = Sizes::default();
            if let Some(record) = self.live(o) {
                s.fields = record.fields().map(|(f, v)| (f, v.len())).collect();
                s.indices = record.indices().map(|(i, v)| (i, v.len())).collect();
            } else if created.contains_key(&o) {
                // The server adds every created object to its type's all-objects index.
                s.extra = ENTRY_OVERHEAD;
            }
            sizes.insert(o, s);
        };
        for w in &req.writes {
            start(&mut sizes, w.object);
            if let Some(s) = sizes.get_mut(&w.object) {
                match &w.value {
                    Some(v) => s.fields.insert(w.field, v.len()),
                    None => s.fields.remove(&w.field),
                };
            }
        }
        for w in &req.index_writes {
            start(&mut sizes, w.object);
            if let Some(s) = sizes.get_mut(&w.object) {
                match &w.value {
                    Some(v) => s.indices.insert(w.index, v.len()),
                    None => s.indices.remove(&w.index),
                };
            }
        }
        for o in &req.deletes {
            sizes.remove(o);
        }
        let too_big = sizes
            .iter()
            .map(|(o, s)| (*o, s.total()))
            .filter(|(_, size)| *size > limits.object_bytes)
            .min_by_key(|(o, _)| *o);
        match too_big {
            Some((o, size)) => Err(CommitOutcome::Invalid {
                reason: format!(
                    "{OBJECT_SIZE}: object {o} would take about {size} bytes, over the limit of \
                     {} bytes per object",
                    limits.object_bytes
                ),
            }),
            None => Ok(()),
        }
    }

    /// The size of the largest existing object a commit writes to.
    fn largest_touched(&self, req: &CommitRequest) -> usize {
        req.writes
            .iter()
            .map(|w| w.object)
            .chain(req.index_writes.iter().map(|w| w.object))
            .scan(None, |last, o| {
                // Writes usually come grouped by object: measure each group once.
                let repeated = *last == Some(o);
                *last = Some(o);
                Some((!repeated).then_some(o))
            })
            .flatten()
            .filter_map(|o| self.live(o))
            .map(|r| {
                r.fields()
                    .map(|(_, v)| v.len())
                    .chain(r.indices().map(|(_, v)| v.len()))
                    .fold(0usize, |sum, len| {
                        sum.saturating_add(len.saturating_add(ENTRY_OVERHEAD))
                    })
            })
            .max()
            .unwrap_or(0)
    }
}
