//! Index values changing hands within one commit, request order, and the live stamp count.

use super::*;

impl Store {
    /// Checks that the history counts exactly the live stamps after the horizon: those of the
    /// fields of live objects and those of index values.
    fn check_live_stamps(&self) {
        let counts = |t: Tid| u64::from(self.history.counts(t));
        let fields: u64 = self
            .objects
            .iter()
            .flat_map(|l| l.obj.field_slots())
            .map(|s| counts(s.stamp))
            .sum();
        let values: u64 = self.members.iter().map(|v| counts(v.stamp())).sum();
        assert_eq!(self.history.live_count(), fields + values);
    }
}

fn moves(f: &Fixture, base: u64, to: &[(u64, Option<&str>)]) -> CommitRequest {
    CommitRequest {
        base_tid: Tid(base),
        index_writes: to
            .iter()
            .map(|&(o, v)| index(o, f.t.indices[0], v))
            .collect(),
        ..CommitRequest::default()
    }
}

#[test]
fn objects_swapping_index_values_in_one_commit() {
    let mut f = fixture();
    f.commit(&f.create_t(1, "x")).unwrap();
    f.commit(&f.create_t(2, "y")).unwrap();
    let by_a = f.t.indices[0];
    f.commit(&moves(&f, 2, &[(1, Some("y")), (2, Some("x"))]))
        .unwrap();
    assert_eq!(
        f.store.members(by_a, &b("x")).collect::<Vec<_>>(),
        [ObjectId(2)]
    );
    assert_eq!(
        f.store.members(by_a, &b("y")).collect::<Vec<_>>(),
        [ObjectId(1)]
    );
    for v in ["x", "y"] {
        assert_eq!(f.store.last_write(&Key::Index(by_a, b(v))), Tid(3));
    }
    f.store.check_live_stamps();
    // The only member leaves x while a new object joins it.
    let mut req = f.create_t(3, "x");
    req.base_tid = Tid(3);
    req.index_writes.push(index(2, by_a, Some("z")));
    f.commit(&req).unwrap();
    assert_eq!(
        f.store.members(by_a, &b("x")).collect::<Vec<_>>(),
        [ObjectId(3)]
    );
    assert_eq!(f.store.last_write(&Key::Index(by_a, b("x"))), Tid(4));
    assert_eq!(f.store.last_write(&Key::Index(by_a, b("z"))), Tid(4));
    assert_eq!(f.store.last_write(&Key::Index(by_a, b("y"))), Tid(3));
    f.store.check_live_stamps();
}

#[test]
fn values_held_only_during_a_commit_are_stamped() {
    let mut f = fixture();
    f.commit(&f.create_t(1, "x")).unwrap();
    let by_a = f.t.indices[0];
    f.commit(&moves(&f, 1, &[(1, Some("m")), (1, Some("z"))]))
        .unwrap();
    for v in ["x", "m", "z"] {
        assert_eq!(f.store.last_write(&Key::Index(by_a, b(v))), Tid(2), "{v}");
    }
    assert_eq!(f.store.members(by_a, &b("m")).count(), 0);
    assert_eq!(
        f.store.members(by_a, &b("z")).collect::<Vec<_>>(),
        [ObjectId(1)]
    );
    // Going away and back to the same value stamps it, though the object stays.
    f.commit(&moves(&f, 2, &[(1, Some("q")), (1, Some("z"))]))
        .unwrap();
    assert_eq!(f.store.last_write(&Key::Index(by_a, b("z"))), Tid(3));
    assert_eq!(f.store.last_write(&Key::Index(by_a, b("q"))), Tid(3));
    assert_eq!(
        f.store.members(by_a, &b("z")).collect::<Vec<_>>(),
        [ObjectId(1)]
    );
    f.store.check_live_stamps();
}

#[test]
fn an_object_created_and_deleted_in_one_commit_stamps_what_it_wrote() {
    let mut f = fixture();
    f.commit(&f.create_t(1, "x")).unwrap();
    let mut req = f.create_t(2, "y");
    req.base_tid = Tid(1);
    req.deletes.push(ObjectId(2));
    let applied = f.commit(&req).unwrap();
    assert!(applied.get(ObjectId(2)).unwrap().created());
    let all = Key::Index(f.t.all_index, Bytes::new());
    for key in [
        Key::Field(ObjectId(2), f.t.fields[0]),
        Key::Field(ObjectId(2), f.t.exists_field),
        Key::Index(f.t.indices[0], b("y")),
        all,
    ] {
        assert_eq!(f.store.last_write(&key), Tid(2), "{key:?}");
    }
    assert_eq!(
        f.store.last_write(&Key::Index(f.t.indices[0], b("x"))),
        Tid(1)
    );
    f.store.check_live_stamps();
}

