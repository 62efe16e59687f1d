//! Sessions that survive: the database identity, commit-id records, commit queries and resume.

use super::*;
use crate::storage::MemoryStorage;

/// Opens a sequencer as a server start would, on `storage` if given.
fn open_on(config: ServerConfig, storage: Option<&MemoryStorage>) -> Sequencer {
    let storage = storage.map(|s| Box::new(s.clone()) as Box<dyn crate::storage::Storage>);
    futures::executor::block_on(durable::open(
        Arc::new(config),
        Arc::new(Status::default()),
        storage,
    ))
    .expect("opens")
}

/// Registers a connection and returns the database identity its `Welcome` carries.
fn welcome_database(seq: &mut Sequencer) -> DatabaseId {
    let closed = CancellationToken::new();
    let (outbound, mut queue) = outbound::channel(usize::MAX, closed, Arc::default());
    let (reply, _id) = oneshot::channel();
    seq.handle(Request::Register {
        outbound,
        client_name: "test".into(),
        reply,
    });
    futures::executor::block_on(seq.settle()).expect("stored");
    match queue.try_recv().map(|f| odb_wire::decode(&f)) {
        Some(Ok(ServerMessage::Welcome { database, .. })) => database,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

#[test]
fn the_database_identity_is_kept_by_storage_and_new_for_each_in_memory_start() {
    let config = || ServerConfig::new("t");
    let mut a = open_on(config(), None);
    let mut b = open_on(config(), None);
    let (a_id, b_id) = (welcome_database(&mut a), welcome_database(&mut b));
    assert_ne!(a_id, b_id, "each in-memory start is a new database");
    assert_eq!(welcome_database(&mut a), a_id, "every Welcome carries it");

    let storage = MemoryStorage::new();
    let mut first = open_on(config(), Some(&storage));
    let stored = welcome_database(&mut first);
    drop(first);
    let mut second = open_on(config(), Some(&storage));
    assert_eq!(
        welcome_database(&mut second),
        stored,
        "a restart on the same storage keeps the identity"
    );
    let mut other = open_on(config(), Some(&MemoryStorage::new()));
    assert_ne!(welcome_database(&mut other), stored);
}
