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
use crate::store::{Applied, Obj, Store, Touched};
use bytes::Bytes;
use odb_wire::hash::{FastMap, FastSet};
use odb_wire::{IndexId, ObjectId};
use std::collections::{BTreeSet, HashSet};

/// Subscribed index values, grouped by index so that a value can be looked up by its bytes.
/// Index ids are assigned by the server; the values come from the client and keep the default,
/// seeded hasher.
#[derive(Default, Debug)]
struct IndexSubs {
    by_index: FastMap<IndexId, HashSet<Bytes>>,
    len: usize,
}

impl IndexSubs {
    fn insert(&mut self, index: IndexId, value: Bytes) {
        if self.by_index.entry(index).or_default().insert(value) {
            self.len += 1;
        }
    }

    /// Removes a value; returns whether it was subscribed.
    fn remove(&mut self, index: IndexId, value: &[u8]) -> bool {
        let Some(values) = self.by_index.get_mut(&index) else {
            return false;
        };
        let removed = values.remove(value);
        if values.is_empty() {
            self.by_index.remove(&index);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn contains(&self, index: IndexId, value: &[u8]) -> bool {
        self.by_index
            .get(&index)
            .is_some_and(|values| values.contains(value))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One connection's subscriptions.
#[derive(Default, Debug)]
pub(crate) struct Visibility {
    /// Subscribed index values.
    index_subs: IndexSubs,
    /// Objects subscribed one by one, whether or not they exist yet.
    objects: FastSet<ObjectId>,
    /// Objects this connection created (and its own connection object), and the id ranges of a
    /// resumed session: always visible.
    created: IdSet,
    /// Whether `created` holds id ranges of a resumed session, whose objects another connection
    /// (the session's previous one, not yet known to be gone) may still create.
    resumed: bool,
    /// Objects visible because they left subscribed index values, with those values.
    left: FastMap<ObjectId, Vec<(IndexId, Bytes)>>,
}

/// How many subscriptions of each kind a connection holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// Whole types.
    pub types: usize,
    /// Index values (type subscriptions not included).
    pub index_values: usize,
    /// Single objects.
    pub objects: usize,
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
        self.index_subs.insert(index, value);
    }

    /// Subscribes to one object, whether or not it exists yet.
    pub fn add_object(&mut self, id: ObjectId) {
        self.objects.insert(id);
    }

    /// Makes every object with an id from `first` to `last` (inclusive) visible as this
    /// connection's own creation, whoever created it: a resumed session's objects.
    pub fn add_own(&mut self, first: u64, last: u64) {
        self.created.insert_range(first, last);
        self.resumed = true;
    }

    /// The subscribed index values (a type subscription is the type's "all" index with the
    /// empty value).
    pub fn index_values(&self) -> impl Iterator<Item = (IndexId, &[u8])> + '_ {
        self.index_subs
            .by_index
            .iter()
            .flat_map(|(index, values)| values.iter().map(move |v| (*index, &v[..])))
    }

    /// The objects watched by id: subscribed one by one, or kept after leaving a subscribed
    /// index value.
    pub fn watched(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.objects.iter().chain(self.left.keys()).copied()
    }

    /// Whether an object is watched by id (see [`Visibility::watched`]).
    pub fn watches(&self, id: ObjectId) -> bool {
        self.objects.contains(&id) || self.left.contains_key(&id)
    }

    /// Every live object this connection sees, in ascending order. Own objects are found by
    /// range queries on the all-objects index of each type in `all_indices`, not by a scan of
    /// the store.
    pub fn visible_objects(
        &self,
        store: &Store,
        all_indices: impl Iterator<Item = IndexId>,
    ) -> BTreeSet<ObjectId> {
        let mut visible = BTreeSet::new();
        for (index, values) in &self.index_subs.by_index {
            for value in values {
                visible.extend(store.members(*index, value));
            }
        }
        let explicit = self.objects.iter().chain(self.left.keys());
        visible.extend(explicit.filter(|&&id| store.record(id).is_some()));
        let all_indices: Vec<IndexId> = all_indices.collect();
        for (first, last) in self.created.iter_ranges() {
            for &index in &all_indices {
                visible.extend(store.members_in(index, &[], ObjectId(first), ObjectId(last)));
            }
        }
        visible
    }

    /// The subscriptions held, by kind; `is_type_index` tells a type's "all" index.
    pub fn held(&self, is_type_index: impl Fn(IndexId) -> bool) -> Held {
        let mut held = Held {
            objects: self.objects.len(),
            ..Held::default()
        };
        for (index, values) in &self.index_subs.by_index {
            if is_type_index(*index) {
                held.types += values.len();
            } else {
                held.index_values += values.len();
            }
        }
        held
    }

    /// Up to `limit` subscribed targets, sorted: index values (a type subscription is the
    /// type's "all" index with the empty value), then single objects. For inspection.
    pub fn targets(&self, limit: usize) -> (Vec<(IndexId, Bytes)>, Vec<ObjectId>) {
        let mut indices: Vec<(IndexId, Bytes)> = self
            .index_subs
            .by_index
            .iter()
            .flat_map(|(index, values)| values.iter().map(|v| (*index, v.clone())))
            .take(limit)
            .collect();
        indices.sort();
        let mut objects: Vec<ObjectId> = self
            .objects
            .iter()
            .copied()
            .take(limit.saturating_sub(indices.len()))
            .collect();
        objects.sort();
        (indices, objects)
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
            .filter(|(i, v)| !self.index_subs.contains(*i, v))
            .collect();
        let new_objects: HashSet<&ObjectId> = objects
            .iter()
            .filter(|o| !self.objects.contains(*o))
            .collect();
        (held, new_indices.len() + new_objects.len())
    }

    /// Cancels subscriptions to index values and to single objects; targets not subscribed are
    /// ignored. Returns, in ascending order, the live objects that were visible through a
    /// cancelled target and are visible through nothing else now, and the objects no longer
    /// watched by id ([`Visibility::watched`]).
    pub fn remove(
        &mut self,
        indices: &[(IndexId, Bytes)],
        objects: &[ObjectId],
        store: &Store,
    ) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let mut candidates = BTreeSet::new();
        let mut cancelled = HashSet::new();
        // Objects that were watched by id and may no longer be.
        let mut unwatched = Vec::new();
        for (index, value) in indices {
            if self.index_subs.remove(*index, value) {
                candidates.extend(store.members(*index, value));
            }
            cancelled.insert((*index, value.clone()));
        }
        if !cancelled.is_empty() {
            self.left.retain(|id, reasons| {
                reasons.retain(|r| !cancelled.contains(r));
                if reasons.is_empty() {
                    candidates.insert(*id);
                    unwatched.push(*id);
                }
                !reasons.is_empty()
            });
        }
        for id in objects {
            if self.objects.remove(id) {
                candidates.insert(*id);
                unwatched.push(*id);
            }
        }
        unwatched.retain(|&id| !self.watches(id));
        let dropped = candidates
            .into_iter()
            .filter(|&id| store.record(id).is_some_and(|r| !self.sees(id, r)))
            .collect();
        (dropped, unwatched)
    }

