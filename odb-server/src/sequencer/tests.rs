//! Unit tests of the sequencer.

use super::*;
use crate::outbound::{self, OutboundReceiver};
use odb_wire::{CommitData, FieldWrite, IndexDef, IndexWrite, SchemaDef, Tid, TypeDef, TypeIds};

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
    let mut seq = Sequencer::new(Arc::new(config), status.clone());
    let mut first = connect(&mut seq, usize::MAX);
    seq.handle(Request::Message {
        conn: first.id,
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
    let closed = CancellationToken::new();
    let (outbound, queue) = outbound::channel(limit, closed.clone());
    let (reply, mut id) = oneshot::channel();
    seq.handle(Request::Register { outbound, reply });
    let id = id.try_recv().expect("registered");
    let mut client = Client { id, queue, closed };
    assert!(
        matches!(client.next(), Some(ServerMessage::Welcome { connection, .. }) if connection == id)
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
    let mut seq = Sequencer::new(Arc::new(config), status.clone());
    let closed = CancellationToken::new();
    let (outbound, mut queue) = outbound::channel(usize::MAX, closed);
    let (reply, _id) = oneshot::channel();
    seq.handle(Request::Register { outbound, reply });
    let welcome: ServerMessage = odb_wire::decode(&queue.try_recv().unwrap()).unwrap();
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
    h.commit(&a, h.create(100, "x"));
    let push = a.commit_push();
    assert_eq!(push.tid, Tid(1));
    assert_eq!(push.writes.len(), 2);
    assert_eq!(
        push.index_writes.len(),
        2,
        "the by_a index and the all index"
    );
    assert_eq!(a.result(), CommitOutcome::Committed { tid: Tid(1) });
    assert!(
        other.next().is_none(),
        "an unsubscribed connection sees nothing"
    );
    assert_eq!(h.status.tid.load(Ordering::Acquire), 1);

    // The creator keeps seeing its object.
    h.commit(&other, h.set_a(100, "y"));
    assert_eq!(other.result(), CommitOutcome::Committed { tid: Tid(2) });
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
            assert_eq!(objects[0].id, ObjectId(100));
        }
        other => panic!("expected data, got {other:?}"),
    }
    assert!(matches!(
        b_.next(),
        Some(ServerMessage::SubscriptionComplete { tid: Tid(1), .. })
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
    assert!(matches!(
        s.next(),
        Some(ServerMessage::SubscriptionComplete { tid: Tid(0), .. })
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
        base_tid: Tid(4),
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
            tid: Tid(1)
        })
    );
}

#[test]
fn a_rejected_commit_pushes_nothing() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut bad = h.create(100, "x");
    bad.deletes.push(ObjectId(5));
    h.commit(&a, bad);
    assert!(matches!(a.result(), CommitOutcome::Invalid { .. }));
    assert!(a.next().is_none());
    assert_eq!(h.seq.store.tid(), Tid(0));
}

#[test]
fn a_connection_over_its_queue_limit_is_dropped() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let slow = connect(&mut h.seq, 200);
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
