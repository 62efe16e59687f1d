//! What a client sees: its own commits, other clients' commits through its subscriptions, stable
//! snapshots, authentication, and reads of data it did not subscribe to.

#[macro_use]
mod common;

use common::*;
use odb::{Error, Ref};

async fn commit_is_visible_locally_when_transaction_returns(t: Transport) -> anyhow::Result<()> {
    let server = start_server().await?;
    let db = connect(&server, t).await?;
    db.subscribe(bank::schema()).await?;
    for round in 0..20i64 {
        let acc = db
            .transaction(|tx| Account::create(tx, account("ann", round)))
            .await?;
        // No flush, no waiting: the replica already has the commit.
        assert_eq!(db.view(|v| acc.get(v))?, account("ann", round));
        db.transaction(|tx| acc.set_balance(tx, round * 10)).await?;
        assert_eq!(db.view(|v| acc.balance(v))?, round * 10);
        db.transaction(|tx| acc.delete(tx)).await?;
        assert!(!db.view(|v| acc.exists(v))?);
    }
    assert_eq!(db.current_tid(), server.inner().current_tid());
    Ok(())
}
both_transports!(
    commit_is_visible_locally_when_transaction_returns,
    commit_is_visible_locally_when_transaction_returns
);

async fn view_snapshot_stays_stable_while_commits_arrive(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let (ann, bob) = p
        .setup(|tx| {
            Ok((
                Account::create(tx, account("ann", 10))?,
                Account::create(tx, account("bob", 20))?,
            ))
        })
        .await?;
    let db = &p.a;
    db.view(|v| {
        assert_eq!(ann.balance(v)?, 10);
        // Another client commits, and this client's replica applies the commit, while `v`
        // is still open.
        let carol = run_now(async {
            let carol =
                p.b.transaction(|tx| {
                    ann.set_balance(tx, 11)?;
                    bob.delete(tx)?;
                    Account::create(tx, account("ann", 30))
                })
                .await?;
            db.wait_for(|fresh| carol.exists(fresh), WAIT).await?;
            Ok::<_, Error>(carol)
        })?;
        assert!(db.current_tid() > odb::Read::tid(v));
        // `v` still reads its snapshot...
        assert_eq!(ann.balance(v)?, 10);
        assert_eq!(bob.get(v)?, account("bob", 20));
        assert!(!carol.exists(v)?);
        assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![ann]);
        // ...while a fresh view sees the new commit.
        db.view(|fresh| {
            assert_eq!(ann.balance(fresh)?, 11);
            assert!(!bob.exists(fresh)?);
            assert_eq!(
                Account::lookup_all_by_owner(fresh, "ann")?,
                vec![ann, carol]
            );
            Ok::<_, odb::Error>(())
        })?;
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}
both_transports!(
    view_snapshot_stays_stable_while_commits_arrive,
    view_snapshot_stays_stable_while_commits_arrive
);

async fn subscribed_clients_see_each_others_commits(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let acc =
        p.a.transaction(|tx| Account::create(tx, account("ann", 1)))
            .await?;
    p.b.wait_for(|v| acc.exists(v), WAIT).await?;
    assert_eq!(p.b.view(|v| acc.get(v))?, account("ann", 1));

    p.b.transaction(|tx| acc.set_balance(tx, 2)).await?;
    p.a.wait_for(|v| Ok(acc.balance(v)? == 2), WAIT).await?;

    // A run of commits arrives complete and in order.
    for i in 0..50 {
        p.a.transaction(|tx| Visit::create(tx, visit("ann", i, u64::from(i))).map(drop))
            .await?;
    }
    p.b.wait_for(|v| Ok(Visit::lookup_all(v)?.len() == 50), WAIT)
        .await?;
    p.b.view(|v| {
        for (i, visit) in Visit::lookup_all(v)?.into_iter().enumerate() {
            assert_eq!(visit.day(v)?, i as u32);
        }
        Ok::<_, odb::Error>(())
    })?;

    p.b.transaction(|tx| acc.delete(tx)).await?;
    p.a.wait_for(|v| Ok(!acc.exists(v)?), WAIT).await?;
    assert_eq!(p.a.flush().await?, p.b.flush().await?);
    Ok(())
}
both_transports!(
    subscribed_clients_see_each_others_commits,
    subscribed_clients_see_each_others_commits
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_in_process_clients_share_data() -> anyhow::Result<()> {
    let server = start_server().await?;
    let tcp = connect(&server, Transport::Tcp).await?;
    let local = server.client().await?;
    tcp.subscribe(bank::schema()).await?;
    local.subscribe(bank::schema()).await?;
    let acc = tcp
        .transaction(|tx| Account::create(tx, account("ann", 1)))
        .await?;
    local.wait_for(|v| acc.exists(v), WAIT).await?;
    local.transaction(|tx| acc.set_balance(tx, 2)).await?;
    tcp.wait_for(|v| Ok(acc.balance(v)? == 2), WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn views_never_see_half_a_commit() -> anyhow::Result<()> {
    const TRANSFERS: i64 = 200;
    let p = Pair::new(Transport::Tcp).await?;
    let (x, y) = p
        .setup(|tx| {
            Ok((
                Account::create(tx, account("x", 100))?,
                Account::create(tx, account("y", 0))?,
            ))
        })
        .await?;
    let writer = p.b.clone();
    let writing = tokio::spawn(async move {
        for _ in 0..TRANSFERS {
            writer
                .transaction(|tx| {
                    let (bx, by) = (x.balance(tx)?, y.balance(tx)?);
                    x.set_balance(tx, bx - 1)?;
                    y.set_balance(tx, by + 1)
                })
                .await?;
        }
        Ok::<_, Error>(())
    });
    p.a.wait_for(
        |v| {
            let (bx, by) = (x.balance(v)?, y.balance(v)?);
            if bx + by != 100 {
                return Err(Error::abort(format!("saw half a commit: {bx} + {by}")));
            }
            Ok(by == TRANSFERS)
        },
        WAIT,
    )
    .await?;
    writing.await??;
    Ok(())
}

async fn wrong_token_is_unauthorized_and_server_keeps_serving(t: Transport) -> anyhow::Result<()> {
    let server = start_server().await?;
    let good = connect(&server, t).await?;
    good.subscribe(bank::schema()).await?;
    let connections = server.inner().connection_count();
    let tid = server.inner().current_tid();
    for token in ["wrong", "", &TOKEN[..TOKEN.len() - 1]] {
        let bad = try_connect(&server, t, None, token).await;
        assert!(
            matches!(bad, Err(Error::Unauthorized)),
            "token {token:?}: {bad:?}"
        );
    }
    assert_eq!(server.inner().connection_count(), connections);
    assert_eq!(
        server.inner().current_tid(),
        tid,
        "a rejected client changes nothing"
    );
    // The existing client still commits, and new clients still connect.
    let acc = good
        .transaction(|tx| Account::create(tx, account("ann", 1)))
        .await?;
    let late = connect(&server, t).await?;
    late.subscribe(bank::schema()).await?;
    assert_eq!(late.view(|v| acc.get(v))?, account("ann", 1));
    assert_eq!(server.inner().connection_count(), connections + 1);
    Ok(())
}
both_transports!(
    wrong_token_is_unauthorized_and_server_keeps_serving,
    wrong_token_is_unauthorized_and_server_keeps_serving
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_unsubscribed_type_is_not_subscribed() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let acc = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    let c = connect(&p.server, Transport::Tcp).await?;
    let not_subscribed = |r: odb::Result<_>| matches!(r, Err(Error::NotSubscribed { .. }));
    c.view(|v| {
        assert!(not_subscribed(Account::lookup_all(v).map(drop)));
        assert!(not_subscribed(
            Account::lookup_all_by_owner(v, "ann").map(drop)
        ));
        assert!(not_subscribed(acc.balance(v).map(drop)));
        assert!(not_subscribed(acc.exists(v).map(drop)));
        Ok::<_, odb::Error>(())
    })?;
    let in_tx = c.transaction(|tx| acc.balance(tx)).await;
    assert!(not_subscribed(in_tx.map(drop)));

    c.subscribe_type::<Account>().await?;
    c.view(|v| {
        assert_eq!(acc.get(v)?, account("ann", 1));
        assert!(not_subscribed(Visit::lookup_all(v).map(drop)));
        Ok::<_, odb::Error>(())
    })?;
    let message = c.view(|v| Visit::lookup_all(v)).unwrap_err().to_string();
    assert!(message.contains("bank.Visit"), "{message}");
    Ok(())
}

async fn index_subscription_sees_its_value_and_objects_moving_in(
    t: Transport,
) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let (ann, bob) = p
        .setup(|tx| {
            Ok((
                Account::create(tx, account("ann", 1))?,
                Account::create(tx, account("bob", 2))?,
            ))
        })
        .await?;
    let c = connect(&p.server, t).await?;
    c.subscribe_index(Account::owner_index("ann")).await?;
    c.view(|v| {
        assert_eq!(Account::lookup_all(v)?, vec![ann]);
        assert_eq!(ann.get(v)?, account("ann", 1));
        assert!(!bob.exists(v)?);
        Ok::<_, odb::Error>(())
    })?;

    // Changes to objects outside the value do not arrive...
    p.b.transaction(|tx| {
        bob.set_balance(tx, 42)?;
        bob.set_note(tx, "moved".into())?;
        Account::create(tx, account("carol", 3)).map(drop)
    })
    .await?;
    c.flush().await?;
    c.view(|v| {
        assert_eq!(Account::lookup_all(v)?, vec![ann]);
        assert!(!bob.exists(v)?);
        Ok::<_, odb::Error>(())
    })?;
    // ...until one moves into it: then it arrives with all its current data.
    p.b.transaction(|tx| bob.set_owner(tx, "ann".into()))
        .await?;
    c.wait_for(|v| bob.exists(v), WAIT).await?;
    let expected = Account {
        owner: "ann".into(),
        balance: 42,
        note: "moved".into(),
    };
    assert_eq!(c.view(|v| bob.get(v))?, expected);
    // New objects with the value arrive too, and changes to members.
    let dave =
        p.b.transaction(|tx| {
            ann.set_balance(tx, 7)?;
            Account::create(tx, account("ann", 4))
        })
        .await?;
    c.wait_for(|v| dave.exists(v), WAIT).await?;
    c.view(|v| {
        assert_eq!(ann.balance(v)?, 7);
        assert_eq!(
            Account::lookup_all_by_owner(v, "ann")?,
            vec![ann, bob, dave]
        );
        Ok::<_, odb::Error>(())
    })?;
    // An object that leaves the value leaves the subscriber's index too.
    p.b.transaction(|tx| ann.set_owner(tx, "erin".into()))
        .await?;
    c.wait_for(
        |v| Ok(Account::lookup_all_by_owner(v, "ann")? == vec![bob, dave]),
        WAIT,
    )
    .await?;
    Ok(())
}
both_transports!(
    index_subscription_sees_its_value_and_objects_moving_in,
    index_subscription_sees_its_value_and_objects_moving_in
);

async fn object_subscription_sees_only_that_object(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let (ann, bob) = p
        .setup(|tx| {
            Ok((
                Account::create(tx, account("ann", 1))?,
                Account::create(tx, account("bob", 2))?,
            ))
        })
        .await?;
    let c = connect(&p.server, t).await?;
    c.subscribe_object(bob).await?;
    c.view(|v| {
        assert_eq!(bob.get(v)?, account("bob", 2));
        assert!(!ann.exists(v)?);
        assert_eq!(Account::lookup_all(v)?, vec![bob]);
        Ok::<_, odb::Error>(())
    })?;
    p.b.transaction(|tx| {
        ann.set_balance(tx, 10)?;
        bob.set_balance(tx, 20)
    })
    .await?;
    c.wait_for(|v| Ok(bob.balance(v)? == 20), WAIT).await?;
    assert!(!c.view(|v| ann.exists(v))?);
    p.b.transaction(|tx| bob.delete(tx)).await?;
    c.wait_for(|v| Ok(!bob.exists(v)?), WAIT).await?;
    assert_eq!(c.view(|v| Account::lookup_all(v))?, vec![]);
    Ok(())
}
both_transports!(
    object_subscription_sees_only_that_object,
    object_subscription_sees_only_that_object
);

async fn own_creations_are_visible_without_subscribing(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let theirs = p.setup(|tx| Account::create(tx, account("ann", 1))).await?;
    let c = connect(&p.server, t).await?;
    let (mine, my_visit) = c
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Account::create(tx, account("ann", 2))?,
                Visit::create(tx, visit("ann", 1, 1))?,
            ))
        })
        .await?;
    c.view(|v| {
        assert_eq!(mine.get(v)?, account("ann", 2));
        assert_eq!(my_visit.count(v)?, 1);
        assert_eq!(Account::lookup_all_by_owner(v, "ann")?, vec![mine]);
        assert!(!theirs.exists(v)?);
        Ok::<_, odb::Error>(())
    })?;
    // Changing them later needs no subscription either.
    c.transaction(|tx| mine.set_balance(tx, 3)).await?;
    assert_eq!(c.view(|v| mine.balance(v))?, 3);
    p.a.wait_for(|v| Ok(mine.exists(v)? && mine.balance(v)? == 3), WAIT)
        .await?;
    Ok(())
}
both_transports!(
    own_creations_are_visible_without_subscribing,
    own_creations_are_visible_without_subscribing
);

