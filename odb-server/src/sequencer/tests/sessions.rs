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
        CommitOutcome::Invalid { reason } => {
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