    /// Whether an object with this record is visible.
    pub fn sees(&self, id: ObjectId, record: &Obj) -> bool {
        self.sees_explicitly(id) || self.sees_by_index(record)
    }

    /// Whether an object is visible whatever its index values.
    fn sees_explicitly(&self, id: ObjectId) -> bool {
        self.created.contains(id) || self.objects.contains(&id) || self.left.contains_key(&id)
    }

    /// Whether an object that was not visible before a commit is visible explicitly after it.
    /// An object the commit created is the committer's own creation or subscribed by id; no
    /// other reason can apply yet, so the (large) set of own creations is not searched for it,
    /// unless this connection resumed a session: the session's previous connection may create
    /// objects in the resumed ranges (a late commit).
    fn sees_new(&self, id: ObjectId, created: bool, is_committer: bool) -> bool {
        if created {
            is_committer
                || self.objects.contains(&id)
                || (self.resumed && self.created.contains(id))
        } else {
            self.sees_explicitly(id)
        }
    }

    /// Forgets an object that no longer exists.
    fn forget(&mut self, id: ObjectId) {
        self.objects.remove(&id);
        self.created.remove(id);
        self.left.remove(&id);
    }

    /// Records which subscribed index values a visible object left, going from `old` to `new`
    /// memberships: each of them keeps it visible. Returns whether the object was not kept
    /// before (it is watched by id from now on).
    fn record_leaving(&mut self, id: ObjectId, old: &Obj, new: &Obj) -> bool {
        if self.index_subs.is_empty() || self.created.contains(id) || self.objects.contains(&id) {
            return false;
        }
        let left: Vec<(IndexId, Bytes)> = old
            .indices()
            .filter(|&(i, v)| self.index_subs.contains(i, v) && !new.indices().any(|m| m == (i, v)))
            .map(|(i, v)| (i, Bytes::copy_from_slice(v)))
            .collect();
        if left.is_empty() {
            return false;
        }
        let newly = !self.left.contains_key(&id);
        let reasons = self.left.entry(id).or_default();
        for value in left {
            if !reasons.contains(&value) {
                reasons.push(value);
            }
        }
        newly
    }

