//! Unit tests of the sequencer.

use super::*;
use crate::outbound::{self, OutboundReceiver};
use odb_wire::{
    CommitData, FieldWrite, IndexDef, IndexWrite, Key, SchemaDef, Tid, TypeDef, TypeIds,
};

/// The protocol version the harness's connections speak: the oldest, whose committers get
/// their commits pushed back, so that the tests read every push. `as_sent` tests the newer
/// answer.
const PUSHED_BACK: u32 = odb_wire::OLDEST_PROTOCOL_VERSION;

struct Harness {
    seq: Sequencer,
    status: Arc<Status>,
    t: TypeIds,
}

struct Client {
    id: ObjectId,
    queue: OutboundReceiver,
    closed: CancellationToken,
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn harness(config: ServerConfig) -> (Harness, Client) {
    let status = Arc::new(Status::default());
    let mut seq = Sequencer::new(Arc::new(config), status.clone()).unwrap();
    let mut first = connect(&mut seq, usize::MAX);
    seq.handle(Request::Message {
        conn: first.id,
        _budget: None,
        received: tokio::time::Instant::now(),
        message: ClientMessage::DefineSchema {
            request_id: RequestId(1),
            schema: SchemaDef {
                name: "s".into(),
                types: vec![TypeDef {
                    name: "T".into(),
                    fields: vec!["a".into()],
                    indices: vec![IndexDef {
                        name: "by_a".into(),
                        fields: vec!["a".into()],
                    }],
                }],
            },
        },
    });
    let t = match first.next() {
        Some(ServerMessage::SchemaDefined { schema, .. }) => schema.types[0].clone(),
        other => panic!("expected SchemaDefined, got {other:?}"),
    };
    (Harness { seq, status, t }, first)
}

fn connect(seq: &mut Sequencer, limit: usize) -> Client {
    connect_speaking(seq, limit, PUSHED_BACK)
}

fn connect_speaking(seq: &mut Sequencer, limit: usize, protocol_version: u32) -> Client {
    let closed = CancellationToken::new();
    let (outbound, queue) = outbound::channel(limit, closed.clone(), Arc::default());
    let (reply, mut id) = oneshot::channel();
    seq.handle(Request::Register {
        outbound,
        client_name: "test".into(),
        protocol_version,
        reply,
    });
    let id = id.try_recv().expect("registered");
    let mut client = Client { id, queue, closed };
    let welcome = client.next();
    assert!(
        matches!(
            welcome,
            Some(ServerMessage::Welcome { connection, protocol_version: v, .. })
                if connection == id && v == protocol_version
        ),
        "the welcome names the connection and the version both sides speak: {welcome:?}"
    );
    let own = client.commit_push();
    assert_eq!(own.tid, seq.store.tid());
    assert!(
        own.writes.iter().all(|w| w.object == id) && !own.writes.is_empty(),
        "the registration commit brings the connection's own Connection object: {own:?}"
    );
    client
}

impl Client {
    fn next_frame(&mut self) -> Option<Bytes> {
        self.queue.try_recv()
    }

    fn next(&mut self) -> Option<ServerMessage> {
        self.next_frame()
            .map(|f| odb_wire::decode(&f).expect("decodes"))
    }

    fn commit_push(&mut self) -> CommitData {
        match self.next() {
            Some(ServerMessage::Commit(data)) => data,
            other => panic!("expected a pushed commit, got {other:?}"),
        }
    }

    fn result(&mut self) -> CommitOutcome {
        match self.next() {
            Some(ServerMessage::CommitResult { outcome, .. }) => outcome,
            other => panic!("expected a commit result, got {other:?}"),
        }
    }
}

impl Harness {
    fn send(&mut self, client: &Client, message: ClientMessage) {
        self.seq.handle(Request::Message {
            conn: client.id,
            message,
            _budget: None,
            received: tokio::time::Instant::now(),
        });
    }

    fn commit(&mut self, client: &Client, commit: CommitRequest) {
        self.send(
            client,
            ClientMessage::Commit {
                request_id: RequestId(9),
                commit,
            },
        );
    }

    fn create(&self, o: u64, a: &str) -> CommitRequest {
        CommitRequest {
            base_tid: self.seq.store.tid(),
            writes: vec![
                FieldWrite {
                    object: ObjectId(o),
                    field: self.t.exists_field,
                    value: Some(Bytes::new()),
                },
                FieldWrite {
                    object: ObjectId(o),
                    field: self.t.fields[0],
                    value: Some(b(a)),
                },
            ],
            index_writes: vec![IndexWrite {
                object: ObjectId(o),
                index: self.t.indices[0],
                value: Some(b(a)),
            }],
            ..CommitRequest::default()
        }
    }

