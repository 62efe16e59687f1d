//! Tests of the storage helpers and the embedded backend.

use super::*;
use odb_wire::{CommitId, DatabaseId, FieldId, IndexId, ObjectId, Tid, TypeId};
#[cfg(feature = "redb")]
use std::sync::Arc;

fn object(value: &str) -> StoredObject {
    StoredObject {
        ty: TypeId(1),
        fields: vec![
            (FieldId(1), Bytes::new()),
            (FieldId(2), Bytes::copy_from_slice(value.as_bytes())),
        ],
        indices: vec![(IndexId(1), Bytes::new())],
    }
}

fn registry() -> StoredRegistry {
    StoredRegistry {
        schemas: vec![StoredSchema {
            name: "s".into(),
            types: vec![StoredType {
                name: "T".into(),
                id: TypeId(1),
                exists_field: FieldId(1),
                all_index: IndexId(1),
                fields: vec![("a".into(), FieldId(2))],
                indices: Vec::new(),
            }],
        }],
        last_type: 1,
        last_field: 2,
        last_index: 1,
        descriptions: Vec::new(),
    }
}

/// The record of commit `seq` of one session, applied at `tid`.
fn record(seq: u64, tid: u64) -> StoredCommit {
    StoredCommit {
        id: CommitId {
            session: u128::MAX - 5,
            seq,
        },
        tid: Tid(tid),
        at_ms: 1_700_000_000_000 + seq,
    }
}

async fn round_trip(storage: &mut dyn Storage) -> Loaded {
    storage
        .persist(Batch {
            tid: Tid(3),
            next_id: 100,
            registry: Some(registry()),
            objects: vec![
                (ObjectId(7), Some(object("x"))),
                (ObjectId(8), Some(object("y"))),
            ],
            database: Some(DatabaseId(0x1234_5678_9abc_def0_0fed_cba9_8765_4321)),
            commits: CommitChanges {
                added: vec![record(1, 2), record(2, 3)],
                pruned: Vec::new(),
                horizon: Tid(0),
            },
        })
        .await
        .unwrap();
    storage
        .persist(Batch {
            tid: Tid(4),
            next_id: 200,
            registry: None,
            objects: vec![(ObjectId(8), None), (ObjectId(9), Some(object("z")))],
            database: None,
            commits: CommitChanges {
                added: vec![record(3, 4)],
                pruned: vec![record(1, 2).id],
                horizon: Tid(2),
            },
        })
        .await
        .unwrap();
    storage.load().await.unwrap()
}

fn check(loaded: &Loaded) {
    assert_eq!(loaded.tid, Tid(4));
    assert_eq!(loaded.next_id, 200);
    assert_eq!(loaded.registry, registry());
    assert_eq!(
        loaded.database,
        Some(DatabaseId(0x1234_5678_9abc_def0_0fed_cba9_8765_4321)),
        "the identity stays once stored"
    );
    let mut commits = loaded.commits.clone();
    commits.sort_by_key(|r| r.tid);
    assert_eq!(commits, vec![record(2, 3), record(3, 4)]);
    assert_eq!(loaded.commit_horizon, Tid(2));
    let mut objects = loaded.objects.clone();
    objects.sort_by_key(|(id, _)| *id);
    assert_eq!(
        objects,
        vec![(ObjectId(7), object("x")), (ObjectId(9), object("z"))]
    );
}

