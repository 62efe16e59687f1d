//! State shared between the client's handle, its views and its connection task.

use crate::changes::{AppliedCommit, Change, ChangedKeys, CHANGE_BUFFER};
use crate::registry::{Registry, TypeInfo};
use crate::replica::Replica;
use crate::schema::TypeDef;
use crate::{Error, Result};
use odb_wire::hash::{FastMap, FastSet};
use odb_wire::{CommitData, IdBlock, ObjectId, ObjectList, Tid, TypeId};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The replica plus what this client has subscribed to.
#[derive(Default)]
pub(crate) struct Local {
    pub replica: Replica,
    /// Types this client can read: subscribed wholly or in part, or that it created objects of.
    pub readable: FastSet<TypeId>,
    /// Per type, the tid of the newest applied commit that changed one of its objects.
    pub type_tids: FastMap<TypeId, Tid>,
    /// Counts the server databases this replica followed: raised when an in-memory server
    /// restarted and the replica and registry were replaced together. A snapshot reads types
    /// of its own generation only, since type and field ids differ between databases.
    pub generation: u64,
}

/// What kind of change [`Shared::apply_commit`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitKind {
    /// A commit the server pushed.
    Pushed,
    /// Objects dropped from the replica because a subscription was cancelled.
    Dropped,
}

/// Everything the synchronous read and write paths need.
pub(crate) struct Shared {
    pub local: RwLock<Local>,
    pub registry: RwLock<Registry>,
    /// Object ids this client may hand out.
    pub ids: parking_lot::Mutex<crate::ids::IdPool>,
    /// Every change of the replica, for `wait_for`, reactors and `Client::commits`. Sent while
    /// the replica's lock is held, so changes arrive in version order.
    pub changes: broadcast::Sender<Arc<Change>>,
    /// Whether the session is connected: views opened while it is not may read stale data.
    connected: AtomicBool,
    /// The id of the session's current connection.
    connection: AtomicU64,
}

impl Shared {
    pub fn new(tid: Tid) -> Shared {
        Shared {
            local: RwLock::new(Local {
                replica: Replica::new(tid),
                ..Local::default()
            }),
            registry: RwLock::new(Registry::default()),
            ids: parking_lot::Mutex::new(crate::ids::IdPool::default()),
            changes: broadcast::channel(CHANGE_BUFFER).0,
            connected: AtomicBool::new(false),
            connection: AtomicU64::new(0),
        }
    }

    /// Whether the session is connected now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// The id of the session's current connection.
    pub fn connection(&self) -> ObjectId {
        ObjectId(self.connection.load(Ordering::Acquire))
    }

    pub fn set_connection(&self, connection: ObjectId) {
        self.connection.store(connection.0, Ordering::Release);
    }

    /// The ids of a type whose schema was defined on this client.
    pub fn type_info(&self, def: &'static TypeDef) -> Option<Arc<TypeInfo>> {
        self.registry.read().get(def).cloned()
    }

    /// The ids of a type for a snapshot of `generation`, or `NotSubscribed` when its schema
    /// was never defined here. `DatabaseReplaced` when the database changed since the
    /// snapshot opened: the registry may then hold another database's ids.
    pub fn readable_type(&self, def: &'static TypeDef, generation: u64) -> Result<Arc<TypeInfo>> {
        let not_subscribed = || Error::NotSubscribed {
            type_name: def.qualified_name(),
            hint: format!("db.subscribe_type::<{}>()", def.name),
        };
        let info = self.type_info(def);
        // Checked after reading the registry: the registry and the generation change together
        // under the replica's lock, so an unchanged generation means `info` is of it.
        let local = self.local.read();
        if local.generation != generation {
            return Err(Error::DatabaseReplaced);
        }
        match info {
            Some(info) if local.readable.contains(&info.type_id) => Ok(info),
            _ => Err(not_subscribed()),
        }
    }

    /// The replica's current generation (see [`Local::generation`]).
    pub fn generation(&self) -> u64 {
        self.local.read().generation
    }