    fn set_a(&self, o: u64, a: &str) -> CommitRequest {
        CommitRequest {
            base_tid: self.seq.store.tid(),
            writes: vec![FieldWrite {
                object: ObjectId(o),
                field: self.t.fields[0],
                value: Some(b(a)),
            }],
            index_writes: vec![IndexWrite {
                object: ObjectId(o),
                index: self.t.indices[0],
                value: Some(b(a)),
            }],
            ..CommitRequest::default()
        }
    }

    /// Commits and checks that it succeeded.
    fn step(&mut self, client: &mut Client, req: CommitRequest) {
        self.commit(client, req);
        client.commit_push();
        assert!(matches!(client.result(), CommitOutcome::Committed { .. }));
    }

    fn subscribe(&mut self, client: &Client, targets: Vec<SubscriptionTarget>) {
        self.send(
            client,
            ClientMessage::Subscribe {
                request_id: RequestId(5),
                targets,
            },
        );
    }
}

#[test]
fn ids_start_at_one_and_are_never_reused() {
    let config = ServerConfig {
        id_block_size: 10,
        ..ServerConfig::new("t")
    };
    let status = Arc::new(Status::default());
    let mut seq = Sequencer::new(Arc::new(config), status.clone()).unwrap();
    let closed = CancellationToken::new();
    let (outbound, mut queue) = outbound::channel(usize::MAX, closed, Arc::default());
    let (reply, _id) = oneshot::channel();
    seq.handle(Request::Register {
        outbound,
        client_name: "test".into(),
        protocol_version: PUSHED_BACK,
        reply,
    });
    let welcome: ServerMessage = odb_wire::decode(&queue.try_recv().unwrap()).unwrap();
    let own: ServerMessage = odb_wire::decode(&queue.try_recv().unwrap()).unwrap();
    assert!(matches!(own, ServerMessage::Commit(_)), "{own:?}");
    let ServerMessage::Welcome {
        connection,
        ids,
        tid,
        ..
    } = welcome
    else {
        panic!("{welcome:?}")
    };
    assert_eq!(
        (connection, ids, tid),
        (ObjectId(1), IdBlock { start: 2, len: 10 }, Tid(0))
    );
    assert_eq!(status.connections.load(Ordering::Acquire), 1);
    for (count, expected) in [
        (3, IdBlock { start: 12, len: 10 }),
        (25, IdBlock { start: 22, len: 25 }),
    ] {
        seq.handle(Request::Message {
            conn: connection,
            _budget: None,
            received: tokio::time::Instant::now(),
            message: ClientMessage::RequestIds {
                request_id: RequestId(1),
                count,
            },
        });
        let answer: ServerMessage = odb_wire::decode(&queue.try_recv().unwrap()).unwrap();
        assert_eq!(
            answer,
            ServerMessage::Ids {
                request_id: RequestId(1),
                block: expected
            }
        );
    }
    seq.handle(Request::Disconnect { conn: connection });
    assert_eq!(status.connections.load(Ordering::Acquire), 0);
}

#[test]
fn committer_gets_its_creation_pushed_before_the_result_and_others_nothing() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut other = connect(&mut h.seq, usize::MAX);
    let base = h.seq.store.tid();
    h.commit(&a, h.create(100, "x"));
    let push = a.commit_push();
    assert_eq!(push.tid, base.next());
    assert_eq!(push.writes.len(), 2);
    assert_eq!(
        push.index_writes.len(),
        2,
        "the by_a index and the all index"
    );
    assert_eq!(a.result(), CommitOutcome::Committed { tid: base.next() });
    assert!(
        other.next().is_none(),
        "an unsubscribed connection sees nothing"
    );
    assert_eq!(h.status.tid.load(Ordering::Acquire), base.next().0);

    // The creator keeps seeing its object.
    h.commit(&other, h.set_a(100, "y"));
    assert_eq!(
        other.result(),
        CommitOutcome::Committed {
            tid: base.next().next()
        }
    );
    let push = a.commit_push();
    assert_eq!(
        push.writes,
        vec![FieldWrite {
            object: ObjectId(100),
            field: h.t.fields[0],
            value: Some(b("y"))
        }]
    );
    assert_eq!(
        push.index_writes,
        vec![IndexWrite {
            object: ObjectId(100),
            index: h.t.indices[0],
            value: Some(b("y"))
        }]
    );
}