#[tokio::test]
async fn memory_round_trip_and_failure() {
    let mut storage = MemoryStorage::new();
    check(&round_trip(&mut storage).await);
    storage.set_failing(true);
    assert!(storage.persist(Batch::default()).await.is_err());
    storage.set_failing(false);
    let mut clone = storage.clone();
    check(&clone.load().await.unwrap());
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn file_round_trip_survives_reopen() {
    let dir = std::env::temp_dir().join(format!("odb-storage-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let mut storage = FileStorage::open(&dir).unwrap();
        check(&round_trip(&mut storage).await);
        let err = FileStorage::open(&dir).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
    let mut reopened = FileStorage::open(&dir).unwrap();
    check(&reopened.load().await.unwrap());
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "redb")]
#[test]
fn file_refuses_another_format_version() {
    let dir = std::env::temp_dir().join(format!("odb-storage-format-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    {
        let db = redb::Database::create(dir.join(file::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("format", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = FileStorage::open(&dir).unwrap_err();
    assert!(err.to_string().contains("format version 99"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_values_are_errors() {
    assert!(decode::<StoredObject>(&[0xff, 0xff, 0xff], "object").is_err());
    assert!(decode_u64(&[1, 2, 3], "tid").is_err());
}

#[cfg(feature = "redb")]
#[test]
fn a_file_is_not_a_data_directory() {
    let file = std::env::temp_dir().join(format!("odb-storage-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").unwrap();
    let err = FileStorage::open(&file).unwrap_err().to_string();
    assert!(err.contains("is not a directory"), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_registry_stored_before_descriptions_still_loads() {
    #[derive(serde::Serialize)]
    struct Old {
        schemas: Vec<StoredSchema>,
        last_type: u32,
        last_field: u32,
        last_index: u32,
    }
    let old = Old {
        schemas: Vec::new(),
        last_type: 3,
        last_field: 9,
        last_index: 4,
    };
    let loaded = decode_registry(&encode(&old).unwrap()).unwrap();
    assert_eq!(loaded.last_field, 9);
    assert!(loaded.descriptions.is_empty());

    let new = StoredRegistry {
        last_field: 1,
        descriptions: vec![StoredDescription {
            field: odb_wire::FieldId(1),
            desc: odb_wire::TypeDesc::String,
        }],
        ..StoredRegistry::default()
    };
    assert_eq!(decode_registry(&encode(&new).unwrap()).unwrap(), new);
}

/// A file backend whose writes fail like a full disk while `full` is set.
#[cfg(feature = "redb")]
#[derive(Debug)]
struct FillableDisk {
    file: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(feature = "redb")]
impl FillableDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.full.load(std::sync::atomic::Ordering::Acquire) {
            // ENOSPC: "No space left on device".
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

#[cfg(feature = "redb")]
impl redb::StorageBackend for FillableDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.write(offset, data)
    }
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn the_file_store_heals_after_the_disk_was_full() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir().join(format!("odb-storage-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let path = dir.join(file::FILE_NAME);
    let disk = full.clone();
    let open: Arc<dyn Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync> =
        Arc::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let backend = FillableDisk {
                file: redb::backends::FileBackend::new(file)?,
                full: disk.clone(),
            };
            redb::Builder::new().create_with_backend(backend)
        });
    let mut storage = FileStorage::open_with(dir.clone(), open).unwrap();
    let batch = |tid: u64, value: &str| Batch {
        tid: Tid(tid),
        next_id: 100 + tid,
        registry: (tid == 1).then(registry),
        objects: vec![(ObjectId(7), Some(object(value)))],
        ..Batch::default()
    };
    storage.persist(batch(1, "a")).await.unwrap();

    full.store(true, Ordering::Release);
    for tid in 2..5 {
        let err = storage.persist(batch(tid, "lost")).await.unwrap_err();
        // A full disk fails a commit before its commit point: a certain failure, so that
        // commits fail fast rather than waiting to learn an outcome that is already known.
        assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    }

    // Space is back: the next write succeeds without reopening anything by hand.
    full.store(false, Ordering::Release);
    storage.persist(batch(5, "b")).await.unwrap();
    storage.persist(batch(6, "c")).await.unwrap();
    let loaded = storage.load().await.unwrap();
    assert_eq!(loaded.tid, Tid(6));
    assert_eq!(loaded.next_id, 106);
    assert_eq!(loaded.objects, vec![(ObjectId(7), object("c"))]);
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
