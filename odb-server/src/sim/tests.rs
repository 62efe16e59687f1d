//! Tests of the simulation harness, and through it of sessions on a durable server: commit-id
//! records across restarts, a crash between applying and storing, a storage failure, and a
//! connection cut in the middle of a snapshot.

use super::*;
use odb_wire::{
    CommitId, CommitOutcome, CommitRequest, CommitStatus, FieldWrite, IdBlock, RequestId,
    SchemaDef, SubscriptionTarget, TypeDef, TypeIds, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

const TOKEN: &str = "sim-token";

fn hello(token: &str) -> ClientMessage {
    ClientMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.into(),
        client_name: "sim".into(),
        oldest_protocol_version: OLDEST_PROTOCOL_VERSION,
    }
}

/// A welcomed connection with its id block, the database identity and the test type.
struct Session {
    conn: SimConn,
    block: IdBlock,
    database: DatabaseId,
    t: TypeIds,
}

fn open_session(server: &mut SimServer) -> Session {
    let conn = server.connect();
    server.send(&conn, &hello(TOKEN));
    let Some(ServerMessage::Welcome {
        ids: block,
        database,
        ..
    }) = server.recv(&conn)
    else {
        panic!("expected a Welcome");
    };
    server.send(
        &conn,
        &ClientMessage::DefineSchema {
            request_id: RequestId(1),
            schema: SchemaDef {
                name: "s".into(),
                types: vec![TypeDef {
                    name: "T".into(),
                    fields: vec!["a".into()],
                    indices: Vec::new(),
                }],
            },
        },
    );
    let t = loop {
        match server.recv(&conn) {
            Some(ServerMessage::SchemaDefined { schema, .. }) => break schema.types[0].clone(),
            Some(_) => continue,
            None => panic!("the schema was not defined"),
        }
    };
    Session {
        conn,
        block,
        database,
        t,
    }
}

fn create(server: &SimServer, s: &Session, o: u64, seq: Option<u64>) -> ClientMessage {
    ClientMessage::Commit {
        request_id: RequestId(100 + o),
        commit: CommitRequest {
            base_tid: server.current_tid(),
            writes: vec![
                FieldWrite {
                    object: ObjectId(o),
                    field: s.t.exists_field,
                    value: Some(Bytes::new()),
                },
                FieldWrite {
                    object: ObjectId(o),
                    field: s.t.fields[0],
                    value: Some(Bytes::from(vec![7; 16])),
                },
            ],
            commit_id: seq.map(|seq| CommitId { session: 42, seq }),
            ..CommitRequest::default()
        },
    }
}

/// The next commit result on `conn`, skipping pushes.
fn result(server: &mut SimServer, conn: &SimConn) -> Option<CommitOutcome> {
    loop {
        match server.recv(conn)? {
            ServerMessage::CommitResult { outcome, .. } => return Some(outcome),
            _ => continue,
        }
    }
}

fn query(server: &mut SimServer, conn: &SimConn, seq: u64, base: Tid) -> CommitStatus {
    server.send(
        conn,
        &ClientMessage::QueryCommits {
            request_id: RequestId(9),
            commits: vec![(CommitId { session: 42, seq }, base)],
        },
    );
    loop {
        match server.recv(conn) {
            Some(ServerMessage::CommitStatuses { statuses, .. }) => return statuses[0],
            Some(_) => continue,
            None => panic!("the query was not answered"),
        }
    }
}

#[test]
fn hellos_are_checked_as_on_a_real_connection() {
    let mut server = SimServer::new(ServerConfig::new(TOKEN), None).unwrap();
    let conn = server.connect();
    server.send(&conn, &hello("wrong"));
    assert_eq!(
        server.recv(&conn),
        Some(ServerMessage::Rejected {
            reason: Refusal::Unauthorized
        })
    );
    assert!(server.recv(&conn).is_none() && !server.is_open(&conn));
    let old = server.connect();
    let mut too_new = hello(TOKEN);
    if let ClientMessage::Hello {
        oldest_protocol_version,
        protocol_version,
        ..
    } = &mut too_new
    {
        *oldest_protocol_version = PROTOCOL_VERSION + 1;
        *protocol_version = PROTOCOL_VERSION + 1;
    }
    server.send(&old, &too_new);
    assert!(matches!(
        server.recv(&old),
        Some(ServerMessage::Rejected {
            reason: Refusal::ProtocolVersion { .. }
        })
    ));
    let s = open_session(&mut server);
    server.send(&s.conn, &hello(TOKEN));
    assert!(matches!(
        server.recv(&s.conn),
        Some(ServerMessage::Closing { .. })
    ));
    assert!(!server.is_open(&s.conn));
}