#[test]
fn type_subscription_sends_data_then_completion_then_later_commits() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    h.commit(&a, h.create(100, "x"));
    a.commit_push();
    a.result();
    let mut b_ = connect(&mut h.seq, usize::MAX);
    h.subscribe(&b_, vec![SubscriptionTarget::Type(h.t.type_id)]);
    match b_.next() {
        Some(ServerMessage::SubscriptionData { objects, .. }) => {
            assert_eq!(objects.len(), 1);
            assert_eq!(objects.to_vec()[0].id, ObjectId(100));
        }
        other => panic!("expected data, got {other:?}"),
    }
    let now = h.seq.store.tid();
    assert!(matches!(
        b_.next(),
        Some(ServerMessage::SubscriptionComplete { tid, .. }) if tid == now
    ));
    h.commit(&a, h.create(101, "z"));
    assert_eq!(
        b_.commit_push().writes.len(),
        2,
        "a new member arrives with all its data"
    );

    // Both connections see the whole commit: one encoding is shared.
    a.commit_push();
    a.result();
    h.commit(&a, h.set_a(100, "q"));
    let (fa, fb) = (a.next_frame().unwrap(), b_.next_frame().unwrap());
    assert_eq!(
        fa.as_ptr(),
        fb.as_ptr(),
        "identical pushes share one buffer"
    );
}

#[test]
fn index_subscription_grows_keeps_leavers_and_forgets_deleted() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut s = connect(&mut h.seq, usize::MAX);
    let by_a = h.t.indices[0];
    h.subscribe(
        &s,
        vec![SubscriptionTarget::Index {
            index: by_a,
            value: b("x"),
        }],
    );
    let now = h.seq.store.tid();
    assert!(matches!(
        s.next(),
        Some(ServerMessage::SubscriptionComplete { tid, .. }) if tid == now
    ));
    {
        let req = h.create(100, "y");
        h.step(&mut a, req);
    }
    assert!(s.next().is_none(), "not in the subscribed value");
    {
        let req = h.set_a(100, "x");
        h.step(&mut a, req);
    }
    let push = s.commit_push();
    assert_eq!(
        push.writes.len(),
        2,
        "entering the value brings the full data"
    );
    assert_eq!(push.index_writes.len(), 2);
    {
        let req = h.set_a(100, "z");
        h.step(&mut a, req);
    }
    let push = s.commit_push();
    assert_eq!(
        push.index_writes,
        vec![IndexWrite {
            object: ObjectId(100),
            index: by_a,
            value: Some(b("z"))
        }]
    );
    {
        let req = h.set_a(100, "w");
        h.step(&mut a, req);
    }
    assert_eq!(
        s.commit_push().writes.len(),
        1,
        "an object that left stays visible"
    );
    let delete = CommitRequest {
        base_tid: h.seq.store.tid(),
        deletes: vec![ObjectId(100)],
        ..Default::default()
    };
    {
        let req = delete;
        h.step(&mut a, req);
    }
    assert_eq!(s.commit_push().deletes, vec![ObjectId(100)]);
    {
        let req = h.create(101, "w");
        h.step(&mut a, req);
    }
    assert!(s.next().is_none());
}

#[test]
fn subscription_data_comes_in_chunks() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut req = CommitRequest::default();
    for o in 0..2500 {
        let one = h.create(1000 + o, "x");
        req.writes.extend(one.writes);
        req.index_writes.extend(one.index_writes);
    }
    h.commit(&a, req);
    a.commit_push();
    a.result();
    let mut s = connect(&mut h.seq, usize::MAX);
    h.subscribe(
        &s,
        vec![SubscriptionTarget::Index {
            index: h.t.indices[0],
            value: b("x"),
        }],
    );
    let mut sizes = Vec::new();
    while let Some(ServerMessage::SubscriptionData { objects, .. }) = s.next() {
        sizes.push(objects.len());
    }
    assert_eq!(sizes, vec![1000, 1000, 500]);
}

