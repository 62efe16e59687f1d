//! Unsubscribing: what is dropped, what stays, and what is sent afterwards.

use super::*;

impl Harness {
    fn unsubscribe(&mut self, client: &Client, targets: Vec<SubscriptionTarget>) {
        self.send(
            client,
            ClientMessage::Unsubscribe {
                request_id: RequestId(6),
                targets,
            },
        );
    }

    /// Commits for a connection that does not see what it writes: only the result comes back.
    fn step_unseen(&mut self, client: &mut Client, req: CommitRequest) {
        self.commit(client, req);
        assert!(matches!(client.result(), CommitOutcome::Committed { .. }));
    }

    /// An object id granted to this connection.
    fn granted_id(&mut self, client: &mut Client) -> u64 {
        self.send(
            client,
            ClientMessage::RequestIds {
                request_id: RequestId(7),
                count: 1,
            },
        );
        match client.next() {
            Some(ServerMessage::Ids { block, .. }) => block.start,
            other => panic!("expected Ids, got {other:?}"),
        }
    }

    fn index_target(&self, value: &str) -> SubscriptionTarget {
        SubscriptionTarget::Index {
            index: self.t.indices[0],
            value: b(value),
        }
    }
}

impl Client {
    /// Skips a subscription's data and returns its completion tid.
    fn subscribed(&mut self) -> Tid {
        loop {
            match self.next() {
                Some(ServerMessage::SubscriptionData { .. }) => continue,
                Some(ServerMessage::SubscriptionComplete { tid, .. }) => return tid,
                other => panic!("expected subscription data, got {other:?}"),
            }
        }
    }

    /// The answer to an unsubscribe: its tid and dropped objects.
    fn unsubscribed(&mut self) -> (Tid, Vec<ObjectId>) {
        match self.next() {
            Some(ServerMessage::Unsubscribed {
                request_id: RequestId(6),
                tid,
                dropped,
            }) => (tid, dropped),
            other => panic!("expected Unsubscribed, got {other:?}"),
        }
    }
}

#[test]
fn cancelling_a_type_drops_what_nothing_else_shows() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    for (o, v) in [(100, "x"), (101, "x"), (102, "y")] {
        let req = h.create(o, v);
        h.step(&mut a, req);
    }
    let mut s = connect(&mut h.seq, usize::MAX);
    h.subscribe(
        &s,
        vec![
            SubscriptionTarget::Type(h.t.type_id),
            SubscriptionTarget::Object(ObjectId(101)),
            h.index_target("y"),
        ],
    );
    s.subscribed();
    let own_id = h.granted_id(&mut s);
    let own = h.create(own_id, "x");
    h.step(&mut s, own);

    h.unsubscribe(&s, vec![SubscriptionTarget::Type(h.t.type_id)]);
    let (tid, dropped) = s.unsubscribed();
    assert_eq!(tid, h.seq.store.tid());
    assert_eq!(
        dropped,
        vec![ObjectId(100)],
        "101 is subscribed by id, 102 by index value, the last its own creation"
    );

    // Nothing more about 100; the others keep coming.
    let req = h.set_a(100, "z");
    h.step(&mut a, req);
    assert!(s.next().is_none(), "a dropped object is no longer sent");
    for o in [101, 102, own_id] {
        let req = h.set_a(o, "w");
        if o == own_id {
            h.step_unseen(&mut a, req);
        } else {
            h.step(&mut a, req);
        }
        let push = s.commit_push();
        assert!(
            push.writes.iter().all(|w| w.object == ObjectId(o)),
            "{push:?}"
        );
    }
    // New objects of the type are not sent either, unless created by the connection itself.
    let req = h.create(103, "q");
    h.step(&mut a, req);
    assert!(s.next().is_none());
}

#[test]
fn cancelling_an_object_keeps_it_if_it_is_visible_otherwise() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let req = h.create(100, "x");
    h.step(&mut a, req);
    let mut s = connect(&mut h.seq, usize::MAX);
    h.subscribe(
        &s,
        vec![
            SubscriptionTarget::Object(ObjectId(100)),
            h.index_target("x"),
        ],
    );
    s.subscribed();
    h.unsubscribe(&s, vec![SubscriptionTarget::Object(ObjectId(100))]);
    assert_eq!(s.unsubscribed().1, Vec::<ObjectId>::new());
    h.unsubscribe(&s, vec![h.index_target("x")]);
    assert_eq!(s.unsubscribed().1, vec![ObjectId(100)]);
    let req = h.set_a(100, "x");
    h.step(&mut a, req);
    assert!(s.next().is_none());
}

