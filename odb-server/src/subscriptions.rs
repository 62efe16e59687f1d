//! What each connection can see, and how a commit is filtered for it.
//!
//! A connection sees an object if it subscribed to one of the object's current index values (a
//! type subscription is the type's "all" index with the empty value) or if the object is in its
//! explicit set: objects subscribed one by one, objects it created, and objects that left a
//! subscribed index value (they stay visible, as in the original).

use crate::store::{Applied, Store, Touched};
use bytes::Bytes;
use odb_wire::{CommitData, FieldWrite, IndexId, IndexWrite, ObjectId};
use std::collections::HashSet;

/// One connection's subscriptions.
#[derive(Default, Debug)]
pub(crate) struct Visibility {
    index_subs: HashSet<(IndexId, Bytes)>,
    explicit: HashSet<ObjectId>,
}

/// What one connection gets of one object touched by a commit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Part {
    /// The object became visible: all its current data.
    Full,
    /// The object was and stays visible: this commit's changes to it.
    Changes,
    /// The object was visible and has been deleted.
    Deleted,
}

/// The parts of one commit a connection gets, one entry per object, in object order. Two
/// connections with equal selections receive identical messages.
pub(crate) type Selection = Vec<(ObjectId, Part)>;

impl Visibility {
    /// Subscribes to every object whose `index` has `value`, now or later.
    pub fn add_index(&mut self, index: IndexId, value: Bytes) {
        self.index_subs.insert((index, value));
    }

    /// Makes one object visible, whether or not it exists yet.
    pub fn add_object(&mut self, id: ObjectId) {
        self.explicit.insert(id);
    }

    /// Whether an object with these index memberships is visible.
    pub fn sees(&self, id: ObjectId, memberships: &[(IndexId, Bytes)]) -> bool {
        self.explicit.contains(&id) || self.sees_by_index(memberships)
    }

    fn sees_by_index(&self, memberships: &[(IndexId, Bytes)]) -> bool {
        !self.index_subs.is_empty()
            && memberships
                .iter()
                .any(|(i, v)| self.index_subs.contains(&(*i, v.clone())))
    }

    /// Decides what this connection gets of a commit the store has just applied, and updates
    /// the visibility for it: own creations and objects leaving a subscribed index value become
    /// explicit, deleted objects are forgotten.
    pub fn select(&mut self, applied: &Applied, store: &Store, is_committer: bool) -> Selection {
        let mut selection = Vec::new();
        for (&id, touched) in &applied.objects {
            let before = !touched.created && self.sees(id, &touched.old_indices);
            let Some(record) = store.record(id) else {
                if before {
                    self.explicit.remove(&id);
                    selection.push((id, Part::Deleted));
                }
                continue;
            };
            let by_index = self.sees_by_index(&record.indices);
            if before {
                if !by_index {
                    self.explicit.insert(id);
                }
                if has_changes(touched, &record.indices) {
                    selection.push((id, Part::Changes));
                }
            } else if by_index || self.explicit.contains(&id) {
                selection.push((id, Part::Full));
            } else if is_committer && touched.created {
                self.explicit.insert(id);
                selection.push((id, Part::Full));
            }
        }
        selection
    }
}

/// Whether a commit changed anything of a surviving object.
fn has_changes(touched: &Touched, new_indices: &[(IndexId, Bytes)]) -> bool {
    !touched.writes.is_empty() || touched.old_indices != new_indices
}

/// Builds the message body for a selection.
pub(crate) fn commit_data(selection: &Selection, applied: &Applied, store: &Store) -> CommitData {
    let mut data = CommitData {
        tid: applied.tid,
        ..CommitData::default()
    };
    for &(id, part) in selection {
        match part {
            Part::Deleted => data.deletes.push(id),
            Part::Full => {
                let Some(record) = store.record(id) else {
                    continue;
                };
                data.writes
                    .extend(record.fields.iter().map(|(f, v)| FieldWrite {
                        object: id,
                        field: *f,
                        value: Some(v.clone()),
                    }));
                data.index_writes
                    .extend(record.indices.iter().map(|(i, v)| IndexWrite {
                        object: id,
                        index: *i,
                        value: Some(v.clone()),
                    }));
            }
            Part::Changes => {
                let (Some(record), Some(touched)) = (store.record(id), applied.objects.get(&id))
                else {
                    continue;
                };
                data.writes
                    .extend(touched.writes.iter().map(|(f, v)| FieldWrite {
                        object: id,
                        field: *f,
                        value: v.clone(),
                    }));
                index_changes(
                    id,
                    &touched.old_indices,
                    &record.indices,
                    &mut data.index_writes,
                );
            }
        }
    }
    data
}

/// The index writes that turn `old` memberships into `new` ones (both sorted by index id).
fn index_changes(
    id: ObjectId,
    old: &[(IndexId, Bytes)],
    new: &[(IndexId, Bytes)],
    out: &mut Vec<IndexWrite>,
) {
    for (i, v) in new {
        if !old.iter().any(|(oi, ov)| oi == i && ov == v) {
            out.push(IndexWrite {
                object: id,
                index: *i,
                value: Some(v.clone()),
            });
        }
    }
    for (i, _) in old {
        if !new.iter().any(|(ni, _)| ni == i) {
            out.push(IndexWrite {
                object: id,
                index: *i,
                value: None,
            });
        }
    }
}