#[test]
fn unknown_subscription_targets_fail_and_flush_answers_the_tid() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    h.subscribe(&a, vec![SubscriptionTarget::Type(odb_wire::TypeId(99))]);
    assert!(matches!(
        a.next(),
        Some(ServerMessage::RequestFailed { .. })
    ));
    h.subscribe(
        &a,
        vec![SubscriptionTarget::Index {
            index: odb_wire::IndexId(99),
            value: b(""),
        }],
    );
    assert!(matches!(
        a.next(),
        Some(ServerMessage::RequestFailed { .. })
    ));
    h.commit(&a, h.create(100, "x"));
    a.commit_push();
    a.result();
    h.send(
        &a,
        ClientMessage::Flush {
            request_id: RequestId(3),
        },
    );
    assert_eq!(
        a.next(),
        Some(ServerMessage::Flushed {
            request_id: RequestId(3),
            tid: h.seq.store.tid()
        })
    );
}

#[test]
fn a_rejected_commit_pushes_nothing() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let before = h.seq.store.tid();
    let mut bad = h.create(100, "x");
    bad.deletes.push(ObjectId(5));
    h.commit(&a, bad);
    assert!(matches!(a.result(), CommitOutcome::Invalid { .. }));
    assert!(a.next().is_none());
    assert_eq!(h.seq.store.tid(), before);
}

#[test]
fn a_connection_over_its_queue_limit_is_dropped() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    // Room for the welcome and the registration push (each counted with its overhead), not
    // for twenty commits.
    let slow = connect(&mut h.seq, 400);
    h.subscribe(&slow, vec![SubscriptionTarget::Type(h.t.type_id)]);
    assert_eq!(h.status.connections.load(Ordering::Acquire), 2);
    for o in 0..20 {
        h.commit(&a, h.create(100 + o, "a value of some length"));
        a.commit_push();
        a.result();
    }
    assert!(slow.closed.is_cancelled());
    assert_eq!(h.status.connections.load(Ordering::Acquire), 1);
}

fn silent(seq: &mut Sequencer, conn: ObjectId) -> bool {
    let (reply, mut answer) = oneshot::channel();
    seq.handle(Request::Silent { conn, reply });
    answer.try_recv().expect("answered at once")
}

fn field(seq: &Sequencer, o: ObjectId, f: odb_wire::FieldId) -> Option<Bytes> {
    let record = seq.store.record(o)?;
    record.field(f).map(Bytes::copy_from_slice)
}

#[test]
fn connection_objects_are_created_at_registration_and_deleted_when_the_connection_ends() {
    let (mut h, mut watcher) = harness(ServerConfig::new("t"));
    let core = h.seq.connection_type.ids().clone();
    h.subscribe(&watcher, vec![SubscriptionTarget::Type(core.type_id)]);
    match watcher.next() {
        Some(ServerMessage::SubscriptionData { objects, .. }) => {
            assert_eq!(objects.len(), 1, "the watcher's own connection object");
            assert_eq!(objects.to_vec()[0].id, watcher.id);
        }
        other => panic!("expected data, got {other:?}"),
    }
    assert!(matches!(
        watcher.next(),
        Some(ServerMessage::SubscriptionComplete { .. })
    ));

    let before = h.seq.store.tid();
    let other = connect(&mut h.seq, usize::MAX);
    assert_eq!(
        h.seq.store.tid(),
        before.next(),
        "one commit per registration"
    );
    let push = watcher.commit_push();
    assert_eq!(push.tid, before.next());
    assert!(push.writes.iter().all(|w| w.object == other.id));
    assert!(push.writes.contains(&FieldWrite {
        object: other.id,
        field: core.fields[0],
        value: Some(odb_wire::encode("test").unwrap()),
    }));
    assert!(push.writes.contains(&FieldWrite {
        object: other.id,
        field: core.fields[1],
        value: Some(odb_wire::encode(&false).unwrap()),
    }));
    assert_eq!(
        h.seq
            .store
            .last_write(&Key::Field(other.id, core.fields[0])),
        before.next(),
        "the registration stamps its keys like any commit"
    );

    h.seq.handle(Request::Disconnect { conn: other.id });
    assert_eq!(watcher.commit_push().deletes, vec![other.id]);
    assert!(h.seq.store.record(other.id).is_none());
    assert_eq!(h.status.tid.load(Ordering::Acquire), h.seq.store.tid().0);
    h.seq.handle(Request::Disconnect { conn: other.id });
    assert!(
        watcher.next().is_none(),
        "a second disconnect commits nothing"
    );
}

#[test]
fn a_connection_dropped_by_the_server_loses_its_object_too() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let slow = connect(&mut h.seq, 300);
    h.subscribe(&slow, vec![SubscriptionTarget::Type(h.t.type_id)]);
    for o in 0..20 {
        h.commit(&a, h.create(100 + o, "a value of some length"));
        a.commit_push();
        a.result();
    }
    assert!(slow.closed.is_cancelled());
    assert!(h.seq.store.record(slow.id).is_none());
    assert!(h.seq.store.record(a.id).is_some());
}