/// A commit creating objects 1..=n with a = "v{o}", moving object 1 to "moved", writing b twice
/// to object 2 and deleting object 3, with its writes in the given order.
fn mixed(
    f: &Fixture,
    n: u64,
    order: impl Fn(&mut Vec<FieldWrite>, &mut Vec<IndexWrite>),
) -> CommitRequest {
    let mut req = CommitRequest {
        base_tid: f.store.tid(),
        ..CommitRequest::default()
    };
    for o in 1..=n {
        let v = format!("v{o}");
        req.writes.push(write(o, f.t.exists_field, Some("")));
        req.writes.push(write(o, f.t.fields[0], Some(&v)));
        req.index_writes.push(index(o, f.t.indices[0], Some(&v)));
    }
    req.writes.push(write(2, f.t.fields[1], Some("first")));
    req.writes.push(write(2, f.t.fields[1], Some("second")));
    req.index_writes
        .push(index(1, f.t.indices[0], Some("moved")));
    req.deletes.push(ObjectId(3));
    order(&mut req.writes, &mut req.index_writes);
    req
}

#[test]
fn request_order_only_matters_between_writes_to_the_same_key() {
    let mut sorted = fixture();
    let mut reversed = fixture();
    let n = 50;
    let applied = sorted.commit(&mixed(&sorted, n, |_, _| {})).unwrap();
    // Reverse the objects, keeping the order of the writes to each one.
    let shuffled = mixed(&reversed, n, |w, i| {
        w.sort_by_key(|w| std::cmp::Reverse(w.object));
        i.sort_by_key(|w| std::cmp::Reverse(w.object));
    });
    assert!(shuffled.writes.first().unwrap().object == ObjectId(n));
    let applied_reversed = reversed.commit(&shuffled).unwrap();
    let ids = |a: &Applied| a.objects.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&applied), (1..=n).map(ObjectId).collect::<Vec<_>>());
    assert_eq!(ids(&applied), ids(&applied_reversed));
    for o in 1..=n + 1 {
        assert_eq!(
            sorted.store.object_data(ObjectId(o)),
            reversed.store.object_data(ObjectId(o))
        );
    }
    let record = sorted.store.record(ObjectId(2)).unwrap();
    assert_eq!(record.field(sorted.t.fields[1]), Some(&b"second"[..]));
    assert!(sorted.store.record(ObjectId(3)).is_none());
    let by_a = sorted.t.indices[0];
    for (f, v) in [
        (&sorted, "moved"),
        (&sorted, "v1"),
        (&reversed, "moved"),
        (&reversed, "v1"),
    ] {
        assert_eq!(f.store.last_write(&Key::Index(by_a, b(v))), Tid(1));
    }
    assert_eq!(
        sorted.store.members(by_a, &b("moved")).collect::<Vec<_>>(),
        [ObjectId(1)]
    );
    assert_eq!(sorted.store.members(by_a, &b("v1")).count(), 0);
    assert_eq!(
        sorted
            .store
            .members(sorted.t.all_index, &Bytes::new())
            .count(),
        n as usize - 1
    );
    assert_eq!(
        sorted.store.conflict_stamps(),
        reversed.store.conflict_stamps()
    );
    sorted.store.check_live_stamps();
    reversed.store.check_live_stamps();
}

#[test]
fn the_applied_commit_keeps_the_objects_as_they_were() {
    let mut f = fixture();
    f.commit(&f.create_t(1, "x")).unwrap();
    f.commit(&f.create_t(2, "y")).unwrap();
    let req = CommitRequest {
        base_tid: Tid(2),
        writes: vec![write(1, f.t.fields[1], Some("b"))],
        deletes: vec![ObjectId(2)],
        ..CommitRequest::default()
    };
    let applied = f.commit(&req).unwrap();
    let before = |o: u64| applied.get(ObjectId(o)).unwrap().before.as_ref().unwrap();
    assert_eq!(before(1).field(f.t.fields[1]), None);
    assert_eq!(before(2).field(f.t.fields[0]), Some(&b"y"[..]));
    let now = f.store.record(ObjectId(1)).unwrap();
    assert_eq!(
        now.written_at(Tid(3)).collect::<Vec<_>>(),
        [(f.t.fields[1], Some(&b"b"[..]))]
    );
    assert!(applied.get(ObjectId(7)).is_none());
}