async fn own_creations_receive_later_changes_by_others(t: Transport) -> anyhow::Result<()> {
    let p = Pair::new(t).await?;
    let c = connect(&p.server, t).await?;
    let mine: Ref<Account> = c
        .transaction(|tx| Account::create(tx, account("ann", 1)))
        .await?;
    p.b.wait_for(|v| mine.exists(v), WAIT).await?;
    p.b.transaction(|tx| mine.set_balance(tx, 5)).await?;
    c.wait_for(|v| Ok(mine.balance(v)? == 5), WAIT).await?;
    Ok(())
}
both_transports!(
    own_creations_receive_later_changes_by_others,
    own_creations_receive_later_changes_by_others
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_data_is_complete_when_subscribe_returns() -> anyhow::Result<()> {
    let p = Pair::new(Transport::Tcp).await?;
    let created = p
        .setup(|tx| {
            (0..500)
                .map(|i| Account::create(tx, account(&format!("owner{}", i % 7), i)))
                .collect::<odb::Result<Vec<_>>>()
        })
        .await?;
    let c = connect(&p.server, Transport::Tcp).await?;
    c.subscribe_type::<Account>().await?;
    c.view(|v| {
        assert_eq!(Account::lookup_all(v)?, created);
        assert_eq!(Account::lookup_all_by_owner(v, "owner3")?.len(), 71);
        for (i, acc) in created.iter().enumerate() {
            assert_eq!(acc.balance(v)?, i as i64);
        }
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}
