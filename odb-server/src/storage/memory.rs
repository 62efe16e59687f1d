//! The in-process backend: keeps the stored image in memory, shared by its clones.

use super::{
    Batch, Loaded, Storage, StorageError, StorageFuture, StoredCommit, StoredObject, StoredRegistry,
};
use odb_wire::{CommitId, DatabaseId, ObjectId, Tid};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Image {
    tid: Tid,
    next_id: u64,
    registry: StoredRegistry,
    objects: BTreeMap<ObjectId, StoredObject>,
    database: Option<DatabaseId>,
    commits: BTreeMap<CommitId, StoredCommit>,
    commit_horizon: Tid,
}

#[derive(Default)]
struct Shared {
    image: Mutex<Image>,
    failing: AtomicBool,
    batches: AtomicU64,
}

/// Storage in the memory of the process. Clones share one image, so a server started on a clone
/// after another one stopped continues where that one stopped; nothing survives the process.
///
/// [`MemoryStorage::set_failing`] makes every `persist` fail, to exercise the server's handling
/// of an unavailable storage.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `failing` is set, every `persist` fails with [`StorageError::Unavailable`].
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::Release);
    }

    /// How many batches were stored so far.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Acquire)
    }

    /// The stored tid.
    pub fn tid(&self) -> Tid {
        self.shared.image.lock().map(|i| i.tid).unwrap_or_default()
    }
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Unavailable("the in-memory image is poisoned by a panic".into())
}

impl Storage for MemoryStorage {
    fn describe(&self) -> String {
        "in-memory".into()
    }

    fn load(&mut self) -> StorageFuture<'_, Loaded> {
        let loaded = self
            .shared
            .image
            .lock()
            .map_err(poisoned)
            .map(|image| Loaded {
                tid: image.tid,
                next_id: image.next_id,
                registry: image.registry.clone(),
                objects: image
                    .objects
                    .iter()
                    .map(|(id, o)| (*id, o.clone()))
                    .collect(),
                database: image.database,
                commits: image.commits.values().copied().collect(),
                commit_horizon: image.commit_horizon,
            });
        Box::pin(std::future::ready(loaded))
    }

    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()> {
        let result = if self.shared.failing.load(Ordering::Acquire) {
            Err(StorageError::Unavailable(
                "the in-memory storage is set to fail".into(),
            ))
        } else {
            self.shared.image.lock().map_err(poisoned).map(|mut image| {
                image.tid = batch.tid;
                image.next_id = batch.next_id;
                if let Some(database) = batch.database {
                    image.database = Some(database);
                }
                if let Some(registry) = batch.registry {
                    image.registry = registry;
                }
                for record in batch.commits.added {
                    image.commits.insert(record.id, record);
                }
                for id in batch.commits.pruned {
                    image.commits.remove(&id);
                }
                image.commit_horizon = batch.commits.horizon;
                for (id, object) in batch.objects {
                    match object {
                        Some(object) => image.objects.insert(id, object),
                        None => image.objects.remove(&id),
                    };
                }
                self.shared.batches.fetch_add(1, Ordering::AcqRel);
            })
        };
        Box::pin(std::future::ready(result))
    }
}
