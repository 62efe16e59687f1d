//! The embedded backend: a `redb` database file in a directory.
//!
//! Layout of the file `odb.redb` in the data directory:
//!
//! - table `meta` (`&str` -> bytes): `format` (the format version, `u32` little-endian), `tid`
//!   and `next_id` (`u64` little-endian), `registry` (the encoded [`StoredRegistry`]),
//!   `database` (the database's identity, `u128` little-endian), `commit_horizon` (`u64`
//!   little-endian: the newest tid whose commit-id record was dropped).
//! - table `objects` (`u64` object id -> the encoded [`StoredObject`]).
//! - table `commits` (a commit id as 24 bytes, its session then its number, little-endian ->
//!   the encoded [`StoredCommit`]): the commit-id records.
//!
//! Every batch is one write transaction committed with redb's default (immediate) durability,
//! so it is on disk before the commits in it are acknowledged.
//!
//! A write that fails on I/O (typically a full disk) leaves redb's handle unusable: every later
//! transaction fails with "Previous I/O error occurred". The storage therefore drops the handle
//! after any failed write and opens the file again before the next one (redb repairs the file
//! on opening it), so writes succeed again as soon as the disk does, without a restart. A failed
//! transaction commit is reported as [`StorageError::OutcomeUnknown`]: its pages may have
//! reached the disk before the error. Running out of space is the exception: redb commits by
//! rewriting its header in place, in space the file already has, so a commit that could not get
//! space never reached that point and certainly failed.

use super::{
    decode, decode_u64, encode, Batch, Loaded, Storage, StorageError, StorageFuture, StoredCommit,
    StoredObject, FORMAT_VERSION,
};
use odb_wire::{CommitId, DatabaseId, ObjectId, Tid};
use parking_lot::Mutex;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");
const COMMITS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("commits");

/// The key of a commit id in the `commits` table.
fn commit_key(id: &CommitId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&id.session.to_le_bytes());
    key[16..].copy_from_slice(&id.seq.to_le_bytes());
    key
}

/// The name of the database file inside the data directory.
pub const FILE_NAME: &str = "odb.redb";

/// Storage in a `redb` file inside a data directory. Durable: a batch is on disk before its
/// commits are acknowledged. Only one server can have a directory open at a time.
#[derive(Clone)]
pub struct FileStorage {
    handle: Arc<Mutex<Handle>>,
    dir: PathBuf,
}

/// Opens the database file; called again after a failed write.
type Opener = Arc<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The open database, or `None` after a failed write until it is opened again.
struct Handle {
    db: Option<Database>,
    open: Opener,
}

impl Handle {
    /// The open database, opening it first if a failed write dropped it.
    fn db(&mut self, dir: &Path) -> Result<&Database, StorageError> {
        if self.db.is_none() {
            let db = (self.open)().map_err(|e| {
                StorageError::Unavailable(format!(
                    "cannot reopen the database in {}: {e}",
                    dir.display()
                ))
            })?;
            tracing::info!("reopened the database in {}", dir.display());
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("the database is not open".into()))
    }
}

fn unavailable(what: &str) -> impl Fn(redb::Error) -> StorageError + '_ {
    move |e| StorageError::Unavailable(format!("{what}: {e}"))
}

