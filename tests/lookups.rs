//! Lookups, `exists()` and `delete()` as a user sees them through the client.

#[macro_use]
mod common;

use common::*;
use odb::{Error, Ref};

async fn lookups_follow_the_none_one_several_table(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let db = &p.a;
    let (one, several) = db
        .transaction(|tx| {
            let one = Account::create(tx, account("one", 1))?;
            let several = vec![
                Account::create(tx, account("several", 1))?,
                Account::create(tx, account("several", 2))?,
                Account::create(tx, account("several", 3))?,
            ];
            Ok::<_, odb::Error>((one, several))
        })
        .await?;
    db.view(|v| {
        // None.
        assert_eq!(Account::lookup_all_by_owner(v, "none")?, vec![]);
        assert_eq!(Account::lookup_any_by_owner(v, "none")?, None);
        match Account::lookup_one_by_owner(v, "none") {
            Err(e @ Error::NotFound { .. }) => {
                // The message names the value looked up.
                assert!(e.to_string().contains(r#"equal to "none""#), "{e}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(Account::lookup_unique_by_owner(v, "none")?, None);
        // One.
        assert_eq!(Account::lookup_all_by_owner(v, "one")?, vec![one]);
        assert_eq!(Account::lookup_any_by_owner(v, "one")?, Some(one));
        assert_eq!(Account::lookup_one_by_owner(v, "one")?, one);
        assert_eq!(Account::lookup_unique_by_owner(v, "one")?, Some(one));
        // Several: all ascending, any and one the lowest id, unique an error.
        assert_eq!(Account::lookup_all_by_owner(v, "several")?, several);
        assert_eq!(
            Account::lookup_any_by_owner(v, "several")?,
            Some(several[0])
        );
        assert_eq!(Account::lookup_one_by_owner(v, "several")?, several[0]);
        match Account::lookup_unique_by_owner(v, "several") {
            Err(Error::NotUnique { count, .. }) => assert_eq!(count, 3),
            other => panic!("expected NotUnique, got {other:?}"),
        }
        // No index: every object of the type.
        let mut all = vec![one];
        all.extend(&several);
        all.sort();
        assert_eq!(Account::lookup_all(v)?, all);
        assert_eq!(Account::lookup_any(v)?, Some(all[0]));
        assert_eq!(Visit::lookup_all(v)?, vec![]);
        assert_eq!(Visit::lookup_any(v)?, None);
        Ok::<_, odb::Error>(())
    })?;
    // Another client sees the same answers once it has the data.
    p.b.flush().await?;
    assert_eq!(
        p.b.view(|v| Account::lookup_all_by_owner(v, "several"))?,
        several
    );
    Ok(())
}
both_transports!(
    lookups_follow_the_none_one_several_table,
    lookups_follow_the_none_one_several_table
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_return_ascending_ids_across_clients_and_commits() -> anyhow::Result<()> {
    let p = Pair::new(Transport::Tcp).await?;
    let c = connect(&p.server, Transport::InProcess).await?;
    c.subscribe(bank::schema()).await?;
    // Three clients with three id blocks create in turns.
    let mut created: Vec<Ref<Account>> = Vec::new();
    for round in 0..3 {
        for db in [&c, &p.b, &p.a] {
            let r = db
                .transaction(|tx| Account::create(tx, account("same", round)))
                .await?;
            created.push(r);
        }
    }
    created.sort();
    for db in [&p.a, &p.b, &c] {
        db.flush().await?;
        db.view(|v| {
            assert_eq!(Account::lookup_all(v)?, created);
            assert_eq!(Account::lookup_all_by_owner(v, "same")?, created);
            assert_eq!(Account::lookup_any_by_owner(v, "same")?, Some(created[0]));
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_index_lookups_match_the_whole_tuple() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let db = &p.a;
    let (ann3, ann3b, ann4, bob3) = db
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Visit::create(tx, visit("ann", 3, 1))?,
                Visit::create(tx, visit("ann", 3, 2))?,
                Visit::create(tx, visit("ann", 4, 1))?,
                Visit::create(tx, visit("bob", 3, 1))?,
            ))
        })
        .await?;
    let key = |user: &str, day: u32| (user.to_string(), day);
    db.view(|v| {
        assert_eq!(
            Visit::lookup_all_by_user_day(v, key("ann", 3))?,
            vec![ann3, ann3b]
        );
        assert_eq!(Visit::lookup_one_by_user_day(v, key("ann", 4))?, ann4);
        assert_eq!(
            Visit::lookup_unique_by_user_day(v, key("bob", 3))?,
            Some(bob3)
        );
        assert_eq!(Visit::lookup_unique_by_user_day(v, key("bob", 4))?, None);
        assert!(matches!(
            Visit::lookup_unique_by_user_day(v, key("ann", 3)),
            Err(Error::NotUnique { count: 2, .. })
        ));
        // Borrowed forms: a `&str` for the `String` field, an untyped literal for the `u32`.
        assert_eq!(
            Visit::lookup_all_by_user_day(v, ("ann", 3))?,
            vec![ann3, ann3b]
        );
        let missing = Visit::lookup_one_by_user_day(v, ("zed", 9)).unwrap_err();
        assert!(missing.to_string().contains(r#"("zed", 9)"#), "{missing}");
        let user = String::from("bob");
        assert_eq!(Visit::lookup_one_by_user_day(v, (&user, 3))?, bob3);
        Ok::<_, odb::Error>(())
    })?;
    // The index value made from borrowed forms is the one made from owned values.
    assert_eq!(
        format!("{:?}", Visit::user_day_index(("ann", 4))),
        format!("{:?}", Visit::user_day_index(("ann".to_string(), 4u32)))
    );
    // Changing a field outside the index keeps membership; changing one inside moves it.
    db.transaction(|tx| {
        ann3.set_count(tx, 10)?;
        ann3b.set_day(tx, 4)?;
        bob3.set_user(tx, "ann".into())
    })
    .await?;
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert_eq!(
                Visit::lookup_all_by_user_day(v, key("ann", 3))?,
                vec![ann3, bob3]
            );
            assert_eq!(
                Visit::lookup_all_by_user_day(v, key("ann", 4))?,
                vec![ann3b, ann4]
            );
            assert_eq!(Visit::lookup_all_by_user_day(v, key("bob", 3))?, vec![]);
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}

/// The handles in ascending id order, as lookups return them.
fn sorted<const N: usize>(handles: [Ref<Account>; N]) -> Vec<Ref<Account>> {
    let mut handles = handles.to_vec();
    handles.sort();
    handles
}

async fn lookups_see_the_transactions_own_uncommitted_changes(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let (ann, bob) = p
        .setup(|tx| {
            Ok((
                Account::create(tx, account("ann", 1))?,
                Account::create(tx, account("bob", 2))?,
            ))
        })
        .await?;
    let check = |tx: &mut odb::Transaction<'_>| -> odb::Result<Ref<Account>> {
        let new = Account::create(tx, account("ann", 3))?;
        assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, sorted([ann, new]));
        assert_eq!(Account::lookup_all(tx)?, sorted([ann, bob, new]));
        ann.delete(tx)?;
        assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, vec![new]);
        assert_eq!(Account::lookup_all(tx)?, sorted([bob, new]));
        bob.set_owner(tx, "ann".into())?;
        assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, sorted([bob, new]));
        assert_eq!(Account::lookup_all_by_owner(tx, "bob")?, vec![]);
        new.set_owner(tx, "carol".into())?;
        assert_eq!(Account::lookup_unique_by_owner(tx, "carol")?, Some(new));
        assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, vec![bob]);
        Ok(new)
    };
    // Aborted: the own changes were visible inside, and nothing of them is committed.
    let before = p.a.flush().await?;
    let aborted =
        p.a.transaction(|tx| {
            check(tx)?;
            Err::<(), _>(Error::abort("changed my mind"))
        })
        .await;
    assert!(matches!(aborted, Err(Error::Aborted(_))), "{aborted:?}");
    assert_eq!(p.a.flush().await?, before);
    p.a.view(|v| {
        assert_eq!(Account::lookup_all(v)?, vec![ann, bob]);
        assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![ann]);
        Ok::<_, odb::Error>(())
    })?;

    // Committed: everyone sees the same index state afterwards.
    let new = p.a.transaction(check).await?;
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert_eq!(Account::lookup_all(v)?, sorted([bob, new]));
            assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![bob]);
            assert_eq!(Account::lookup_all_by_owner(v, "bob")?, vec![]);
            assert_eq!(Account::lookup_all_by_owner(v, "carol")?, vec![new]);
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}
both_transports!(
    lookups_see_the_transactions_own_uncommitted_changes,
    lookups_see_the_transactions_own_uncommitted_changes
);

