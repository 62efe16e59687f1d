//! Subscriptions queued as snapshots, and the commits after them.

use super::*;

/// Creates `n` objects with ids from `first`, all with a = `a`, in one commit.
pub(super) fn create_many(h: &Harness, first: u64, n: u64, a: &str) -> CommitRequest {
    let mut req = CommitRequest {
        base_tid: h.seq.store.tid(),
        ..CommitRequest::default()
    };
    for o in first..first + n {
        let one = h.create(o, a);
        req.writes.extend(one.writes);
        req.index_writes.extend(one.index_writes);
    }
    req
}

#[test]
fn a_snapshot_is_queued_whole_and_later_commits_follow_its_completion() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let req = create_many(&h, 1000, 2500, "x");
    h.step(&mut a, req);
    // A queue far too small for the snapshot's frames: a snapshot does not count against it.
    let mut s = connect(&mut h.seq, 4096);
    h.subscribe(&s, vec![SubscriptionTarget::Type(h.t.type_id)]);
    let at = h.seq.store.tid();
    // Commits made before the subscriber reads anything.
    let req = h.set_a(1000, "y");
    h.step(&mut a, req);
    let req = h.create(9000, "z");
    h.step(&mut a, req);
    assert!(!s.closed.is_cancelled());

    let mut sizes = Vec::new();
    let complete = loop {
        match s.next() {
            Some(ServerMessage::SubscriptionData { objects, .. }) => {
                if sizes.is_empty() {
                    assert!(
                        objects.to_vec()[0]
                            .fields
                            .contains(&(h.t.fields[0], b("x"))),
                        "the snapshot is as of the subscription, not later"
                    );
                }
                sizes.push(objects.len());
            }
            Some(ServerMessage::SubscriptionComplete { tid, .. }) => break tid,
            other => panic!("expected subscription data, got {other:?}"),
        }
    };
    assert_eq!(sizes, vec![1000, 1000, 500]);
    assert_eq!(complete, at);
    let change = s.commit_push();
    assert_eq!(change.tid, at.next());
    assert_eq!(change.writes.len(), 1, "a change to a subscribed object");
    let created = s.commit_push();
    assert_eq!(created.tid, at.next().next());
    assert_eq!(created.writes.len(), 2, "a new member with all its data");
    assert!(s.next().is_none());
}
