//! Sessions that survive: the database identity, commit-id records, commit queries and resume.

use super::*;
use crate::storage::MemoryStorage;
use odb_wire::{CommitId, CommitStatus};
use std::sync::atomic::AtomicU64;

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
        protocol_version: PUSHED_BACK,
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

fn commit_id(seq: u64) -> CommitId {
    CommitId {
        session: 0xabc,
        seq,
    }
}

impl Harness {
    /// Creates object `o` under commit id `seq`; returns the outcome.
    fn create_with_id(&mut self, client: &mut Client, o: u64, seq: u64) -> CommitOutcome {
        let mut req = self.create(o, "x");
        req.commit_id = Some(commit_id(seq));
        self.commit(client, req);
        loop {
            match client.next() {
                Some(ServerMessage::Commit(_)) => continue,
                Some(ServerMessage::CommitResult { outcome, .. }) => return outcome,
                other => panic!("expected a commit result, got {other:?}"),
            }
        }
    }

    fn query(&mut self, client: &mut Client, commits: Vec<(CommitId, Tid)>) -> Vec<CommitStatus> {
        self.send(
            client,
            ClientMessage::QueryCommits {
                request_id: RequestId(77),
                commits,
            },
        );
        match client.next() {
            Some(ServerMessage::CommitStatuses {
                request_id,
                statuses,
            }) => {
                assert_eq!(request_id, RequestId(77));
                statuses
            }
            other => panic!("expected commit statuses, got {other:?}"),
        }
    }
}

#[test]
fn a_repeated_commit_id_is_answered_already_applied_and_not_applied_again() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let CommitOutcome::Committed { tid } = h.create_with_id(&mut a, 100, 1) else {
        panic!("the first copy commits");
    };
    let mut watcher = connect(&mut h.seq, usize::MAX);
    h.subscribe(&watcher, vec![SubscriptionTarget::Type(h.t.type_id)]);
    while watcher.next().is_some() {}
    let before = h.seq.store.tid();
    // The same commit again (even with a newer base tid): nothing is applied or pushed.
    let mut again = h.create(100, "x");
    again.commit_id = Some(commit_id(1));
    h.commit(&a, again);
    assert_eq!(a.result(), CommitOutcome::AlreadyApplied { tid });
    assert!(a.next().is_none() && watcher.next().is_none());
    assert_eq!(h.seq.store.tid(), before, "nothing was applied");
    // Another id commits as usual.
    assert!(matches!(
        h.create_with_id(&mut a, 101, 2),
        CommitOutcome::Committed { .. }
    ));
}

#[test]
fn the_window_drops_records_by_count_and_old_commits_become_unknown() {
    let config = ServerConfig {
        commit_id_window_count: 3,
        ..ServerConfig::new("t")
    };
    let (mut h, mut a) = harness(config);
    let mut tids = Vec::new();
    for n in 0..5 {
        let base = h.seq.store.tid();
        let CommitOutcome::Committed { tid } = h.create_with_id(&mut a, 100 + n, n) else {
            panic!("commits");
        };
        tids.push((base, tid));
    }
    assert_eq!(h.seq.commit_ids.len(), 3);
    assert_eq!(h.seq.commit_ids.horizon(), tids[1].1);
    let statuses = h.query(
        &mut a,
        vec![
            (commit_id(0), tids[0].0),
            (commit_id(1), tids[1].0),
            (commit_id(2), tids[2].0),
            (commit_id(4), tids[4].0),
            // Never sent, based on the current tid: certainly not applied.
            (commit_id(99), h.seq.store.tid()),
        ],
    );
    assert_eq!(
        statuses,
        vec![
            CommitStatus::Unknown,
            CommitStatus::Unknown,
            CommitStatus::Applied { tid: tids[2].1 },
            CommitStatus::Applied { tid: tids[4].1 },
            CommitStatus::NotApplied,
        ]
    );
}

