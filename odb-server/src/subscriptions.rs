//! What each connection can see, and how a commit is filtered for it.
//!
//! A connection sees an object if it subscribed to one of the object's current index values (a
//! type subscription is the type's "all" index with the empty value), if it subscribed to the
//! object itself, if it created the object, or if the object left an index value the connection
//! is subscribed to (such objects stay visible, as in the original).
//!
//! Subscriptions are a set: subscribing twice to the same target and cancelling it once cancels
//! it. Cancelling ([`Visibility::remove`]) reports the objects that were visible through the
//! cancelled targets and are visible through nothing else now; objects a connection created stay
//! visible whatever it cancels. An object kept only because it left a cancelled index value is
//! dropped with it, which is why each such object remembers which subscribed values it left.

use crate::id_set::IdSet;
use crate::store::{Applied, Store, Touched};
use bytes::Bytes;
use odb_wire::{CommitData, FieldWrite, IndexId, IndexWrite, ObjectId};
use std::collections::{BTreeSet, HashMap, HashSet};

/// One connection's subscriptions.
#[derive(Default, Debug)]
pub(crate) struct Visibility {
    /// Subscribed index values.
    index_subs: HashSet<(IndexId, Bytes)>,
    /// Objects subscribed one by one, whether or not they exist yet.
    objects: HashSet<ObjectId>,
    /// Objects this connection created (and its own connection object): always visible.
    created: IdSet,
    /// Objects visible because they left subscribed index values, with those values.
    left: HashMap<ObjectId, Vec<(IndexId, Bytes)>>,
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

    /// Subscribes to one object, whether or not it exists yet.
    pub fn add_object(&mut self, id: ObjectId) {
        self.objects.insert(id);
    }

    /// How many targets (index values and single objects) this connection is subscribed to,
    /// and how many of `indices` and `objects` it is not subscribed to yet.
    pub fn subscription_count(
        &self,
        indices: &[(IndexId, Bytes)],
        objects: &[ObjectId],
    ) -> (usize, usize) {
        let held = self.index_subs.len() + self.objects.len();
        let new_indices: HashSet<&(IndexId, Bytes)> = indices
            .iter()
            .filter(|i| !self.index_subs.contains(*i))
            .collect();
        let new_objects: HashSet<&ObjectId> = objects
            .iter()
            .filter(|o| !self.objects.contains(*o))
            .collect();
        (held, new_indices.len() + new_objects.len())
    }

    /// Makes an object visible for good, as if this connection had created it.
    pub fn add_created(&mut self, id: ObjectId) {
        self.created.insert(id);
    }

    /// Cancels subscriptions to index values and to single objects; targets not subscribed are
    /// ignored. Returns, in ascending order, the live objects that were visible through a
    /// cancelled target and are visible through nothing else now.
    pub fn remove(
        &mut self,
        indices: &[(IndexId, Bytes)],
        objects: &[ObjectId],
        store: &Store,
    ) -> Vec<ObjectId> {
        let mut candidates = BTreeSet::new();
        let mut cancelled = HashSet::new();
        for (index, value) in indices {
            let key = (*index, value.clone());
            if self.index_subs.remove(&key) {
                candidates.extend(store.members(*index, value));
            }
            cancelled.insert(key);
        }
        if !cancelled.is_empty() {
            self.left.retain(|id, reasons| {
                reasons.retain(|r| !cancelled.contains(r));
                if reasons.is_empty() {
                    candidates.insert(*id);
                }
                !reasons.is_empty()
            });
        }
        for id in objects {
            if self.objects.remove(id) {
                candidates.insert(*id);
            }
        }
        candidates
            .into_iter()
            .filter(|&id| {
                store
                    .record(id)
                    .is_some_and(|r| !self.sees(id, &r.index_list()))
            })
            .collect()
    }

    /// Whether an object with these index memberships is visible.
    pub fn sees(&self, id: ObjectId, memberships: &[(IndexId, Bytes)]) -> bool {
        self.sees_explicitly(id) || self.sees_by_index(memberships)
    }

    /// Whether an object is visible whatever its index values.
    fn sees_explicitly(&self, id: ObjectId) -> bool {
        self.created.contains(id) || self.objects.contains(&id) || self.left.contains_key(&id)
    }

    /// Forgets an object that no longer exists.
    fn forget(&mut self, id: ObjectId) {
        self.objects.remove(&id);
        self.created.remove(id);
        self.left.remove(&id);
    }

    /// Records which subscribed index values a visible object left, going from `old` to `new`
    /// memberships: each of them keeps it visible.
    fn record_leaving(&mut self, id: ObjectId, old: &[(IndexId, Bytes)], new: &[(IndexId, Bytes)]) {
        if self.index_subs.is_empty() || self.created.contains(id) || self.objects.contains(&id) {
            return;
        }
        let left: Vec<(IndexId, Bytes)> = old
            .iter()
            .filter(|&m| !new.contains(m) && self.index_subs.contains(m))
            .cloned()
            .collect();
        if left.is_empty() {
            return;
        }
        let reasons = self.left.entry(id).or_default();
        for value in left {
            if !reasons.contains(&value) {
                reasons.push(value);
            }
        }
    }

    fn sees_by_index(&self, memberships: &[(IndexId, Bytes)]) -> bool {
        !self.index_subs.is_empty()
            && memberships
                .iter()
                .any(|(i, v)| self.index_subs.contains(&(*i, v.clone())))
    }

    /// Decides what this connection gets of a commit the store has just applied, and updates
    /// the visibility for it: own creations are remembered, objects leaving a subscribed index
    /// value stay visible, deleted objects are forgotten. `current` holds every object the
    /// commit touched, in object order, with its record after the commit (`None`: deleted); it
    /// is looked up once per commit rather than once per connection.
    pub fn select(&mut self, current: &[Current<'_>], is_committer: bool) -> Selection {
        let mut selection = Vec::new();
        for object in current {
            let (id, touched) = (object.id, object.touched);
            let before = !touched.created && self.sees(id, &touched.old_indices);
            let Some(indices) = &object.indices else {
                self.forget(id);
                if before {
                    selection.push((id, Part::Deleted));
                }
                continue;
            };
            if is_committer && touched.created {
                self.created.insert(id);
            }
            if before {
                self.record_leaving(id, &touched.old_indices, indices);
                if has_changes(touched, indices) {
                    selection.push((id, Part::Changes));
                }
            } else if self.sees_by_index(indices) || self.sees_explicitly(id) {
                selection.push((id, Part::Full));
            }
        }
        selection
    }
}

/// One object a commit touched, with its index memberships after the commit.
pub(crate) struct Current<'a> {
    /// The object.
    pub id: ObjectId,
    /// What the commit did to it.
    pub touched: &'a Touched,
    /// Its index memberships after the commit, sorted by index id; `None`: deleted.
    pub indices: Option<Vec<(IndexId, Bytes)>>,
}

/// The objects `applied` touched, in object order, with their memberships in `store`.
pub(crate) fn current<'a>(applied: &'a Applied, store: &Store) -> Vec<Current<'a>> {
    applied
        .objects
        .iter()
        .map(|(&id, touched)| Current {
            id,
            touched,
            indices: store.record(id).map(|r| r.index_list()),
        })
        .collect()
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
                data.writes.extend(record.fields().map(|(f, v)| FieldWrite {
                    object: id,
                    field: f,
                    value: Some(Bytes::copy_from_slice(v)),
                }));
                data.index_writes
                    .extend(record.indices().map(|(i, v)| IndexWrite {
                        object: id,
                        index: i,
                        value: Some(Bytes::copy_from_slice(v)),
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
                    &record.index_list(),
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