    /// Whether a subscribed index value holds an object with this record. The record's
    /// memberships are only read when there is a subscribed value: a connection without one
    /// costs a commit's fan-out nothing per object.
    fn sees_by_index(&self, record: &Obj) -> bool {
        !self.index_subs.is_empty()
            && record
                .indices()
                .any(|(i, v)| self.index_subs.contains(i, v))
    }

    /// Whether this connection, the committer of the commit that touched `current`, saw before
    /// the commit every object the commit touched that existed then. Its own creations it sees
    /// in full; so then what the commit changed for this connection is exactly what its request
    /// wrote, and it can apply the request itself rather than receive the push. Asked before
    /// [`Visibility::select`], which updates the visibility for the commit.
    pub fn saw_all_it_changed(&self, current: &[Current<'_>]) -> bool {
        current.iter().all(
            |object| match (object.touched.before.as_ref(), object.record) {
                (Some(old), _) => self.sees(object.id, old),
                // Created.
                (None, Some(_)) => true,
                // Created and deleted by the same commit: nothing of it is pushed, while its
                // request holds its writes.
                (None, None) => false,
            },
        )
    }

    /// Decides what this connection gets of a commit the store has just applied, and updates
    /// the visibility for it: own creations are remembered, objects leaving a subscribed index
    /// value stay visible, deleted objects are forgotten. `current` holds every object the
    /// commit touched, in object order, with its record after the commit (`None`: deleted); it
    /// is looked up once per commit rather than once per connection. Objects this connection
    /// watches by id from now on (kept after leaving a subscribed value) are added to `kept`.
    pub fn select(
        &mut self,
        current: &[Current<'_>],
        is_committer: bool,
        kept: &mut Vec<ObjectId>,
    ) -> Selection {
        let mut selection = Vec::new();
        for object in current {
            let id = object.id;
            let old = object.touched.before.as_ref();
            let before = old.is_some_and(|old| self.sees(id, old));
            let Some(record) = object.record else {
                self.forget(id);
                if before {
                    selection.push((id, Part::Deleted));
                }
                continue;
            };
            if is_committer && object.touched.created() {
                self.created.insert(id);
            }
            match old.filter(|_| before) {
                Some(old) => {
                    if self.record_leaving(id, old, record) {
                        kept.push(id);
                    }
                    if object.changed {
                        selection.push((id, Part::Changes));
                    }
                }
                None => {
                    if self.sees_by_index(record)
                        || self.sees_new(id, object.touched.created(), is_committer)
                    {
                        selection.push((id, Part::Full));
                    }
                }
            }
        }
        selection
    }
}

/// One object a commit touched, with what it is after the commit.
pub(crate) struct Current<'a> {
    /// The object.
    pub id: ObjectId,
    /// What the commit did to it.
    pub touched: &'a Touched,
    /// The object after the commit; `None`: deleted.
    pub record: Option<&'a Obj>,
    /// Whether the commit changed a field or an index membership of an object that existed
    /// before and still does.
    pub changed: bool,
}

/// The objects `applied` touched, in object order, with their records in `store`.
pub(crate) fn current<'a>(applied: &'a Applied, store: &'a Store) -> Vec<Current<'a>> {
    applied
        .objects
        .iter()
        .map(|touched| {
            let record = store.record(touched.id);
            let changed = match (&touched.before, record) {
                (Some(old), Some(new)) => {
                    new.written_at(applied.tid).next().is_some() || !old.indices().eq(new.indices())
                }
                _ => false,
            };
            Current {
                id: touched.id,
                touched,
                record,
                changed,
            }
        })
        .collect()
}
