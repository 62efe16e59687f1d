//! The bounded conflict history and `TooOld`.

use super::*;

/// Each commit sets field a of object `o` (creating it first if needed).
fn touch(f: &mut Fixture, o: u64) {
    let req = if f.store.record(ObjectId(o)).is_some() {
        CommitRequest {
            base_tid: f.store.tid(),
            writes: vec![write(o, f.t.fields[0], Some("v"))],
            ..CommitRequest::default()
        }
    } else {
        f.create_t(o, "v")
    };
    f.commit(&req).unwrap();
}

#[test]
fn old_bases_are_too_old_and_recent_ones_validate_normally() {
    let mut f = fixture();
    f.store.set_limits(Limits {
        conflict_history: 10,
        ..Limits::default()
    });
    for i in 0..100 {
        touch(&mut f, 1 + i % 7);
    }
    assert_eq!(f.store.tid(), Tid(100));
    assert_eq!(f.store.horizon(), Tid(90));

    let (u_exists, a) = (f.u.exists_field, f.t.fields[0]);
    let read_1 = |base: u64| CommitRequest {
        base_tid: Tid(base),
        writes: vec![write(50, u_exists, Some(""))],
        reads: vec![(ObjectId(1), a)],
        ..CommitRequest::default()
    };
    // Object 1 was last written at tid 99 (commits 1, 8, ..., 99 touch it).
    assert_eq!(
        f.commit(&read_1(50)).unwrap_err(),
        CommitOutcome::TooOld {
            base_tid: Tid(50),
            horizon: Tid(90)
        }
    );
    assert_eq!(
        f.commit(&read_1(89)).unwrap_err(),
        CommitOutcome::TooOld {
            base_tid: Tid(89),
            horizon: Tid(90)
        }
    );
    assert!(matches!(
        f.commit(&read_1(95)).unwrap_err(),
        CommitOutcome::Conflict {
            written_at: Tid(99),
            ..
        }
    ));
    assert_eq!(f.store.tid(), Tid(100), "nothing was applied");
    let applied = f.commit(&read_1(99)).unwrap();
    assert_eq!(applied.tid, Tid(101));
    // The horizon moved with the commit: base 90 is too old now, 91 is not.
    assert!(matches!(
        f.commit(&read_1(90)).unwrap_err(),
        CommitOutcome::TooOld {
            horizon: Tid(91),
            ..
        }
    ));
}

#[test]
fn a_key_written_before_the_horizon_validates_at_any_acceptable_base() {
    let mut f = fixture();
    f.store.set_limits(Limits {
        conflict_history: 10,
        ..Limits::default()
    });
    touch(&mut f, 1);
    for _ in 0..50 {
        touch(&mut f, 2);
    }
    let req = CommitRequest {
        base_tid: f.store.horizon(),
        writes: vec![write(3, f.t.exists_field, Some(""))],
        reads: vec![
            (ObjectId(1), f.t.fields[0]),
            (ObjectId(1), f.t.exists_field),
        ],
        ..CommitRequest::default()
    };
    assert_eq!(
        f.store.last_write(&Key::Field(ObjectId(1), f.t.fields[0])),
        Tid(0)
    );
    assert!(f.commit(&req).is_ok());
}

#[test]
fn the_stamp_map_stays_bounded() {
    let mut f = fixture();
    f.store.set_limits(Limits {
        conflict_history: 10,
        ..Limits::default()
    });
    // Every commit creates a new object (4 keys) and deletes the previous one (4 more).
    let mut peak = 0;
    for o in 1..=1000u64 {
        let mut req = f.create_t(o, &format!("v{o}"));
        if o > 1 {
            req.deletes.push(ObjectId(o - 1));
        }
        f.commit(&req).unwrap();
        peak = peak.max(f.store.conflict_stamps());
    }
    assert!(
        peak <= 10 * 8,
        "at most the keys of the last 10 commits: {peak}"
    );
    assert_eq!(f.store.object_count(), 1);
}
