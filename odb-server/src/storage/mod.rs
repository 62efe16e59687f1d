//! Persistence behind one trait, [`Storage`].
//!
//! At start the server calls [`Storage::load`] once and gets everything back: the objects with
//! their fields and index values, the schema registry (type, field and index ids by name), the
//! next object id to hand out, the tid of the last commit and the database's identity (random,
//! chosen when the database is created, and sent to every client in its `Welcome`, so that
//! a client can tell a restarted server on the same data from a different database). While it runs, the sequencer calls
//! [`Storage::persist`] once per batch of requests (group commit) with everything the batch
//! changed, and only answers the batch's requests once that call has succeeded: an acknowledged
//! commit is stored.
//!
//! Three backends ship with the server:
//!
//! - [`MemoryStorage`]: keeps the image in the process (nothing survives a restart of the
//!   process); for tests and embedding.
//! - `FileStorage` (feature `redb`, on by default): an embedded `redb` database in a directory;
//!   one durable write transaction per batch.
//! - `RedisStorage` (feature `redis`, on by default): a Redis database; one `MULTI`/`EXEC`
//!   transaction per batch.
//!
//! Index member sets and conflict stamps are not stored: member sets are rebuilt from the objects'
//! index values at load, and the conflict history starts empty after a restart (the server then
//! refuses base tids older than the loaded tid, so nothing is validated against a history it no
//! longer has).

#[cfg(feature = "redis")]
mod endpoint;
#[cfg(feature = "redb")]
mod file;
#[cfg(feature = "redis")]
mod lease;
mod memory;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use endpoint::RedisTarget;
#[cfg(feature = "redb")]
pub use file::FileStorage;
#[cfg(feature = "redis")]
pub use lease::{Fence, HeldLease, Lease};
pub use memory::MemoryStorage;
#[cfg(feature = "redis")]
pub use redis::{RedisStorage, DEFAULT_REDIS_PREFIX};

use bytes::Bytes;
use odb_wire::{CommitId, DatabaseId, FieldId, IndexId, ObjectId, Tid, TypeDesc, TypeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// The version of the stored format written by this server. A backend refuses to open data
/// written in another version.
pub const FORMAT_VERSION: u32 = 1;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage cannot be reached or refused the operation, and nothing of it was stored;
    /// trying again later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write failed at a point where it may have been stored all the same (the connection
    /// broke while the storage was applying it, or the final sync failed). Writing the same
    /// batch again is safe: it stores the same values.
    #[error("storage unavailable, the write may or may not have been stored: {0}")]
    OutcomeUnknown(String),
    /// The write was refused because this server no longer holds the leader's lease (another
    /// server leads now); nothing of it was stored.
    #[error("{0}")]
    NotLeader(String),
    /// The storage holds data this server cannot read (another format version, or something
    /// that is not an ODB database).
    #[error("{0}")]
    Incompatible(String),
    /// The storage holds ODB data that does not decode.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// The error's message without the kind in front, for start-up errors that give their own
    /// context.
    pub fn detail(&self) -> String {
        match self {
            StorageError::Unavailable(m)
            | StorageError::OutcomeUnknown(m)
            | StorageError::NotLeader(m)
            | StorageError::Incompatible(m) => m.clone(),
            StorageError::Corrupt(_) => self.to_string(),
        }
    }
}

/// One stored object: its type, field values and index values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Its type.
    pub ty: TypeId,
    /// Field values, sorted by field id.
    pub fields: Vec<(FieldId, Bytes)>,
    /// Index values, sorted by index id.
    pub indices: Vec<(IndexId, Bytes)>,
}

/// The schema registry: every id assigned so far, by name, and the id counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRegistry {
    /// Every schema.
    pub schemas: Vec<StoredSchema>,
    /// The last type id assigned.
    pub last_type: u32,
    /// The last field id assigned.
    pub last_field: u32,
    /// The last index id assigned.
    pub last_index: u32,
    /// The latest description of each described field. Last, so that a registry stored
    /// before descriptions existed is recognised by its end (see `decode_registry`).
    pub descriptions: Vec<StoredDescription>,
}

/// The description of one field's values, as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDescription {
    /// The field.
    pub field: FieldId,
    /// Its values' shape.
    pub desc: TypeDesc,
}

/// The registry as stored before field descriptions existed.
#[cfg(any(feature = "redb", feature = "redis", test))]
#[derive(Deserialize)]
struct StoredRegistryWithoutDescriptions {
    schemas: Vec<StoredSchema>,
    last_type: u32,
    last_field: u32,
    last_index: u32,
}

/// Decodes a stored registry, with or without field descriptions (a registry stored by an
/// older server has none and ends after `last_index`).
#[cfg(any(feature = "redb", feature = "redis", test))]
pub(crate) fn decode_registry(bytes: &[u8]) -> Result<StoredRegistry, StorageError> {
    match decode::<StoredRegistry>(bytes, "registry") {
        Ok(registry) => Ok(registry),
        Err(error) => match decode::<StoredRegistryWithoutDescriptions>(bytes, "registry") {
            Ok(old) => Ok(StoredRegistry {
                schemas: old.schemas,
                last_type: old.last_type,
                last_field: old.last_field,
                last_index: old.last_index,
                descriptions: Vec::new(),
            }),
            Err(_) => Err(error),
        },
    }
}