impl FileStorage {
    /// Opens the database in `dir`, creating the directory and an empty database if needed.
    ///
    /// Fails if the directory cannot be created, the database is open in another process, or it
    /// holds data of another format version.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStorage, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        // Checked first: creating the directory would fail with "File exists" (or, below a
        // file, "Not a directory" about a path the user did not give).
        if dir.exists() && !dir.is_dir() {
            return Err(StorageError::Unavailable(format!(
                "the data directory {} is not a directory (it is a file); give the path of a \
                 directory, which is created if missing",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let file = dir.join(FILE_NAME);
        let opener = file.clone();
        Self::open_with(dir, Arc::new(move || Database::create(&opener)))
    }

    /// Opens the database with `open`, which is called again whenever a failed write dropped
    /// the handle.
    pub(super) fn open_with(dir: PathBuf, open: Opener) -> Result<FileStorage, StorageError> {
        let file = dir.join(FILE_NAME);
        let db = open().map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Unavailable(format!(
                "data directory {} is in use by another process",
                dir.display()
            )),
            e => StorageError::Incompatible(format!(
                "cannot open database file {}: {e}",
                file.display()
            )),
        })?;
        let storage = FileStorage {
            handle: Arc::new(Mutex::new(Handle { db: Some(db), open })),
            dir,
        };
        storage.check_format()?;
        Ok(storage)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks the format version, writing it into a new database.
    fn check_format(&self) -> Result<(), StorageError> {
        let context = format!("data directory {}", self.dir.display());
        let mut handle = self.handle.lock();
        let txn = handle
            .db(&self.dir)?
            .begin_write()
            .map_err(|e| unavailable(&context)(e.into()))?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| unavailable(&context)(e.into()))?;
            let stored = meta
                .get("format")
                .map_err(|e| unavailable(&context)(e.into()))?
                .map(|v| v.value().to_vec());
            match stored {
                None => {
                    let objects = txn
                        .open_table(OBJECTS)
                        .map_err(|e| unavailable(&context)(e.into()))?;
                    let empty = objects
                        .is_empty()
                        .map_err(|e| unavailable(&context)(e.into()))?;
                    let has_meta = meta
                        .first()
                        .map_err(|e| unavailable(&context)(e.into()))?
                        .is_some();
                    if !empty || has_meta {
                        return Err(StorageError::Incompatible(format!(
                            "{context} holds data without a format version; it was not written by this server"
                        )));
                    }
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| unavailable(&context)(e.into()))?;
                }
                Some(bytes) => {
                    let version = <[u8; 4]>::try_from(bytes.as_slice())
                        .map(u32::from_le_bytes)
                        .map_err(|_| {
                            StorageError::Incompatible(format!(
                                "{context} has an unreadable format version"
                            ))
                        })?;
                    if version != FORMAT_VERSION {
                        return Err(StorageError::Incompatible(format!(
                            "{context} holds data of format version {version}; this server reads version {FORMAT_VERSION}"
                        )));
                    }
                }
            }
        }
        txn.commit().map_err(|e| unavailable(&context)(e.into()))
    }

    fn load_blocking(&self) -> Result<Loaded, StorageError> {
        let err = unavailable("cannot read the database");
        let mut handle = self.handle.lock();
        let txn = handle
            .db(&self.dir)?
            .begin_read()
            .map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StorageError> {
            Ok(meta
                .get(key)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().to_vec()))
        };
        let tid = get("tid")?
            .map(|b| decode_u64(&b, "tid"))
            .transpose()?
            .unwrap_or(0);
        let next_id = get("next_id")?
            .map(|b| decode_u64(&b, "next_id"))
            .transpose()?
            .unwrap_or(0);
        let registry = get("registry")?
            .map(|b| super::decode_registry(&b))
            .transpose()?
            .unwrap_or_default();
        let database = get("database")?
            .map(|b| {
                <[u8; 16]>::try_from(b.as_slice())
                    .map(|a| DatabaseId(u128::from_le_bytes(a)))
                    .map_err(|_| {
                        StorageError::Corrupt(format!("database: {} bytes, not 16", b.len()))
                    })
            })
            .transpose()?;
        let commit_horizon = get("commit_horizon")?
            .map(|b| decode_u64(&b, "commit_horizon"))
            .transpose()?
            .unwrap_or(0);
        let mut commits = Vec::new();
        // A database written before commit ids were recorded has no such table.
        match txn.open_table(COMMITS) {
            Ok(table) => {
                for entry in table.iter().map_err(|e| err(e.into()))? {
                    let (_, value) = entry.map_err(|e| err(e.into()))?;
                    commits.push(decode::<StoredCommit>(value.value(), "commit record")?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
        let table = txn.open_table(OBJECTS).map_err(|e| err(e.into()))?;
        let mut objects = Vec::new();
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (id, value) = entry.map_err(|e| err(e.into()))?;
            let id = id.value();
            let object: StoredObject = decode(value.value(), &format!("object {id}"))?;
            objects.push((ObjectId(id), object));
        }
        Ok(Loaded {
            tid: Tid(tid),
            next_id,
            registry,
            objects,
            database,
            commits,
            commit_horizon: Tid(commit_horizon),
        })
    }

    /// Stores a batch; after a failure, drops the handle so that the next call opens the file
    /// again (a failed write leaves redb's handle unusable).
    fn persist_blocking(&self, batch: &Batch) -> Result<(), StorageError> {
        let mut encoded = Vec::with_capacity(batch.objects.len());
        for (id, object) in &batch.objects {
            encoded.push((id.0, object.as_ref().map(encode).transpose()?));
        }
        let registry = batch.registry.as_ref().map(encode).transpose()?;
        let mut records = Vec::with_capacity(batch.commits.added.len());
        for record in &batch.commits.added {
            records.push((commit_key(&record.id), encode(record)?));
        }
        let mut handle = self.handle.lock();
        let result = Self::write(handle.db(&self.dir)?, batch, registry, &encoded, &records);
        if result.is_err() {
            handle.db = None;
        }
        result
    }

    fn write(
        db: &Database,
        batch: &Batch,
        registry: Option<Vec<u8>>,
        encoded: &[(u64, Option<Vec<u8>>)],
        records: &[([u8; 24], Vec<u8>)],
    ) -> Result<(), StorageError> {
        let err = unavailable("cannot write the database");
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("tid", batch.tid.0.to_le_bytes().as_slice())
                .map_err(|e| err(e.into()))?;
            meta.insert("next_id", batch.next_id.to_le_bytes().as_slice())
                .map_err(|e| err(e.into()))?;
            if let Some(registry) = &registry {
                meta.insert("registry", registry.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            if let Some(database) = batch.database {
                meta.insert("database", database.0.to_le_bytes().as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            meta.insert(
                "commit_horizon",
                batch.commits.horizon.0.to_le_bytes().as_slice(),
            )
            .map_err(|e| err(e.into()))?;
            let mut commits = txn.open_table(COMMITS).map_err(|e| err(e.into()))?;
            for (key, value) in records {
                commits
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            for id in &batch.commits.pruned {
                commits
                    .remove(commit_key(id).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            let mut objects = txn.open_table(OBJECTS).map_err(|e| err(e.into()))?;
            for (id, value) in encoded {
                match value {
                    Some(value) => {
                        objects
                            .insert(*id, value.as_slice())
                            .map_err(|e| err(e.into()))?;
                    }
                    None => {
                        objects.remove(*id).map_err(|e| err(e.into()))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| {
            let message = format!("cannot commit to the database: {e}");
            if is_out_of_space(&e) {
                StorageError::Unavailable(message)
            } else {
                StorageError::OutcomeUnknown(message)
            }
        })
    }
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Unavailable(format!("database task failed: {e}")))?
}

impl Storage for FileStorage {
    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }

    fn load(&mut self) -> StorageFuture<'_, Loaded> {
        let this = self.clone();
        Box::pin(blocking(move || this.load_blocking()))
    }

    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()> {
        let this = self.clone();
        Box::pin(blocking(move || this.persist_blocking(&batch)))
    }
}

/// Whether a failed commit failed for lack of space (disk full, or quota exceeded), before its
/// commit point.
fn is_out_of_space(error: &redb::CommitError) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    let redb::CommitError::Storage(redb::StorageError::Io(io)) = error else {
        return false;
    };
    io.kind() == std::io::ErrorKind::StorageFull
        || matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT))
}
