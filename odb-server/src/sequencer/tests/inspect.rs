//! What the inspector asks of the sequencer: bounded pages, connections with their targets, and
//! the commit feed's bounded summaries.

use super::streaming::create_many;
use super::*;
use crate::sequencer::feed::{ChangeKind, FeedValue, MAX_COPIED, MAX_OBJECTS, MAX_VALUE};
use crate::sequencer::inspect::{Answer, Query, MAX_PAGE};

fn ask(h: &mut Harness, query: Query) -> Answer {
    let (reply, mut answer) = oneshot::channel();
    h.seq.handle(Request::Inspect { query, reply });
    answer.try_recv().expect("answered at once")
}

#[test]
fn objects_are_listed_a_bounded_page_at_a_time() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let req = create_many(&h, 100, 5, "x");
    h.step(&mut a, req);
    let ty = h.t.type_id;
    let page = |h: &mut Harness, after, limit| match ask(
        h,
        Query::Objects {
            ty,
            after: ObjectId(after),
            limit,
        },
    ) {
        Answer::Objects { objects, more } => {
            (objects.iter().map(|o| o.id.0).collect::<Vec<_>>(), more)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(page(&mut h, 0, 2), (vec![100, 101], true));
    assert_eq!(page(&mut h, 101, 2), (vec![102, 103], true));
    assert_eq!(page(&mut h, 103, 2), (vec![104], false));
    assert_eq!(page(&mut h, 103, 10), (vec![104], false));
    // A limit of zero still shows one object; a limit over the cap is cut to it.
    assert_eq!(page(&mut h, 0, 0), (vec![100], true));
    let req = create_many(&h, 1000, MAX_PAGE as u64 + 10, "y");
    h.step(&mut a, req);
    let (ids, more) = page(&mut h, 999, usize::MAX);
    assert_eq!((ids.len(), more), (MAX_PAGE, true));
    assert_eq!(page(&mut h, u64::MAX, 10), (vec![], false));
    let unknown = ask(
        &mut h,
        Query::Objects {
            ty: odb_wire::TypeId(9999),
            after: ObjectId(0),
            limit: 10,
        },
    );
    assert!(matches!(unknown, Answer::Objects { ref objects, more: false } if objects.is_empty()));
    match ask(&mut h, Query::Object(ObjectId(102))) {
        Answer::Object(Some(object)) => assert_eq!(object.id, ObjectId(102)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ask(&mut h, Query::Object(ObjectId(7777))),
        Answer::Object(None)
    ));
}

#[test]
fn connections_are_listed_with_their_targets() {
    let (mut h, a) = harness(ServerConfig::new("t"));
    h.subscribe(&a, vec![SubscriptionTarget::Type(h.t.type_id)]);
    h.subscribe(&a, vec![SubscriptionTarget::Object(ObjectId(4242))]);
    let b = connect(&mut h.seq, usize::MAX);
    let Answer::Connections { list, total } = ask(&mut h, Query::Connections) else {
        panic!("not a connection list")
    };
    assert_eq!(total, 2);
    let ids: Vec<ObjectId> = list.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
    let first = &list[0];
    assert_eq!((first.held.types, first.held.objects), (1, 1));
    let all = h.seq.registry.type_info(h.t.type_id).unwrap().all_index;
    assert_eq!(first.indices, vec![(all, Bytes::new())]);
    assert_eq!(first.objects, vec![ObjectId(4242)]);
    assert!(first.object.is_some(), "its core.Connection object");
    assert!(list[1].indices.is_empty() && list[1].objects.is_empty());
}

#[test]
fn the_feed_summarises_each_commit_in_bounded_size() {
    let (mut h, mut a) = harness(ServerConfig::new("t"));
    let mut feed = h.status.feed.follow();
    let n = MAX_OBJECTS as u64 + 5;
    let mut req = create_many(&h, 100, n, "x");
    let long = Bytes::from(vec![b'y'; MAX_VALUE + 1]);
    let write = req
        .writes
        .iter_mut()
        .find(|w| w.object == ObjectId(100) && w.field == h.t.fields[0])
        .unwrap();
    write.value = Some(long.clone());
    h.step(&mut a, req);
    let created = feed.try_recv().unwrap();
    assert_eq!(created.tid, h.seq.store.tid());
    assert_eq!(created.total, n as usize);
    assert_eq!(created.objects.len(), MAX_OBJECTS);
    let first = &created.objects[0];
    assert_eq!(
        (first.id, first.ty, first.kind),
        (ObjectId(100), h.t.type_id, ChangeKind::Created)
    );
    assert!(first
        .fields
        .contains(&(h.t.fields[0], FeedValue::Long(long.len()))));
    assert!(created.objects[1]
        .fields
        .contains(&(h.t.fields[0], FeedValue::Bytes(b("x")))));

    // Values past the summary's budget are given by their length.
    let big = vec![b'v'; MAX_VALUE];
    let mut req = create_many(&h, 500, 20, "x");
    for w in req.writes.iter_mut().filter(|w| w.field == h.t.fields[0]) {
        w.value = Some(Bytes::from(big.clone()));
    }
    h.step(&mut a, req);
    let summary = feed.try_recv().unwrap();
    let copied: usize = summary
        .objects
        .iter()
        .flat_map(|o| &o.fields)
        .map(|(_, v)| match v {
            FeedValue::Bytes(b) => b.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(copied, MAX_COPIED / MAX_VALUE * MAX_VALUE);
    assert!(summary.objects[19]
        .fields
        .contains(&(h.t.fields[0], FeedValue::Long(MAX_VALUE))));

    let req = h.set_a(101, "z");
    h.step(&mut a, req);
    let updated = feed.try_recv().unwrap();
    assert_eq!(updated.objects.len(), 1);
    assert_eq!(updated.objects[0].kind, ChangeKind::Updated);
    assert_eq!(
        updated.objects[0].fields,
        vec![(h.t.fields[0], FeedValue::Bytes(b("z")))]
    );

    let delete = CommitRequest {
        base_tid: h.seq.store.tid(),
        deletes: vec![ObjectId(102)],
        ..CommitRequest::default()
    };
    h.step(&mut a, delete);
    let deleted = feed.try_recv().unwrap();
    assert_eq!(
        (
            deleted.objects[0].id,
            deleted.objects[0].ty,
            deleted.objects[0].kind
        ),
        (ObjectId(102), h.t.type_id, ChangeKind::Deleted)
    );
    // The connection's own object: the server's commits are in the feed too.
    let _b = connect(&mut h.seq, usize::MAX);
    let connected = feed.try_recv().unwrap();
    assert_eq!(connected.objects[0].kind, ChangeKind::Created);
}
