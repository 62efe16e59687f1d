//! The conflict rules on the reading side, each with a case that must conflict and a case
//! that must not: client `a` (no retries) reads, then client `b` commits while `a`'s
//! transaction is still open on its older snapshot, then `a` writes and commits. Also: reading
//! own writes, read-only transactions, and what a rejected commit leaves behind.

#[macro_use]
mod common;

use common::*;
use odb::{Error, ObjectId, Transaction};

async fn read_field_conflicts_with_a_write_of_that_field(t: Transport) -> anyhow::Result<()> {
    let read = |tx: &mut Transaction<'_>, s: Bank| -> odb::Result<()> {
        assert_eq!(s.ann.balance(tx)?, 10);
        Ok(())
    };
    // Same field written: conflict, and nothing of a's commit is applied.
    let (p, s, out) = case(t, read, |tx, s| s.ann.set_balance(tx, 11)).await?;
    assert_conflict(&out.result, out.b_tid, "field balance of bank.Account");
    assert_eq!(zed_note(&p.a, s)?, "");
    assert_eq!(p.a.view(|v| s.ann.balance(v))?, 11);

    // Same field deleted with its object: conflict.
    let (_p, _s, out) = case(t, read, |tx, s| s.ann.delete(tx)).await?;
    assert_conflict(&out.result, out.b_tid, "bank.Account object");

    // Another field of the same object written: no conflict.
    let (p, s, out) = case(t, read, |tx, s| s.ann.set_note(tx, "b".into())).await?;
    out.result?;
    assert_eq!(zed_note(&p.a, s)?, "written by a");
    p.b.flush().await?;
    assert_eq!(zed_note(&p.b, s)?, "written by a");
    assert_eq!(p.b.view(|v| s.ann.get(v))?.note, "b");
    Ok(())
}
both_transports!(
    read_field_conflicts_with_a_write_of_that_field,
    read_field_conflicts_with_a_write_of_that_field
);

async fn exists_conflicts_with_delete_and_create(t: Transport) -> anyhow::Result<()> {
    let ann_exists = |tx: &mut Transaction<'_>, s: Bank| -> odb::Result<()> {
        assert!(s.ann.exists(tx)?);
        Ok(())
    };
    let (_p, s, out) = case(t, ann_exists, |tx, s| s.ann.delete(tx)).await?;
    let what = format!("the existence of bank.Account object {}", s.ann.id());
    assert_conflict(&out.result, out.b_tid, &what);

    // `exists()` of an id nobody has created yet, then `b` creates exactly that id. Ids come out
    // of `b`'s block in order, so the next one follows the last id `b` handed out.
    let next = |s: Bank| Account::from_id(ObjectId(s.visit.id().0 + 1));
    let (_p, s, out) = case(
        t,
        |tx, s| {
            assert!(!next(s).exists(tx)?);
            Ok(())
        },
        |tx, s| {
            let created = Account::create(tx, account("new", 1))?;
            if created != next(s) {
                return Err(Error::abort(format!(
                    "expected id {:?}, got {created:?}",
                    next(s)
                )));
            }
            Ok(())
        },
    )
    .await?;
    let what = format!("the existence of bank.Account object {}", next(s).id());
    assert_conflict(&out.result, out.b_tid, &what);

    // Other objects created and deleted, and fields of `ann` written: no conflict.
    let (p, s, out) = case(t, ann_exists, |tx, s| {
        s.bob.delete(tx)?;
        s.ann.set_balance(tx, 99)?;
        s.ann.set_owner(tx, "bob".into())?;
        Account::create(tx, account("new", 1)).map(drop)
    })
    .await?;
    out.result?;
    assert_eq!(zed_note(&p.a, s)?, "written by a");
    Ok(())
}
both_transports!(
    exists_conflicts_with_delete_and_create,
    exists_conflicts_with_delete_and_create
);

async fn index_lookup_conflicts_with_membership_changes_of_that_value(
    t: Transport,
) -> anyhow::Result<()> {
    let lookup_ann = |tx: &mut Transaction<'_>, s: Bank| -> odb::Result<()> {
        assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, vec![s.ann]);
        Ok(())
    };
    type Change = fn(&mut Transaction<'_>, Bank) -> odb::Result<()>;
    let conflicting: [(&str, Change); 4] = [
        ("create into the value", |tx, _| {
            Account::create(tx, account("ann", 5)).map(drop)
        }),
        ("move into the value", |tx, s| {
            s.bob.set_owner(tx, "ann".into())
        }),
        ("move out of the value", |tx, s| {
            s.ann.set_owner(tx, "carol".into())
        }),
        ("delete from the value", |tx, s| s.ann.delete(tx)),
    ];
    for (name, change) in conflicting {
        let (_p, _s, out) = case(t, lookup_ann, change).await?;
        assert!(out.result.is_err(), "{name}: expected a conflict");
        assert_conflict(&out.result, out.b_tid, "index owner of bank.Account");
    }

    let harmless: [(&str, Change); 4] = [
        ("create with another value", |tx, _| {
            Account::create(tx, account("bob", 5)).map(drop)
        }),
        ("move between other values", |tx, s| {
            s.bob.set_owner(tx, "carol".into())
        }),
        ("write a non-indexed field", |tx, s| {
            s.ann.set_balance(tx, 1)
        }),
        ("delete with another value", |tx, s| s.bob.delete(tx)),
    ];
    for (name, change) in harmless {
        let (p, s, out) = case(t, lookup_ann, change).await?;
        assert!(out.result.is_ok(), "{name}: unexpected {:?}", out.result);
        assert_eq!(zed_note(&p.a, s)?, "written by a");
    }
    Ok(())
}
both_transports!(
    index_lookup_conflicts_with_membership_changes_of_that_value,
    index_lookup_conflicts_with_membership_changes_of_that_value
);

