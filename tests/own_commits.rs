//! A client's own commits. The server does not push a commit back to a committer that saw
//! everything it touched; the client applies what it wrote itself. After every commit, its
//! replica must hold exactly what a client that received the commit as a push holds: the same
//! objects, fields, index values and all-objects sets, and the same entries in the commits
//! stream. Commits are drawn at random (the seed is printed) and mixed with another writer's.

#[macro_use]
mod common;
mod rng;

use common::*;
use futures::StreamExt;
use odb::{Client, Ref, Transaction};
use rng::Rng;
use std::collections::BTreeMap;

const OWNERS: [&str; 3] = ["ann", "bob", "cy"];
const USERS: [&str; 2] = ["ann", "bob"];

/// Everything a client sees of the test schema, comparable across clients.
#[derive(Debug, PartialEq)]
struct Seen {
    accounts: BTreeMap<u64, Account>,
    visits: BTreeMap<u64, Visit>,
    /// Members of each owner value of the accounts' index.
    by_owner: Vec<Vec<u64>>,
    /// Members of each (user, day) value of the visits' composite index.
    by_user_day: Vec<Vec<u64>>,
}

fn seen(db: &Client) -> odb::Result<Seen> {
    db.view(|v| {
        let accounts = accounts_by_id(v)?;
        let mut visits = BTreeMap::new();
        for x in Visit::lookup_all(v)? {
            visits.insert(x.id().0, x.get(v)?);
        }
        let mut by_owner = Vec::new();
        for owner in OWNERS {
            by_owner.push(sorted_ids(Account::lookup_all_by_owner(v, owner)?));
        }
        let mut by_user_day = Vec::new();
        for user in USERS {
            for day in 0..3u32 {
                by_user_day.push(sorted_ids(Visit::lookup_all_by_user_day(
                    v,
                    (user.to_string(), day),
                )?));
            }
        }
        Ok(Seen {
            accounts,
            visits,
            by_owner,
            by_user_day,
        })
    })
}

/// A live object of each type, if any.
type Picked = (Option<Ref<Account>>, Option<Ref<Visit>>);

/// A live object of each type, drawn at random, if any.
fn pick(db: &Client, rng: &mut Rng) -> odb::Result<Picked> {
    db.view(|v| {
        let accounts = Account::lookup_all(v)?;
        let visits = Visit::lookup_all(v)?;
        let account = (!accounts.is_empty()).then(|| accounts[rng.below(accounts.len())]);
        let visit = (!visits.is_empty()).then(|| visits[rng.below(visits.len())]);
        Ok((account, visit))
    })
}

/// One random change inside a transaction. An object already deleted in it is left alone.
fn change(
    tx: &mut Transaction<'_>,
    rng: &mut Rng,
    acc: Option<Ref<Account>>,
    vis: Option<Ref<Visit>>,
) -> odb::Result<()> {
    let acc = match acc {
        Some(a) if a.exists(tx)? => Some(a),
        _ => None,
    };
    let vis = match vis {
        Some(x) if x.exists(tx)? => Some(x),
        _ => None,
    };
    let owner = OWNERS[rng.below(OWNERS.len())];
    match (rng.below(7), acc, vis) {
        (0, Some(a), _) => a.set_balance(tx, rng.between(0, 1000) as i64),
        (1, Some(a), _) => a.set_owner(tx, owner.to_string()),
        (2, Some(a), _) => a.delete(tx),
        (3, _, Some(x)) => x.set_day(tx, rng.between(0, 3) as u32),
        (4, _, Some(x)) => x.delete(tx),
        (5, _, _) => {
            let user = USERS[rng.below(USERS.len())];
            Visit::create(
                tx,
                visit(user, rng.between(0, 3) as u32, rng.next_u64() % 10),
            )
            .map(drop)
        }
        _ => Account::create(tx, account(owner, rng.between(0, 1000) as i64)).map(drop),
    }
}

