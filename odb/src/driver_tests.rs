//! The driver's hand-over of received messages to the core.

use super::*;
use crate::session::{CoreConfig, ReconnectPolicy};
use odb_wire::{CommitData, DatabaseId, IdBlock, ObjectId, Tid};

fn welcome(tid: u64) -> ServerMessage {
    ServerMessage::Welcome {
        protocol_version: odb_wire::PROTOCOL_VERSION,
        connection: ObjectId(1),
        ids: IdBlock {
            start: 1_000,
            len: 100,
        },
        tid: Tid(tid),
        heartbeat_interval_ms: 60_000,
        max_frame: odb_wire::DEFAULT_MAX_FRAME as u64,
        database: DatabaseId(7),
    }
}

fn push(tid: u64, deletes: u64) -> ServerMessage {
    ServerMessage::Commit(CommitData {
        tid: Tid(tid),
        writes: Vec::new(),
        index_writes: Vec::new(),
        deletes: (1..=deletes).map(|n| ObjectId(5_000 + n)).collect(),
    })
}

/// A session whose core has been welcomed on its first connection, at tid 5.
fn up() -> Arc<Session> {
    let now = Instant::now();
    let config = CoreConfig {
        token: "t".into(),
        name: "driver".into(),
        max_frame: odb_wire::DEFAULT_MAX_FRAME,
        policy: ReconnectPolicy::default(),
        urls: 1,
        retain_history: 0,
        seed: 1,
    };
    let mut core = ClientCore::new(config, now);
    let _ = core.poll_dial(now);
    core.on_connected(now);
    core.on_message(welcome(5), now);
    assert!(core.is_up());
    Session::new(core, odb_wire::DEFAULT_MAX_FRAME, Duration::from_secs(1))
}

fn replica_tid(session: &Session) -> Tid {
    session.shared.local.read().replica.tid()
}

#[test]
fn a_batch_is_handed_over_while_its_connection_lasts() {
    let session = up();
    let mut batch = vec![push(6, 0), push(7, 0)];
    assert_eq!(session.hand_over(&mut batch, None), Handed::Open);
    assert!(batch.is_empty());
    assert_eq!(replica_tid(&session), Tid(7));
}

#[test]
fn a_batch_whose_work_reaches_the_inline_limit_is_left_untouched() {
    let session = up();
    let mut batch = vec![push(6, 0), push(7, 10)];
    assert_eq!(session.hand_over(&mut batch, Some(10)), Handed::Heavy);
    assert_eq!(batch.len(), 2, "nothing consumed");
    assert_eq!(replica_tid(&session), Tid(5));
    assert_eq!(session.hand_over(&mut batch, Some(11)), Handed::Open);
    assert_eq!(replica_tid(&session), Tid(7));
}

#[test]
fn an_undecodable_frame_ends_the_batch_after_those_before_it() {
    let good = odb_wire::encode(&ServerMessage::Heartbeat).expect("encodes");
    let mut frames = vec![good.clone(), Bytes::from_static(&[0xff; 3]), good];
    let mut messages = Vec::new();
    let error = decode(&mut frames, &mut messages);
    assert!(error.is_some_and(|e| e.contains("undecodable")));
    assert_eq!(messages.len(), 1);
    assert!(frames.is_empty());
}