async fn all_of_type_lookup_conflicts_with_create_and_delete(t: Transport) -> anyhow::Result<()> {
    let all = |tx: &mut Transaction<'_>, s: Bank| -> odb::Result<()> {
        assert_eq!(Account::lookup_all(tx)?, vec![s.ann, s.bob, s.zed]);
        Ok(())
    };
    let (_p, _s, out) = case(t, all, |tx, _| {
        Account::create(tx, account("carol", 1)).map(drop)
    })
    .await?;
    assert_conflict(
        &out.result,
        out.b_tid,
        "the set of all bank.Account objects",
    );

    let (_p, _s, out) = case(t, all, |tx, s| s.bob.delete(tx)).await?;
    assert_conflict(
        &out.result,
        out.b_tid,
        "the set of all bank.Account objects",
    );

    // Another type created, fields (indexed or not) changed: no conflict.
    let (p, s, out) = case(t, all, |tx, s| {
        Visit::create(tx, visit("bob", 1, 1))?;
        s.bob.set_owner(tx, "carol".into())?;
        s.bob.set_balance(tx, 0)
    })
    .await?;
    out.result?;
    assert_eq!(zed_note(&p.a, s)?, "written by a");
    Ok(())
}
both_transports!(
    all_of_type_lookup_conflicts_with_create_and_delete,
    all_of_type_lookup_conflicts_with_create_and_delete
);

async fn reading_own_write_records_no_read(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        |tx| {
            s.ann.set_balance(tx, 100)?;
            assert_eq!(s.ann.balance(tx)?, 100);
            assert_eq!(s.ann.get(tx)?.balance, 100);
            Ok(())
        },
        |tx| s.ann.set_balance(tx, 50),
        nothing,
    )
    .await?;
    out.result?;
    assert_eq!(p.a.view(|v| s.ann.balance(v))?, 100);
    Ok(())
}
both_transports!(
    reading_own_write_records_no_read,
    reading_own_write_records_no_read
);

async fn read_only_transaction_never_fails(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let before = p.server_tid();
    let reads = |tx: &mut Transaction<'_>| -> odb::Result<()> {
        assert_eq!(s.ann.balance(tx)?, 10);
        assert!(s.bob.exists(tx)?);
        assert_eq!(Account::lookup_all(tx)?, vec![s.ann, s.bob, s.zed]);
        assert_eq!(Account::lookup_one_by_owner(tx, "bob")?, s.bob);
        Ok(())
    };
    let out = interleave(
        &p,
        reads,
        |tx| {
            s.ann.set_balance(tx, 11)?;
            s.bob.delete(tx)?;
            Account::create(tx, account("bob", 1)).map(drop)
        },
        // The same reads again: still the snapshot's data.
        reads,
    )
    .await?;
    out.result?;
    assert_eq!(out.attempts, 1);
    assert_eq!(
        p.a.flush().await?,
        before.next(),
        "a read-only transaction takes no tid"
    );
    assert_eq!(p.a.view(|v| s.ann.balance(v))?, 11);
    Ok(())
}
both_transports!(
    read_only_transaction_never_fails,
    read_only_transaction_never_fails
);

async fn conflicting_commit_changes_nothing(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let before = p.server_tid();
    let out = interleave(
        &p,
        |tx| s.ann.balance(tx).map(drop),
        |tx| s.ann.set_balance(tx, 11),
        |tx| {
            s.ann.set_note(tx, "a".into())?;
            s.bob.delete(tx)?;
            s.visit.set_count(tx, 9)?;
            s.zed.set_owner(tx, "ann".into())?;
            Account::create(tx, account("carol", 3)).map(drop)
        },
    )
    .await?;
    assert_conflict(&out.result, out.b_tid, "field balance of bank.Account");
    assert_eq!(out.b_tid, before.next());
    assert_eq!(
        p.a.flush().await?,
        out.b_tid,
        "the rejected commit took no tid"
    );
    assert_eq!(p.server_tid(), out.b_tid);
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert_eq!(s.ann.get(v)?, account("ann", 11));
            assert!(s.bob.exists(v)?);
            assert_eq!(s.visit.count(v)?, 0);
            assert_eq!(Account::lookup_all(v)?, vec![s.ann, s.bob, s.zed]);
            assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![s.ann]);
            assert!(Account::lookup_all_by_owner(v, "carol")?.is_empty());
            Ok::<_, odb::Error>(())
        })?;
    }
    // The next successful commit takes the very next tid.
    p.b.transaction(|tx| s.zed.set_balance(tx, 1)).await?;
    assert_eq!(p.a.flush().await?, out.b_tid.next());
    Ok(())
}
both_transports!(
    conflicting_commit_changes_nothing,
    conflicting_commit_changes_nothing
);

async fn conflicted_transaction_is_retried_on_a_fresh_snapshot(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let retrying = connect(&p.server, t).await?;
    retrying.subscribe(bank::schema()).await?;
    retrying.flush().await?;
    let out = interleave_on(
        &retrying,
        &p,
        |tx| s.ann.balance(tx).map(drop),
        |tx| s.ann.set_balance(tx, 20),
        |tx| {
            let balance = s.ann.balance(tx)?;
            s.ann.set_note(tx, format!("saw {balance}"))
        },
    )
    .await?;
    out.result?;
    assert_eq!(out.attempts, 2, "one conflict, then one successful attempt");
    assert_eq!(retrying.view(|v| s.ann.note(v))?, "saw 20");
    Ok(())
}
both_transports!(
    conflicted_transaction_is_retried_on_a_fresh_snapshot,
    conflicted_transaction_is_retried_on_a_fresh_snapshot
);
