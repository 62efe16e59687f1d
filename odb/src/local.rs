//! State shared between the client's handle, its views and its connection task.

use crate::registry::{Registry, TypeInfo};
use crate::replica::Replica;
use crate::schema::TypeDef;
use crate::{Error, Result};
use odb_wire::{CommitData, ObjectData, Tid, TypeId};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;

/// The replica plus what this client has subscribed to.
#[derive(Default)]
pub(crate) struct Local {
    pub replica: Replica,
    /// Types this client can read: subscribed wholly or in part, or that it created objects of.
    pub readable: HashSet<TypeId>,
}

/// Everything the synchronous read and write paths need.
pub(crate) struct Shared {
    pub local: RwLock<Local>,
    pub registry: RwLock<Registry>,
    /// Object ids this client may hand out.
    pub ids: parking_lot::Mutex<crate::ids::IdPool>,
    /// Notified with the replica's tid whenever it moves.
    pub tid_tx: tokio::sync::watch::Sender<Tid>,
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
            tid_tx: tokio::sync::watch::channel(tid).0,
        }
    }

    /// The ids of a type whose schema was defined on this client.
    pub fn type_info(&self, def: &'static TypeDef) -> Option<Arc<TypeInfo>> {
        self.registry.read().get(def).cloned()
    }

    /// The ids of a type, or `NotSubscribed` when its schema was never defined here.
    pub fn readable_type(&self, def: &'static TypeDef) -> Result<Arc<TypeInfo>> {
        let not_subscribed = || Error::NotSubscribed {
            type_name: def.qualified_name(),
            hint: format!("db.subscribe_type::<{}>()", def.name),
        };
        let info = self.type_info(def).ok_or_else(not_subscribed)?;
        if self.local.read().readable.contains(&info.type_id) {
            Ok(info)
        } else {
            Err(not_subscribed())
        }
    }

    /// Applies a pushed commit and marks the types of objects it creates as readable.
    pub fn apply_commit(&self, commit: &CommitData) {
        let created: Vec<TypeId> = {
            let registry = self.registry.read();
            commit
                .writes
                .iter()
                .filter(|w| w.value.is_some())
                .filter_map(|w| registry.by_exists_field(w.field).map(|t| t.type_id))
                .collect()
        };
        let tid = {
            let mut local = self.local.write();
            local.readable.extend(created);
            local.replica.apply_commit(commit);
            local.replica.tid()
        };
        self.tid_tx.send_replace(tid);
    }

    /// Applies a completed subscription atomically.
    pub fn apply_snapshot(&self, objects: Vec<ObjectData>, types: &[TypeId], tid: Tid) {
        let seen: Vec<TypeId> = {
            let registry = self.registry.read();
            objects
                .iter()
                .flat_map(|o| o.fields.iter())
                .filter_map(|(f, _)| registry.by_exists_field(*f).map(|t| t.type_id))
                .collect()
        };
        let tid = {
            let mut local = self.local.write();
            local.readable.extend(types.iter().copied().chain(seen));
            local.replica.apply_snapshot(objects, tid);
            local.replica.tid()
        };
        self.tid_tx.send_replace(tid);
    }

    /// Moves the replica's tid forward (after a flush).
    pub fn advance(&self, tid: Tid) {
        let tid = {
            let mut local = self.local.write();
            local.replica.advance(tid);
            local.replica.tid()
        };
        self.tid_tx.send_replace(tid);
    }
}