    /// Applies a commit, marks the types of objects it creates as readable, and publishes
    /// what changed.
    pub fn apply_commit(&self, commit: CommitData, kind: CommitKind) {
        // A field of each deleted object tells its type. Only the connection task applies
        // changes, so the replica cannot change between this read and the write below.
        let deleted_fields: Vec<odb_wire::FieldId> = if kind == CommitKind::Pushed {
            let local = self.local.read();
            commit
                .deletes
                .iter()
                .filter_map(|&id| local.replica.object_fields(id).next())
                .collect()
        } else {
            Vec::new()
        };
        // The distinct fields written (with whether some write gave a value) and indices
        // written: far fewer than the writes.
        let fields = distinct(commit.writes.iter().map(|w| (w.field, w.value.is_some())));
        let indices = match kind {
            CommitKind::Pushed => distinct(commit.index_writes.iter().map(|w| w.index)),
            _ => Vec::new(),
        };
        // The registry lock is never held together with the replica's.
        let (created, types) = {
            let registry = self.registry.read();
            let created: Vec<TypeId> = fields
                .iter()
                .filter(|(_, valued)| *valued)
                .filter_map(|(f, _)| registry.by_exists_field(*f).map(|t| t.type_id))
                .collect();
            let mut types: FastSet<TypeId> = FastSet::default();
            if kind == CommitKind::Pushed {
                types.extend(
                    fields
                        .iter()
                        .filter_map(|(f, _)| registry.type_of_field(*f)),
                );
                types.extend(indices.iter().filter_map(|&i| registry.type_of_index(i)));
                types.extend(
                    deleted_fields
                        .iter()
                        .filter_map(|&f| registry.type_of_field(f)),
                );
            }
            (created, types)
        };
        let mut local = self.local.write();
        local.readable.extend(created);
        for ty in types {
            let at = local.type_tids.entry(ty).or_default();
            *at = (*at).max(commit.tid);
        }
        self.change(&mut local, false, |replica, keys| {
            let applied =
                (keys.is_some() && kind == CommitKind::Pushed).then(|| applied_commit(&commit));
            replica.apply_commit(&commit, keys);
            applied
        });
        // Readers and woken waiters go on while the commit is freed: a bulk commit's values
        // took about a tenth of its apply to free, all of it under the write lock.
        drop(local);
        drop(commit);
    }

    /// The types of these objects, as far as `registry` knows them (by their existence field).
    fn types_of(registry: &Registry, objects: &[ObjectList]) -> Vec<TypeId> {
        objects
            .iter()
            .flatten()
            .flat_map(|o| o.fields())
            .filter_map(|(f, _)| registry.by_exists_field(f).map(|t| t.type_id))
            .collect()
    }

    /// Applies a completed subscription atomically: its data, and the types it makes readable.
    pub fn apply_snapshot(&self, objects: Vec<ObjectList>, types: &[TypeId], tid: Tid) {
        let seen = Self::types_of(&self.registry.read(), &objects);
        let mut local = self.local.write();
        local.readable.extend(types.iter().copied().chain(seen));
        self.change(&mut local, false, |replica, keys| {
            replica.apply_snapshot(objects, tid, keys);
            None
        });
    }

    /// Applies a session's restore as one change: see [`Replica::apply_resync`]. `types` (those
    /// of the session's subscriptions) and the types of the objects it holds are what the
    /// session can read afterwards.
    pub fn apply_resync(
        &self,
        objects: Vec<ObjectList>,
        types: &[TypeId],
        tid: Tid,
        visible: Option<Vec<IdBlock>>,
    ) {
        let seen = Self::types_of(&self.registry.read(), &objects);
        let mut local = self.local.write();
        if visible.is_some() {
            local.readable.extend(types.iter().copied().chain(seen));
        } else {
            local.readable = types.iter().copied().chain(seen).collect();
            local.type_tids.clear();
        }
        self.change(&mut local, false, |replica, keys| {
            replica.apply_resync(objects, tid, visible, keys);
            None
        });
    }