async fn deleted_object_does_not_exist_and_cannot_be_read(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let ann = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    p.a.transaction(|tx| {
        assert!(ann.exists(tx)?);
        ann.delete(tx)?;
        assert!(!ann.exists(tx)?);
        assert!(matches!(
            ann.balance(tx),
            Err(Error::ObjectDoesNotExist { .. })
        ));
        assert!(matches!(ann.get(tx), Err(Error::ObjectDoesNotExist { .. })));
        Ok::<_, odb::Error>(())
    })
    .await?;
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert!(!ann.exists(v)?);
            assert!(matches!(
                ann.balance(v),
                Err(Error::ObjectDoesNotExist { .. })
            ));
            assert!(matches!(ann.get(v), Err(Error::ObjectDoesNotExist { .. })));
            assert_eq!(Account::lookup_all(v)?, vec![]);
            assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![]);
            Ok::<_, odb::Error>(())
        })?;
    }
    // Deleting it again, or writing it, in a later transaction.
    let again = p.b.transaction(|tx| ann.delete(tx)).await;
    assert!(
        matches!(again, Err(Error::ObjectDoesNotExist { .. })),
        "{again:?}"
    );
    let write = p.b.transaction(|tx| ann.set_balance(tx, 2)).await;
    assert!(
        matches!(write, Err(Error::ObjectDoesNotExist { .. })),
        "{write:?}"
    );
    // An id that never existed.
    let never = Account::from_id(odb::ObjectId(u64::MAX - 1));
    p.a.view(|v| {
        assert!(!never.exists(v)?);
        assert!(matches!(
            never.owner(v),
            Err(Error::ObjectDoesNotExist { .. })
        ));
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}
both_transports!(
    deleted_object_does_not_exist_and_cannot_be_read,
    deleted_object_does_not_exist_and_cannot_be_read
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_twice_in_one_transaction_is_object_does_not_exist() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let ann = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    let twice =
        p.a.transaction(|tx| {
            ann.delete(tx)?;
            ann.delete(tx)
        })
        .await;
    assert!(
        matches!(twice, Err(Error::ObjectDoesNotExist { .. })),
        "{twice:?}"
    );
    assert!(
        p.a.view(|v| ann.exists(v))?,
        "the failed transaction deleted nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_an_object_deleted_in_the_same_transaction_is_an_error() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let ann = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    let before = p.a.flush().await?;
    let mut seen = None;
    let out =
        p.a.transaction(|tx| {
            ann.delete(tx)?;
            let write = ann.set_balance(tx, 5);
            seen = Some(format!("{write:?}"));
            write
        })
        .await;
    assert!(
        out.is_err(),
        "writing a deleted object must fail, got {seen:?}"
    );
    // The error ended the transaction: nothing was committed, not even the delete.
    assert_eq!(p.a.flush().await?, before);
    assert_eq!(p.a.view(|v| ann.get(v))?, account("ann", 1));
    Ok(())
}

async fn create_then_delete_in_one_transaction_writes_nothing(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let existing = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    let before = p.a.flush().await?;
    let ghost =
        p.a.transaction(|tx| {
            let ghost = Account::create(tx, account("ann", 2))?;
            assert!(ghost.exists(tx)?);
            assert_eq!(ghost.balance(tx)?, 2);
            ghost.delete(tx)?;
            assert!(!ghost.exists(tx)?);
            assert_eq!(Account::lookup_all_by_owner(tx, "ann")?, vec![existing]);
            Ok::<_, odb::Error>(ghost)
        })
        .await?;
    assert_eq!(p.a.flush().await?, before, "nothing was committed");
    assert_eq!(p.server_tid(), before);
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert!(!ghost.exists(v)?);
            assert_eq!(Account::lookup_all(v)?, vec![existing]);
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}
both_transports!(
    create_then_delete_in_one_transaction_writes_nothing,
    create_then_delete_in_one_transaction_writes_nothing
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_are_ids_and_read_whole_objects() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let ann = p.setup(|tx| Account::create(tx, account("ann", 7))).await?;
    let same = Account::from_id(ann.id());
    assert_eq!(same, ann);
    p.a.view(|v| {
        assert_eq!(same.get(v)?, account("ann", 7));
        assert_eq!(same.owner(v)?, "ann");
        assert!(v.tid() >= odb::Tid(1));
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}