#[test]
fn suspending_heartbeat_checks_reads_the_current_flag() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let suspend = h.seq.connection_type.suspend_field();
    assert!(!silent(&mut h.seq, a.id), "checks are on by default");
    for (value, expected) in [(true, true), (false, false), (true, true)] {
        let req = CommitRequest {
            base_tid: h.seq.store.tid(),
            writes: vec![FieldWrite {
                object: a.id,
                field: suspend,
                value: Some(odb_wire::encode(&value).unwrap()),
            }],
            ..CommitRequest::default()
        };
        h.commit(&a, req);
        a.commit_push();
        assert!(matches!(a.result(), CommitOutcome::Committed { .. }));
        assert_eq!(
            field(&h.seq, a.id, suspend),
            Some(odb_wire::encode(&value).unwrap())
        );
        assert_eq!(silent(&mut h.seq, a.id), expected);
    }
    // Another connection's flag does not count, nor does an unknown connection.
    let b_ = connect(&mut h.seq, usize::MAX);
    assert!(!silent(&mut h.seq, b_.id));
    assert!(!silent(&mut h.seq, ObjectId(999_999)));
    // A flag that does not decode as a bool is not a yes.
    let req = CommitRequest {
        base_tid: h.seq.store.tid(),
        writes: vec![FieldWrite {
            object: a.id,
            field: suspend,
            value: Some(Bytes::new()),
        }],
        ..CommitRequest::default()
    };
    h.commit(&a, req);
    a.commit_push();
    a.result();
    assert!(!silent(&mut h.seq, a.id));
    // Once the connection has ended its object is gone and the answer is no.
    h.seq.handle(Request::Disconnect { conn: a.id });
    assert!(!silent(&mut h.seq, a.id));
}

#[test]
fn stale_connection_objects_are_deleted_at_start() {
    // A registry and a store as a durable backend would load them after a crash: two
    // connection objects of the previous run, and one ordinary object.
    let mut registry = Registry::default();
    let core = crate::liveness::ConnectionType::define(&mut registry).unwrap();
    let user = registry
        .define(&SchemaDef {
            name: "s".into(),
            types: vec![TypeDef {
                name: "T".into(),
                fields: vec!["a".into()],
                indices: vec![],
            }],
        })
        .unwrap()
        .types[0]
        .clone();
    let mut store = Store::default();
    for id in [3, 7] {
        let req = core.create(store.tid(), ObjectId(id), "old").unwrap();
        store.commit(&registry, &req).unwrap();
    }
    let keep = CommitRequest {
        base_tid: store.tid(),
        writes: vec![FieldWrite {
            object: ObjectId(10),
            field: user.exists_field,
            value: Some(Bytes::new()),
        }],
        ..CommitRequest::default()
    };
    store.commit(&registry, &keep).unwrap();
    assert_eq!(core.all(&store), vec![ObjectId(3), ObjectId(7)]);
    let loaded_tid = store.tid();

    let status = Arc::new(Status::default());
    let mut seq = Sequencer::from_parts(
        Arc::new(ServerConfig::new("t")),
        status.clone(),
        registry,
        store,
        100,
    )
    .unwrap();
    assert!(seq.connection_type.all(&seq.store).is_empty());
    assert_eq!(
        seq.store.tid(),
        loaded_tid.next(),
        "one commit deletes them all"
    );
    assert!(
        seq.store.record(ObjectId(10)).is_some(),
        "other objects stay"
    );
    assert_eq!(status.tid.load(Ordering::Acquire), loaded_tid.next().0);
    assert_eq!(
        seq.connection_type.ids().type_id,
        core.ids().type_id,
        "the core schema keeps its ids"
    );

    // New connections get new ids and objects as usual.
    let c = connect(&mut seq, usize::MAX);
    assert!(c.id.0 >= 100);
    assert_eq!(seq.connection_type.all(&seq.store), vec![c.id]);

    // A fresh server has nothing to sweep and commits nothing at start.
    let fresh = Sequencer::new(
        Arc::new(ServerConfig::new("t")),
        Arc::new(Status::default()),
    )
    .unwrap();
    assert_eq!(fresh.store.tid(), Tid(0));
}

mod as_sent;
mod inspect;
mod limits;
mod sessions;
#[cfg(all(feature = "redb", feature = "redis"))]
mod stored_sessions;
mod streaming;
mod unsubscribe;