    /// Follows a new database (an in-memory server restarted): `registry` (its ids) replaces
    /// the registry, and `objects` at `tid` (what the session's subscriptions cover, the
    /// `types`) replace the whole replica. Readers see the old database or the new one, never
    /// a mix: both change under the replica's lock, and snapshots opened before read no more
    /// types (see [`Shared::readable_type`]).
    pub fn replace_database(
        &self,
        registry: Registry,
        objects: Vec<ObjectList>,
        types: &[TypeId],
        tid: Tid,
    ) {
        let seen = Self::types_of(&registry, &objects);
        let mut local = self.local.write();
        // The only place both locks are held: the replica's first, then the registry's.
        // Nothing takes them the other way round.
        *self.registry.write() = registry;
        local.generation += 1;
        local.readable = types.iter().copied().chain(seen).collect();
        local.type_tids.clear();
        self.change(&mut local, true, |replica, keys| {
            replica.replace(objects, tid, keys);
            None
        });
    }

    /// Moves the replica's tid forward (after a flush).
    pub fn advance(&self, tid: Tid) {
        let mut local = self.local.write();
        self.change(&mut local, false, |replica, _| {
            replica.advance(tid);
            None
        });
    }

    /// Tells every listener that the connection closed.
    pub fn publish_closed(&self) {
        let local = self.local.read();
        let _ = self.changes.send(Arc::new(Change {
            version: local.replica.version(),
            tid: local.replica.tid(),
            keys: ChangedKeys::default(),
            commit: None,
            closed: true,
            replaced: false,
        }));
        drop(local);
    }

    /// Applies one change to the replica under the write lock `local` comes from, and
    /// publishes it when anyone listens; `replaced`: the whole database was replaced. `apply`
    /// gets somewhere to record the changed keys only when anyone listens, and returns what
    /// users see of a pushed commit, if it is one. Listening is checked under the lock: a
    /// listener that starts later opens its snapshot after this change, so it cannot miss it.
    fn change(
        &self,
        local: &mut Local,
        replaced: bool,
        apply: impl FnOnce(&mut Replica, Option<&mut ChangedKeys>) -> Option<AppliedCommit>,
    ) {
        let listening = self.changes.receiver_count() > 0;
        let mut keys = ChangedKeys::default();
        let commit = apply(&mut local.replica, listening.then_some(&mut keys));
        if !listening {
            return;
        }
        // No listener left is not an error: nobody needs to know.
        let _ = self.changes.send(Arc::new(Change {
            version: local.replica.version(),
            tid: local.replica.tid(),
            keys,
            commit,
            closed: false,
            replaced,
        }));
    }
}

/// What users see of a pushed commit.
/// The distinct items of `items`, in the order first seen. A commit writes few distinct
/// fields and indices however many objects it writes: they are found by a linear search of
/// the few seen so far, and by a hash set once there are more.
fn distinct<T: Copy + Eq + std::hash::Hash>(items: impl Iterator<Item = T>) -> Vec<T> {
    const LINEAR: usize = 16;
    let mut seen = Vec::new();
    let mut set: FastSet<T> = FastSet::default();
    for item in items {
        let new = match seen.len() < LINEAR {
            true => !seen.contains(&item),
            false => {
                if set.is_empty() {
                    set.extend(seen.iter().copied());
                }
                set.insert(item)
            }
        };
        if new {
            seen.push(item);
        }
    }
    seen
}

fn applied_commit(commit: &CommitData) -> AppliedCommit {
    let mut deleted = commit.deletes.clone();
    deleted.sort_unstable();
    deleted.dedup();
    // Each object's writes come together: skipping repeats of the previous id leaves little
    // to sort.
    let mut changed: Vec<ObjectId> = Vec::new();
    let ids = commit.writes.iter().map(|w| w.object);
    for id in ids.chain(commit.index_writes.iter().map(|w| w.object)) {
        if changed.last() != Some(&id) {
            changed.push(id);
        }
    }
    // Stable sorting merges the two runs (writes, then index writes) in linear time.
    changed.sort();
    changed.dedup();
    changed.retain(|id| deleted.binary_search(id).is_err());
    AppliedCommit {
        tid: commit.tid,
        changed,
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::distinct;

    #[test]
    fn distinct_keeps_the_first_of_each_in_order_below_and_above_the_linear_search() {
        let few = [3, 1, 3, 2, 1, 3];
        assert_eq!(distinct(few.into_iter()), vec![3, 1, 2]);
        let many: Vec<u32> = (0..100).chain(0..100).chain([7, 99, 150]).collect();
        let expected: Vec<u32> = (0..100).chain([150]).collect();
        assert_eq!(distinct(many.into_iter()), expected);
    }
}
