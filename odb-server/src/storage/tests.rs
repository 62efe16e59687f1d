//! Tests of the storage helpers and the embedded backend.

use super::*;
use odb_wire::{FieldId, IndexId, ObjectId, Tid, TypeId};

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
        })
        .await
        .unwrap();
    storage
        .persist(Batch {
            tid: Tid(4),
            next_id: 200,
            registry: None,
            objects: vec![(ObjectId(8), None), (ObjectId(9), Some(object("z")))],
        })
        .await
        .unwrap();
    storage.load().await.unwrap()
}

fn check(loaded: &Loaded) {
    assert_eq!(loaded.tid, Tid(4));
    assert_eq!(loaded.next_id, 200);
    assert_eq!(loaded.registry, registry());
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