#[test]
fn commit_records_and_the_identity_survive_a_restart_on_storage() {
    let storage = MemoryStorage::new();
    let mut server = SimServer::new(ServerConfig::new(TOKEN), Some(storage.clone())).unwrap();
    let s = open_session(&mut server);
    let base = server.current_tid();
    let commit = create(&server, &s, s.block.start, Some(1));
    server.send(&s.conn, &commit);
    let Some(CommitOutcome::CommittedAsSent { tid }) = result(&mut server, &s.conn) else {
        panic!("commits, answered as sent: the session created the object");
    };
    assert_eq!(
        storage.tid(),
        server.current_tid(),
        "stored before answered"
    );

    server.restart().unwrap();
    assert!(server.recv(&s.conn).is_none(), "old connections are gone");
    let again = open_session(&mut server);
    assert_eq!(again.database, s.database);
    assert_eq!(
        query(&mut server, &again.conn, 1, base),
        CommitStatus::Applied { tid }
    );
    server.send(&again.conn, &commit);
    assert_eq!(
        result(&mut server, &again.conn),
        Some(CommitOutcome::AlreadyApplied { tid })
    );

    // Without storage a restart is a new, empty database.
    let mut memory = SimServer::new(ServerConfig::new(TOKEN), None).unwrap();
    let first = open_session(&mut memory).database;
    memory.restart().unwrap();
    assert_ne!(open_session(&mut memory).database, first);
}

#[test]
fn a_crash_between_applying_and_storing_loses_the_commit_and_says_so() {
    let storage = MemoryStorage::new();
    let mut server = SimServer::new(ServerConfig::new(TOKEN), Some(storage.clone())).unwrap();
    let s = open_session(&mut server);
    let base = server.current_tid();
    server.set_auto_settle(false);
    server.send(&s.conn, &create(&server, &s, s.block.start, Some(1)));
    assert!(server.current_tid() > base, "applied in memory");
    assert!(
        server.recv(&s.conn).is_none(),
        "no answer before it is stored"
    );
    assert_eq!(storage.tid(), base, "not stored yet");
    server.restart().unwrap();
    server.set_auto_settle(true);
    assert_eq!(
        server.current_tid(),
        base.next(),
        "the start deletes the old connection object; the commit is gone"
    );
    let again = open_session(&mut server);
    let base = server.current_tid();
    assert_eq!(
        query(&mut server, &again.conn, 1, base),
        CommitStatus::NotApplied
    );
}

#[test]
fn a_failed_batch_makes_its_commit_ids_unknown_and_refused() {
    let storage = MemoryStorage::new();
    let mut server = SimServer::new(ServerConfig::new(TOKEN), Some(storage.clone())).unwrap();
    let s = open_session(&mut server);
    let base = server.current_tid();
    storage.set_failing(true);
    let commit = create(&server, &s, s.block.start, Some(1));
    server.send(&s.conn, &commit);
    match result(&mut server, &s.conn) {
        Some(CommitOutcome::StorageUnavailable { reason }) => {
            assert_eq!(
                reason, "the in-memory storage is set to fail",
                "the storage's reason"
            )
        }
        other => panic!("expected a storage failure, got {other:?}"),
    }
    storage.set_failing(false);
    assert_eq!(
        query(&mut server, &s.conn, 1, base),
        CommitStatus::Unknown,
        "a failed write may still have landed"
    );
    server.send(&s.conn, &commit);
    assert!(matches!(
        result(&mut server, &s.conn),
        Some(CommitOutcome::Invalid { .. })
    ));
}

#[test]
fn a_connection_cut_mid_snapshot_resumes_with_everything() {
    let mut server = SimServer::new(ServerConfig::new(TOKEN), None).unwrap();
    let s = open_session(&mut server);
    let count = 2500;
    for n in 0..count {
        server.send(&s.conn, &create(&server, &s, s.block.start + n, None));
        assert!(matches!(
            result(&mut server, &s.conn),
            Some(CommitOutcome::CommittedAsSent { .. })
        ));
    }
    let reader = server.connect();
    server.send(&reader, &hello(TOKEN));
    assert!(matches!(
        server.recv(&reader),
        Some(ServerMessage::Welcome { .. })
    ));
    let target = SubscriptionTarget::Type(s.t.type_id);
    server.send(
        &reader,
        &ClientMessage::Subscribe {
            request_id: RequestId(3),
            targets: vec![target.clone()],
        },
    );
    let first = loop {
        match server.recv(&reader) {
            Some(ServerMessage::SubscriptionData { objects, .. }) => break objects.len(),
            Some(_) => continue,
            None => panic!("no subscription data"),
        }
    };
    assert!(first < count as usize, "the snapshot comes in chunks");
    server.disconnect(&reader);
    assert!(server.recv(&reader).is_none());

    // The creator's session resumes on a new connection with its own ids.
    server.disconnect(&s.conn);
    let conn = server.connect();
    server.send(&conn, &hello(TOKEN));
    let Some(ServerMessage::Welcome { connection, .. }) = server.recv(&conn) else {
        panic!("expected a Welcome");
    };
    server.send(
        &conn,
        &ClientMessage::Resume {
            request_id: RequestId(4),
            targets: Vec::new(),
            own: vec![s.block],
            since: None,
        },
    );
    let mut seen = Vec::new();
    let end = loop {
        match server.recv(&conn) {
            Some(ServerMessage::SubscriptionData { objects, .. }) => {
                seen.extend(objects.into_iter().map(|o| o.id))
            }
            Some(ServerMessage::Commit(_)) => continue,
            Some(end) => break end,
            None => panic!("the resume was not answered"),
        }
    };
    let mut expected: Vec<ObjectId> = (0..count).map(|n| ObjectId(s.block.start + n)).collect();
    expected.push(connection);
    expected.sort();
    assert_eq!(seen, expected);
    assert!(matches!(
        end,
        ServerMessage::Resumed { delta: false, tid, .. } if tid == server.current_tid()
    ));
}