#[test]
fn an_object_kept_for_leaving_a_value_is_dropped_with_that_value() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut s = connect(&mut h.seq, usize::MAX);
    h.subscribe(
        &s,
        vec![
            h.index_target("x"),
            h.index_target("z"),
            h.index_target("k"),
        ],
    );
    s.subscribed();
    for o in [100, 101, 102] {
        let req = h.create(o, "x");
        h.step(&mut a, req);
        s.commit_push();
    }
    // 100 leaves x for a value nobody subscribed to; 101 moves from x to z, still subscribed;
    // 102 leaves x, enters k, and leaves k too: it left two subscribed values.
    for (o, v) in [(100, "y"), (101, "z"), (102, "k"), (102, "y")] {
        let req = h.set_a(o, v);
        h.step(&mut a, req);
        s.commit_push();
    }
    h.unsubscribe(&s, vec![h.index_target("x")]);
    assert_eq!(
        s.unsubscribed().1,
        vec![ObjectId(100)],
        "101 is in z; 102 also left k, which is still subscribed"
    );
    h.unsubscribe(&s, vec![h.index_target("k")]);
    assert_eq!(s.unsubscribed().1, vec![ObjectId(102)]);

    // A dropped object that enters a subscribed value again arrives with all its data.
    let req = h.set_a(100, "z");
    h.step(&mut a, req);
    let push = s.commit_push();
    assert_eq!(push.writes.len(), 2, "full data: {push:?}");
}

#[test]
fn own_creations_are_never_dropped() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut s = connect(&mut h.seq, usize::MAX);
    h.subscribe(&s, vec![h.index_target("x")]);
    s.subscribed();
    let own_id = h.granted_id(&mut s);
    let own = h.create(own_id, "x");
    h.step(&mut s, own);
    let req = h.set_a(own_id, "y");
    h.step_unseen(&mut a, req);
    s.commit_push();
    h.unsubscribe(&s, vec![h.index_target("x")]);
    assert_eq!(s.unsubscribed().1, Vec::<ObjectId>::new());
    let req = h.set_a(own_id, "q");
    h.step_unseen(&mut a, req);
    s.commit_push();
}

#[test]
fn cancelling_what_was_never_subscribed_is_fine_but_unknown_ids_fail() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let req = h.create(100, "x");
    h.step(&mut a, req);
    let mut s = connect(&mut h.seq, usize::MAX);
    h.unsubscribe(
        &s,
        vec![
            SubscriptionTarget::Type(h.t.type_id),
            SubscriptionTarget::Object(ObjectId(100)),
            h.index_target("x"),
        ],
    );
    assert_eq!(s.unsubscribed(), (h.seq.store.tid(), Vec::new()));
    for target in [
        SubscriptionTarget::Type(odb_wire::TypeId(99)),
        SubscriptionTarget::Index {
            index: odb_wire::IndexId(99),
            value: b("x"),
        },
    ] {
        h.subscribe(&s, vec![SubscriptionTarget::Type(h.t.type_id)]);
        s.subscribed();
        h.unsubscribe(&s, vec![SubscriptionTarget::Type(h.t.type_id), target]);
        assert!(matches!(
            s.next(),
            Some(ServerMessage::RequestFailed {
                request_id: RequestId(6),
                ..
            })
        ));
        let req = h.set_a(100, "y");
        h.step(&mut a, req);
        s.commit_push();
    }
}

#[test]
fn the_own_connection_object_survives_unsubscribing_its_type() {
    let (mut h, _a) = harness(ServerConfig::new("t"));
    let core = h.seq.connection_type.ids().clone();
    let mut s = connect(&mut h.seq, usize::MAX);
    let other = connect(&mut h.seq, usize::MAX);
    h.subscribe(&s, vec![SubscriptionTarget::Type(core.type_id)]);
    s.subscribed();
    h.unsubscribe(&s, vec![SubscriptionTarget::Type(core.type_id)]);
    let (_, dropped) = s.unsubscribed();
    assert!(dropped.contains(&other.id));
    assert!(
        !dropped.contains(&s.id),
        "its own object stays: {dropped:?}"
    );
}