#[test]
fn the_window_drops_records_by_age() {
    let config = ServerConfig {
        commit_id_window_time: std::time::Duration::from_secs(60),
        ..ServerConfig::new("t")
    };
    let (mut h, mut a) = harness(config);
    let now = Arc::new(AtomicU64::new(1_000_000));
    h.seq.clock = Clock::Manual(now.clone());
    let base = h.seq.store.tid();
    let CommitOutcome::Committed { tid: first } = h.create_with_id(&mut a, 100, 1) else {
        panic!("commits");
    };
    now.fetch_add(59_000, Ordering::AcqRel);
    assert!(matches!(
        h.create_with_id(&mut a, 101, 2),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        h.query(&mut a, vec![(commit_id(1), base)]),
        vec![CommitStatus::Applied { tid: first }],
        "kept within the time"
    );
    now.fetch_add(2_000, Ordering::AcqRel);
    assert!(matches!(
        h.create_with_id(&mut a, 102, 3),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        h.seq.commit_ids.len(),
        2,
        "the first record is over a minute old"
    );
    assert_eq!(
        h.query(&mut a, vec![(commit_id(1), base)]),
        vec![CommitStatus::Unknown]
    );
}

#[test]
fn a_commit_reported_not_applied_is_fenced_against_a_late_copy() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let base = h.seq.store.tid();
    assert_eq!(
        h.query(&mut a, vec![(commit_id(5), base)]),
        vec![CommitStatus::NotApplied]
    );
    // The copy still queued from the client's previous connection arrives afterwards.
    let mut late = h.create(100, "x");
    late.commit_id = Some(commit_id(5));
    late.base_tid = base;
    h.commit(&a, late);
    match a.result() {
        CommitOutcome::Invalid { reason, .. } => {
            assert!(reason.contains("not applied"), "{reason}")
        }
        other => panic!("the late copy must be refused, got {other:?}"),
    }
    assert!(h.seq.store.record(ObjectId(100)).is_none(), "never applied");
    assert_eq!(h.seq.store.tid(), base);
    assert_eq!(
        h.query(&mut a, vec![(commit_id(5), base)]),
        vec![CommitStatus::NotApplied],
        "the answer stays the same"
    );
}

/// Registers a connection; returns it with the id block of its `Welcome`.
fn connect_with_block(seq: &mut Sequencer) -> (Client, IdBlock) {
    let closed = CancellationToken::new();
    let (outbound, queue) = outbound::channel(usize::MAX, closed.clone(), Arc::default());
    let (reply, mut id) = oneshot::channel();
    seq.handle(Request::Register {
        outbound,
        client_name: "test".into(),
        protocol_version: PUSHED_BACK,
        reply,
    });
    let id = id.try_recv().expect("registered");
    let mut client = Client { id, queue, closed };
    let Some(ServerMessage::Welcome { ids, .. }) = client.next() else {
        panic!("expected a Welcome");
    };
    client.commit_push();
    (client, ids)
}

impl Harness {
    /// Creates object `o` with value `a` as `client`'s commit; checks that it commits.
    fn create_as(&mut self, client: &mut Client, o: u64, a: &str) {
        let req = self.create(o, a);
        self.commit(client, req);
        loop {
            match client.next() {
                Some(ServerMessage::Commit(_)) => continue,
                Some(ServerMessage::CommitResult { outcome, .. }) => {
                    assert!(
                        matches!(outcome, CommitOutcome::Committed { .. }),
                        "{outcome:?}"
                    );
                    return;
                }
                other => panic!("expected a commit result, got {other:?}"),
            }
        }
    }

    /// Resumes on `client`; returns the objects of the answer and its final message.
    fn resume(
        &mut self,
        client: &mut Client,
        targets: Vec<SubscriptionTarget>,
        own: Vec<IdBlock>,
    ) -> (Vec<ObjectId>, ServerMessage) {
        self.resume_since(client, targets, own, None)
    }

    /// Resumes a session whose replica holds `since`; returns the ids of the objects sent and
    /// the closing `Resumed`.
    fn resume_since(
        &mut self,
        client: &mut Client,
        targets: Vec<SubscriptionTarget>,
        own: Vec<IdBlock>,
        since: Option<Tid>,
    ) -> (Vec<ObjectId>, ServerMessage) {
        self.send(
            client,
            ClientMessage::Resume {
                request_id: RequestId(31),
                targets,
                own,
                since,
            },
        );
        let mut objects = Vec::new();
        loop {
            match client.next() {
                Some(ServerMessage::SubscriptionData { objects: chunk, .. }) => {
                    objects.extend(chunk.into_iter().map(|o| o.id))
                }
                Some(end) => return (objects, end),
                None => panic!("the resume was not answered"),
            }
        }
    }
}

#[test]
fn a_resumed_session_sees_its_own_objects_and_its_targets_but_not_others() {
    let (mut h, _first) = harness(ServerConfig::new("t"));
    let (mut a, a_block) = connect_with_block(&mut h.seq);
    let (mut other, other_block) = connect_with_block(&mut h.seq);
    let own = |n: u64| a_block.start + n;
    h.create_as(&mut a, own(0), "x");
    h.create_as(&mut a, own(1), "x");
    h.create_as(&mut a, own(2), "y");
    h.create_as(&mut other, other_block.start, "x");
    h.create_as(&mut other, other_block.start + 1, "y");
    h.seq.handle(Request::Disconnect { conn: a.id });

    let (mut c, _) = connect_with_block(&mut h.seq);
    let by_y = SubscriptionTarget::Index {
        index: h.t.indices[0],
        value: b("y"),
    };
    let (objects, end) = h.resume(&mut c, vec![by_y], vec![a_block]);
    let mut expected = vec![
        ObjectId(own(0)),
        ObjectId(own(1)),
        ObjectId(own(2)),
        ObjectId(other_block.start + 1),
        c.id,
    ];
    expected.sort();
    assert_eq!(
        objects, expected,
        "own objects, the target's, and its connection object"
    );
    assert_eq!(
        end,
        ServerMessage::Resumed {
            request_id: RequestId(31),
            tid: h.seq.store.tid(),
            delta: false,
            visible: Vec::new(),
        }
    );

    // Changes to own objects reach the resumed connection, whoever makes them; others' do not.
    let change = h.set_a(own(0), "z");
    h.commit(&other, change);
    assert!(matches!(c.commit_push().writes[0].object, o if o == ObjectId(own(0))));
    let change = h.set_a(other_block.start, "w");
    h.commit(&other, change);
    assert!(c.next().is_none());
}

/// A session subscribed to index value "y" went away at `since`; then one of its objects
/// changed, one was deleted, one joined and one left the value, and one stayed as it was.
fn away_while_things_changed(config: ServerConfig) -> (Harness, u64, SubscriptionTarget, Tid) {
    let (mut h, _first) = harness(config);
    let (mut other, block) = connect_with_block(&mut h.seq);
    let id = |n: u64| block.start + n;
    for n in 0..4 {
        h.create_as(&mut other, id(n), "y");
    }
    h.create_as(&mut other, id(4), "x");
    let since = h.seq.store.tid();
    for change in [
        h.set_a(id(0), "y"),
        h.set_a(id(2), "x"),
        h.set_a(id(4), "y"),
    ] {
        h.commit(&other, change);
    }
    h.commit(
        &other,
        CommitRequest {
            base_tid: h.seq.store.tid(),
            deletes: vec![ObjectId(id(1))],
            ..CommitRequest::default()
        },
    );
    while other.next().is_some() {}
    let by_y = SubscriptionTarget::Index {
        index: h.t.indices[0],
        value: b("y"),
    };
    (h, block.start, by_y, since)
}

#[test]
fn a_session_resumed_from_a_recent_tid_is_sent_only_what_changed() {
    let (mut h, first, by_y, since) = away_while_things_changed(ServerConfig::new("t"));
    let id = |n: u64| ObjectId(first + n);
    let (mut c, _) = connect_with_block(&mut h.seq);
    let (objects, end) = h.resume_since(&mut c, vec![by_y], Vec::new(), Some(since));
    let mut expected = vec![id(0), id(4), c.id];
    expected.sort();
    assert_eq!(
        objects, expected,
        "the changed object, the one that joined, and the new connection's object; not the \
         unchanged one, nor the deleted one, nor the one that left"
    );
    let ServerMessage::Resumed {
        delta,
        visible,
        tid,
        ..
    } = end
    else {
        panic!("expected Resumed, got {end:?}");
    };
    assert!(delta);
    assert_eq!(tid, h.seq.store.tid());
    let listed: Vec<ObjectId> = visible
        .iter()
        .flat_map(|r| (r.start..r.start + r.len).map(ObjectId))
        .collect();
    let mut all = vec![id(0), id(3), id(4), c.id];
    all.sort();
    assert_eq!(listed, all, "every visible object, changed or not");
}

#[test]
fn a_session_away_past_the_change_window_or_from_the_future_gets_the_full_data() {
    let config = ServerConfig {
        resume_window_changes: 2,
        ..ServerConfig::new("t")
    };
    let (mut h, _other, by_y, since) = away_while_things_changed(config);
    let (mut c, _) = connect_with_block(&mut h.seq);
    let (objects, end) = h.resume_since(&mut c, vec![by_y.clone()], Vec::new(), Some(since));
    assert!(
        matches!(end, ServerMessage::Resumed { delta: false, .. }),
        "{end:?}"
    );
    assert_eq!(objects.len(), 4, "id 0, 3 and 4, and the connection object");

    let (mut d, _) = connect_with_block(&mut h.seq);
    let ahead = Tid(h.seq.store.tid().0 + 10);
    let (_, end) = h.resume_since(&mut d, vec![by_y], Vec::new(), Some(ahead));
    assert!(
        matches!(end, ServerMessage::Resumed { delta: false, .. }),
        "a replica ahead of the server (storage lost commits) is replaced: {end:?}"
    );
}

#[test]
fn a_restarted_server_does_not_claim_to_know_changes_from_before_its_start() {
    let storage = MemoryStorage::new();
    let mut seq = open_on(ServerConfig::new("t"), Some(&storage));
    let before = seq.tid();
    let _ = welcome_database(&mut seq);
    drop(seq);
    let seq = open_on(ServerConfig::new("t"), Some(&storage));
    assert!(
        seq.tid() > before,
        "the restart deleted the old connection object"
    );
    assert!(seq.changes.since(before).is_none());
    assert!(seq.changes.since(seq.tid()).is_some_and(|c| c.is_empty()));
}

#[test]
fn ids_not_yet_handed_out_are_never_a_resumed_sessions_own() {
    let (mut h, _first) = harness(ServerConfig::new("t"));
    let (mut c, _) = connect_with_block(&mut h.seq);
    let claimed = IdBlock {
        start: h.seq.next_id,
        len: 10_000_000,
    };
    let (objects, _) = h.resume(&mut c, Vec::new(), vec![claimed]);
    assert_eq!(objects, vec![c.id]);
    let (mut d, d_block) = connect_with_block(&mut h.seq);
    assert!(d_block.start >= claimed.start);
    h.create_as(&mut d, d_block.start, "x");
    while let Some(message) = c.next() {
        if let ServerMessage::Commit(data) = message {
            assert!(
                data.writes
                    .iter()
                    .all(|w| w.object != ObjectId(d_block.start)),
                "another connection's object leaked: {data:?}"
            );
        }
    }
}

#[test]
fn a_resume_over_the_limits_fails_and_changes_nothing() {
    let config = ServerConfig {
        max_subscriptions: 2,
        ..ServerConfig::new("t")
    };
    let (mut h, _first) = harness(config);
    let (mut a, a_block) = connect_with_block(&mut h.seq);
    h.create_as(&mut a, a_block.start, "x");
    h.seq.handle(Request::Disconnect { conn: a.id });
    let (mut c, _) = connect_with_block(&mut h.seq);
    let targets = (1..=3)
        .map(|o| SubscriptionTarget::Object(ObjectId(o)))
        .collect();
    let (objects, end) = h.resume(&mut c, targets, vec![a_block]);
    assert!(objects.is_empty());
    match end {
        ServerMessage::RequestFailed { reason, limit, .. } => assert_eq!(
            limit,
            Some(odb_wire::limits::Limit::SubscriptionsPerConnection),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let unknown = vec![SubscriptionTarget::Type(odb_wire::TypeId(999))];
    let (_, end) = h.resume(&mut c, unknown, vec![a_block]);
    assert!(
        matches!(end, ServerMessage::RequestFailed { .. }),
        "{end:?}"
    );
    let too_many =
        vec![IdBlock { start: 1, len: 1 }; crate::sequencer::sessions::MAX_OWN_BLOCKS + 1];
    let (_, end) = h.resume(&mut c, Vec::new(), too_many);
    assert!(
        matches!(end, ServerMessage::RequestFailed { .. }),
        "{end:?}"
    );
    // Nothing was added: a resume within the limits sees only the connection's own object.
    let (objects, _) = h.resume(&mut c, Vec::new(), Vec::new());
    assert_eq!(objects, vec![c.id]);
}

#[test]
fn objects_the_previous_connection_still_creates_reach_the_resumed_one() {
    let (mut h, _first) = harness(ServerConfig::new("t"));
    let (mut old, block) = connect_with_block(&mut h.seq);
    let (mut c, _) = connect_with_block(&mut h.seq);
    let (objects, _) = h.resume(&mut c, Vec::new(), vec![block]);
    assert_eq!(objects, vec![c.id]);
    // The previous connection is not known to be gone yet, and a late commit of it lands.
    h.create_as(&mut old, block.start, "x");
    let push = c.commit_push();
    assert!(
        push.writes
            .iter()
            .any(|w| w.object == ObjectId(block.start)),
        "{push:?}"
    );
}
