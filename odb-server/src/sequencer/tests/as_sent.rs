//! Commits answered `CommittedAsSent`: not pushed back to a committer that speaks protocol
//! version 3 and saw everything its commit touched, which applies its own request instead.

use super::*;

/// A connection speaking the current protocol version.
fn current(h: &mut Harness) -> Client {
    connect_speaking(&mut h.seq, usize::MAX, odb_wire::PROTOCOL_VERSION)
}

/// Subscribes `client` to one value of the test type's index, and takes the completion.
fn subscribe_to_value(h: &mut Harness, client: &mut Client, value: &str) {
    h.subscribe(
        client,
        vec![SubscriptionTarget::Index {
            index: h.t.indices[0],
            value: b(value),
        }],
    );
    assert!(matches!(
        client.next(),
        Some(ServerMessage::SubscriptionComplete { .. })
    ));
}

/// A first id of the connection's block (granted right after its own id).
fn own_id(client: &Client) -> u64 {
    client.id.0 + 1
}

#[test]
fn own_creations_and_updates_are_answered_as_sent_and_pushed_to_the_others() {
    let (mut h, mut watcher) = harness(ServerConfig::new("t"));
    h.subscribe(&watcher, vec![SubscriptionTarget::Type(h.t.type_id)]);
    assert!(matches!(
        watcher.next(),
        Some(ServerMessage::SubscriptionComplete { .. })
    ));
    let mut c = current(&mut h);
    let o = own_id(&c);

    let base = h.seq.store.tid();
    h.commit(&c, h.create(o, "x"));
    assert_eq!(
        c.result(),
        CommitOutcome::CommittedAsSent { tid: base.next() }
    );
    assert!(
        c.next().is_none(),
        "nothing is pushed back to the committer"
    );
    let push = watcher.commit_push();
    assert_eq!((push.tid, push.writes.len()), (base.next(), 2));
    assert_eq!(
        push.index_writes.len(),
        2,
        "the watcher gets the by_a index and the all-objects index"
    );

    h.commit(&c, h.set_a(o, "y"));
    assert_eq!(
        c.result(),
        CommitOutcome::CommittedAsSent {
            tid: base.next().next()
        }
    );
    assert!(c.next().is_none());
    assert_eq!(watcher.commit_push().writes.len(), 1);

    // A deletion of an object it sees, too.
    let delete = CommitRequest {
        base_tid: h.seq.store.tid(),
        deletes: vec![ObjectId(o)],
        ..CommitRequest::default()
    };
    h.commit(&c, delete);
    assert!(matches!(c.result(), CommitOutcome::CommittedAsSent { .. }));
    assert_eq!(watcher.commit_push().deletes, vec![ObjectId(o)]);
}

#[test]
fn a_commit_touching_an_object_the_committer_did_not_see_is_answered_as_before() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    h.step(&mut a, h.create(100, "x"));
    let mut c = current(&mut h);

    // An update of an object it does not see: what it holds is not what the commit made.
    h.commit(&c, h.set_a(100, "y"));
    assert!(matches!(c.result(), CommitOutcome::Committed { .. }));
    assert!(c.next().is_none(), "it still sees nothing of the object");
    a.commit_push();

    // The same with a creation of its own in the same commit: pushed back, as before.
    let mut both = h.create(own_id(&c), "z");
    both.writes.extend(h.set_a(100, "w").writes);
    both.index_writes.extend(h.set_a(100, "w").index_writes);
    h.commit(&c, both);
    let push = c.commit_push();
    assert!(push.writes.iter().all(|w| w.object.0 == own_id(&c)));
    assert!(matches!(c.result(), CommitOutcome::Committed { .. }));

    // A deletion of it as well.
    let delete = CommitRequest {
        base_tid: h.seq.store.tid(),
        deletes: vec![ObjectId(100)],
        ..CommitRequest::default()
    };
    h.commit(&c, delete);
    assert!(matches!(c.result(), CommitOutcome::Committed { .. }));
    assert!(c.next().is_none());
}

#[test]
fn an_object_the_commit_brings_into_view_is_pushed_in_full() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut c = current(&mut h);
    subscribe_to_value(&mut h, &mut c, "seen");
    h.step(&mut a, h.create(100, "hidden"));
    assert!(c.next().is_none());

    // Moving it into the subscribed value: the committer needs what it did not write (here
    // the existence field).
    h.commit(&c, h.set_a(100, "seen"));
    let push = c.commit_push();
    assert_eq!(push.writes.len(), 2, "the full object: {push:?}");
    assert!(matches!(c.result(), CommitOutcome::Committed { .. }));
}

#[test]
fn the_welcome_says_the_version_both_sides_speak() {
    // `connect_speaking` checks the welcome's version.
    let (mut h, _a) = harness(ServerConfig::new("t"));
    for version in [
        odb_wire::OLDEST_PROTOCOL_VERSION,
        odb_wire::PROTOCOL_VERSION,
    ] {
        connect_speaking(&mut h.seq, usize::MAX, version);
    }
}

#[test]
fn an_object_created_and_deleted_by_the_commit_is_answered_as_before() {
    let (mut h, _a) = harness(ServerConfig::new("t"));
    let mut c = current(&mut h);
    let mut req = h.create(own_id(&c), "gone");
    req.deletes.push(ObjectId(own_id(&c)));
    h.commit(&c, req);
    assert!(matches!(c.result(), CommitOutcome::Committed { .. }));
    assert!(c.next().is_none(), "nothing of it is pushed");
}

#[test]
fn an_object_moved_out_of_a_subscribed_value_is_answered_as_sent_and_stays_visible() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut c = current(&mut h);
    subscribe_to_value(&mut h, &mut c, "x");
    h.step(&mut a, h.create(100, "x"));
    assert_eq!(c.commit_push().writes.len(), 2, "it enters the value");

    h.commit(&c, h.set_a(100, "y"));
    assert!(matches!(c.result(), CommitOutcome::CommittedAsSent { .. }));
    assert!(c.next().is_none());
    a.commit_push();

    // Having been seen in the value, it stays visible after leaving it.
    h.step(&mut a, h.set_a(100, "z"));
    assert_eq!(c.commit_push().writes[0].value, Some(b("z")));
}
