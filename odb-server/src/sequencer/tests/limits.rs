//! Limits the sequencer applies from its settings: frame-derived sizes, the conflict history.

use super::streaming::create_many;
use super::*;

#[test]
fn the_conflict_history_follows_the_setting_and_is_published() {
    let config = ServerConfig {
        conflict_history: 5,
        ..ServerConfig::new("t")
    };
    let (mut h, mut a) = harness(config);
    let old = h.seq.store.tid();
    for o in 0..20 {
        let req = h.create(100 + o, "x");
        h.step(&mut a, req);
    }
    let now = h.seq.store.tid();
    assert_eq!(h.seq.store.horizon(), Tid(now.0 - 5));
    let stamps = h.status.conflict_stamps.load(Ordering::Acquire);
    assert_eq!(stamps, h.seq.store.conflict_stamps());
    assert!(stamps <= 5 * 4, "{stamps}");
    assert_eq!(
        h.status.objects.load(Ordering::Acquire),
        h.seq.store.object_count()
    );
    let mut late = h.set_a(100, "y");
    late.base_tid = old;
    h.commit(&a, late);
    assert_eq!(
        a.result(),
        CommitOutcome::TooOld {
            base_tid: old,
            horizon: Tid(now.0 - 5)
        }
    );
}

#[test]
fn a_push_over_the_frame_limit_closes_only_that_connection() {
    // Objects of about 900 bytes are allowed (under a quarter of the frame), but ten of them
    // entering a subscribed value at once do not fit in one frame.
    let config = ServerConfig {
        max_frame: 4000,
        ..ServerConfig::new("t")
    };
    let (mut h, mut a) = harness(config);
    let big = "v".repeat(900);
    for o in 0..10 {
        let mut req = h.create(100 + o, "y");
        req.writes[1].value = Some(b(&big));
        h.step(&mut a, req);
    }
    let s = connect(&mut h.seq, usize::MAX);
    h.subscribe(
        &s,
        vec![SubscriptionTarget::Index {
            index: h.t.indices[0],
            value: b("x"),
        }],
    );
    let mut watcher = connect(&mut h.seq, usize::MAX);
    h.subscribe(&watcher, vec![SubscriptionTarget::Object(ObjectId(100))]);
    while !matches!(
        watcher.next(),
        Some(ServerMessage::SubscriptionComplete { .. })
    ) {}
    let connections = h.status.connections.load(Ordering::Acquire);

    let move_all = CommitRequest {
        base_tid: h.seq.store.tid(),
        index_writes: (0..10)
            .map(|o| IndexWrite {
                object: ObjectId(100 + o),
                index: h.t.indices[0],
                value: Some(b("x")),
            })
            .collect(),
        ..CommitRequest::default()
    };
    h.step(&mut a, move_all);
    assert!(s.closed.is_cancelled(), "the push would not fit in a frame");
    assert_eq!(
        h.status.connections.load(Ordering::Acquire),
        connections - 1
    );
    let push = watcher.commit_push();
    assert_eq!(
        push.index_writes.len(),
        1,
        "others get their part: {push:?}"
    );
}

#[test]
fn objects_over_a_quarter_and_commits_over_half_of_the_frame_are_refused() {
    let config = ServerConfig {
        max_frame: 4000,
        ..ServerConfig::new("t")
    };
    let (mut h, mut a) = harness(config);
    let req = h.create(100, "x");
    h.step(&mut a, req);
    // The limit is 1000 bytes per object and 2000 per commit, each entry counting 24 bytes more
    // than its value: object 100 grows to 896 bytes, then a commit of 968 bytes would take it
    // to 1016.
    let grow = h.set_a(100, &"v".repeat(400));
    h.step(&mut a, grow);
    let too_big = CommitRequest {
        base_tid: h.seq.store.tid(),
        writes: vec![FieldWrite {
            object: ObjectId(100),
            field: h.t.fields[0],
            value: Some(b(&"v".repeat(520))),
        }],
        index_writes: vec![IndexWrite {
            object: ObjectId(100),
            index: h.t.indices[0],
            value: Some(b(&"v".repeat(400))),
        }],
        ..CommitRequest::default()
    };
    h.commit(&a, too_big);
    match a.result() {
        CommitOutcome::Invalid { reason, limit } => {
            assert_eq!(limit, Some(odb_wire::limits::Limit::ObjectSize), "{reason}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let many = create_many(&h, 200, 40, "x");
    h.commit(&a, many);
    match a.result() {
        CommitOutcome::Invalid { reason, limit } => {
            assert_eq!(limit, Some(odb_wire::limits::Limit::CommitSize), "{reason}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(a.next().is_none());
}