/// One schema of a [`StoredRegistry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// Its name.
    pub name: String,
    /// Its types.
    pub types: Vec<StoredType>,
}

/// One type of a [`StoredSchema`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredType {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: TypeId,
    /// Its implicit existence field.
    pub exists_field: FieldId,
    /// Its implicit index of all objects.
    pub all_index: IndexId,
    /// Its fields by name.
    pub fields: Vec<(String, FieldId)>,
    /// Its indices.
    pub indices: Vec<StoredIndex>,
}

/// One index of a [`StoredType`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIndex {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: IndexId,
    /// The names of the fields it covers.
    pub fields: Vec<String>,
}

/// Everything a backend holds, as returned by [`Storage::load`].
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The tid of the last stored commit (`Tid(0)` for an empty database).
    pub tid: Tid,
    /// The next object id to hand out (0 or 1 for an empty database).
    pub next_id: u64,
    /// The schema registry.
    pub registry: StoredRegistry,
    /// Every live object.
    pub objects: Vec<(ObjectId, StoredObject)>,
    /// The identity of the database; `None` for an empty storage, or data written before
    /// identities were stored (the server then picks one and stores it with its first batch).
    pub database: Option<DatabaseId>,
    /// The recorded ids of applied commits, in any order.
    pub commits: Vec<StoredCommit>,
    /// The newest tid whose commit-id record was dropped (`Tid(0)` if none was).
    pub commit_horizon: Tid,
}

/// The record of one applied commit's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCommit {
    /// The commit's id.
    pub id: CommitId,
    /// The tid at which it was applied.
    pub tid: Tid,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How one batch changes the commit-id records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitChanges {
    /// New records.
    pub added: Vec<StoredCommit>,
    /// Ids whose records are dropped.
    pub pruned: Vec<CommitId>,
    /// The newest tid whose record was dropped, after the batch.
    pub horizon: Tid,
}

/// What one batch of requests changed, to be stored atomically by [`Storage::persist`].
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The tid of the last commit after the batch.
    pub tid: Tid,
    /// The next object id to hand out after the batch.
    pub next_id: u64,
    /// The whole registry, if the batch changed it.
    pub registry: Option<StoredRegistry>,
    /// Every object the batch changed, with its new contents (`None`: deleted).
    pub objects: Vec<(ObjectId, Option<StoredObject>)>,
    /// The identity of the database, if it is not stored yet (the first batch of a new
    /// database); it never changes once stored.
    pub database: Option<DatabaseId>,
    /// The commit-id records the batch adds and drops, stored in the same atomic write as the
    /// objects.
    pub commits: CommitChanges,
}

/// The future a [`Storage`] method returns.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// A place where the database is kept between runs.
///
/// [`Storage::persist`] must be atomic: after a crash at any moment, [`Storage::load`] returns
/// the state after some prefix of the batches whose `persist` was called, including every batch
/// whose `persist` returned `Ok`. A call that fails should leave nothing of its batch behind;
/// when the backend cannot know (a timeout while the storage was applying it), the batch may
/// still land, entirely or not at all.
pub trait Storage: Send + 'static {
    /// A short description for logs, such as `file /srv/odb`.
    fn describe(&self) -> String;

    /// Reads everything the storage holds. Called once, before the server accepts connections.
    fn load(&mut self) -> StorageFuture<'_, Loaded>;

    /// Stores a batch atomically and durably (as far as the backend is durable).
    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()>;
}

// The encoding of stored values, shared by the persistent backends (unused when both are left
// out).
#[cfg_attr(not(any(feature = "redb", feature = "redis")), allow(dead_code))]
type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 1 << 30 }>,
>;

#[cfg_attr(not(any(feature = "redb", feature = "redis")), allow(dead_code))]
const CONFIG: Config = bincode::config::standard().with_limit::<{ 1 << 30 }>();

#[cfg_attr(not(any(feature = "redb", feature = "redis")), allow(dead_code))]
/// Encodes a stored value (an object or the registry).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(value, CONFIG)
        .map_err(|e| StorageError::Unavailable(format!("cannot encode {e}")))
}

#[cfg_attr(not(any(feature = "redb", feature = "redis")), allow(dead_code))]
/// Decodes a stored value; `what` names it in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    match bincode::serde::decode_from_slice(bytes, CONFIG) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok((_, read)) => Err(StorageError::Corrupt(format!(
            "{what}: {} bytes left over",
            bytes.len() - read
        ))),
        Err(e) => Err(StorageError::Corrupt(format!("{what}: {e}"))),
    }
}

#[cfg_attr(not(any(feature = "redb", feature = "redis")), allow(dead_code))]
/// Reads a little-endian `u64` written by [`u64::to_le_bytes`].
pub(crate) fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what}: {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_le_bytes(array))
}

#[cfg(test)]
mod tests;
