//! Commits and subscriptions large enough that a client decodes and applies them on a thread
//! of its own (see the driver's hand-over): a one-transaction creation, update and deletion of
//! thousands of objects must reach the committer, a subscriber and a client that subscribes
//! afterwards alike, on a multi-threaded runtime and on a current-thread one.

#[macro_use]
mod common;

use common::*;
use odb::{Client, Ref};
use std::collections::BTreeMap;

/// Objects per transaction: each carries four fields and two index values, so one commit is
/// far over the work the driver applies in place.
const OBJECTS: usize = 6_000;
const OWNERS: [&str; 3] = ["ann", "bob", "cy"];

/// What a client holds: every account by id, and the members of each owner value.
#[derive(Debug, PartialEq)]
struct Seen {
    accounts: BTreeMap<u64, Account>,
    by_owner: Vec<Vec<u64>>,
}

fn seen(db: &Client) -> odb::Result<Seen> {
    db.view(|v| {
        let accounts = accounts_by_id(v)?;
        let mut by_owner = Vec::new();
        for owner in OWNERS {
            by_owner.push(sorted_ids(Account::lookup_all_by_owner(v, owner)?));
        }
        Ok(Seen { accounts, by_owner })
    })
}

async fn large_commits_reach_every_replica(t: Transport) -> anyhow::Result<()> {
    let server = start_server().await?;
    let writer = connect(&server, t).await?;
    let reader = connect(&server, t).await?;
    writer.subscribe(bank::schema()).await?;
    reader.subscribe(bank::schema()).await?;

    let created: Vec<Ref<Account>> = writer
        .transaction(|tx| {
            (0..OBJECTS)
                .map(|i| Account::create(tx, account(OWNERS[i % 3], i as i64)))
                .collect::<odb::Result<Vec<_>>>()
        })
        .await?;
    let tid = reader.flush().await?;
    assert_eq!(writer.current_tid(), tid);
    let after_create = seen(&writer)?;
    assert_eq!(after_create.accounts.len(), OBJECTS);
    assert_eq!(after_create.by_owner[0].len(), OBJECTS / 3);
    assert_eq!(after_create, seen(&reader)?);

    // One transaction moving every account to another owner and changing its balance.
    writer
        .transaction(|tx| {
            for (i, a) in created.iter().enumerate() {
                a.set_owner(tx, OWNERS[(i + 1) % 3].to_string())?;
                a.set_balance(tx, -(i as i64))?;
            }
            Ok::<_, odb::Error>(())
        })
        .await?;
    reader.flush().await?;
    let after_update = seen(&writer)?;
    assert_eq!(after_update.accounts.len(), OBJECTS);
    assert_eq!(
        after_update.accounts.get(&created[4].id().0),
        Some(&account("cy", -4))
    );
    assert_eq!(after_update, seen(&reader)?);

    // A client that subscribes now receives the whole set in one subscription.
    let late = connect(&server, t).await?;
    late.subscribe(bank::schema()).await?;
    assert_eq!(after_update, seen(&late)?);

    // Deleting two thirds in one transaction.
    writer
        .transaction(|tx| {
            for a in created.iter().filter(|a| a.id().0 % 3 != 0) {
                a.delete(tx)?;
            }
            Ok::<_, odb::Error>(())
        })
        .await?;
    reader.flush().await?;
    late.flush().await?;
    let after_delete = seen(&writer)?;
    assert_eq!(
        after_delete.accounts.len(),
        created.iter().filter(|a| a.id().0 % 3 == 0).count()
    );
    assert_eq!(after_delete, seen(&reader)?);
    assert_eq!(after_delete, seen(&late)?);

    // Small commits still go through on the same connections afterwards.
    let one = reader
        .transaction(|tx| Account::create(tx, account("ann", 1)))
        .await?;
    writer.flush().await?;
    assert!(writer.view(|v| one.exists(v))?);
    Ok(())
}
both_transports!(
    large_commits_reach_every_replica,
    large_commits_reach_every_replica
);

/// The default `#[tokio::test]` runtime has one thread: the hand-over then runs on the
/// runtime's blocking pool all the same.
#[tokio::test]
async fn large_commits_reach_every_replica_on_a_current_thread_runtime() -> anyhow::Result<()> {
    large_commits_reach_every_replica(Transport::Tcp).await
}