async fn own_commits_leave_the_replica_as_a_push_would(t: Transport) -> anyhow::Result<()> {
    let mut rng = Rng::for_test("own_commits_leave_the_replica_as_a_push_would");
    let server = start_server().await?;
    let committer = connect(&server, t).await?;
    let other = connect(&server, t).await?;
    let observer = connect(&server, t).await?;
    for db in [&committer, &other, &observer] {
        db.subscribe(bank::schema()).await?;
    }
    let mut mine = committer.commits();
    let mut theirs = observer.commits();
    for step in 0..120u64 {
        // Mostly the committer; sometimes the other writer, whose commits reach the committer
        // as pushes between its own.
        let by_other = rng.one_in(4);
        let db = if by_other { &other } else { &committer };
        let (acc, vis) = pick(db, &mut rng)?;
        let changes = 1 + rng.below(3);
        let draw = rng.fork(step);
        db.transaction(|tx| {
            // The same draws if the transaction runs again.
            let mut draw = draw.clone();
            for _ in 0..changes {
                change(tx, &mut draw, acc, vis)?;
            }
            Ok::<_, odb::Error>(())
        })
        .await?;
        // No flush on the committer after its own commit: its replica holds the commit when
        // the transaction returns.
        if by_other {
            committer.flush().await?;
        }
        let tid = observer.flush().await?;
        assert_eq!(committer.current_tid(), tid, "step {step}");
        assert_eq!(seen(&committer)?, seen(&observer)?, "step {step}");
    }
    // Both streams report every commit alike.
    let tid = committer.current_tid();
    loop {
        let a = tokio::time::timeout(WAIT, mine.next()).await?;
        let b = tokio::time::timeout(WAIT, theirs.next()).await?;
        let (Some(a), Some(b)) = (a, b) else {
            panic!("a commits stream ended early");
        };
        assert_eq!(
            (a.tid, &a.changed, &a.deleted),
            (b.tid, &b.changed, &b.deleted)
        );
        if a.tid == tid {
            break;
        }
    }
    Ok(())
}
both_transports!(
    own_commits_leave_the_replica_as_a_push_would,
    own_commits_leave_the_replica_as_a_push_would
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_subscriber_moving_objects_out_of_its_value_keeps_them_as_a_push_would(
) -> anyhow::Result<()> {
    let server = start_server().await?;
    // It sees the accounts owned by ann, and its own.
    let committer = connect(&server, Transport::Tcp).await?;
    committer
        .subscribe_index(Account::owner_index("ann"))
        .await?;
    let observer = connect(&server, Transport::Tcp).await?;
    observer.subscribe(bank::schema()).await?;
    let (anns, bobs) = observer
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Account::create(tx, account("ann", 1))?,
                Account::create(tx, account("bob", 2))?,
            ))
        })
        .await?;
    committer.flush().await?;
    let mine = committer
        .transaction(|tx| {
            // Out of the subscribed value: it stays visible, having been seen in it.
            anns.set_owner(tx, "cy".to_string())?;
            anns.set_balance(tx, 10)?;
            Account::create(tx, account("bob", 3))
        })
        .await?;
    let expect = |v: &odb::View<'_>| -> odb::Result<_> { Ok((anns.get(v)?, mine.get(v)?)) };
    let seen_by_committer = committer.view(expect)?;
    assert_eq!(
        seen_by_committer,
        (
            Account {
                balance: 10,
                ..account("cy", 1)
            },
            account("bob", 3)
        )
    );
    assert!(!committer.view(|v| bobs.exists(v))?, "never in its view");
    assert_eq!(
        committer.view(|v| Account::lookup_all_by_owner(v, "bob"))?,
        vec![mine]
    );
    observer.flush().await?;
    assert_eq!(observer.view(expect)?, seen_by_committer);
    assert_eq!(committer.current_tid(), observer.current_tid());
    Ok(())
}
