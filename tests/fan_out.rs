//! Fan-out under random traffic: clients subscribe to index values and to single objects,
//! create, move, delete and unsubscribe at random, and each ends up holding exactly what the
//! server holds for what it watches. (In debug builds the server also checks, on every commit,
//! that no connection it left out of the commit's audience would have seen part of it.)

#[macro_use]
mod common;
mod rng;

use common::*;
use odb::{Client, Ref};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[odb::schema]
pub mod fan {
    /// An item in one of a few groups.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        /// Which group it is in; clients subscribe to groups.
        #[index]
        pub group: u8,
        /// Changed by later commits.
        pub value: u64,
    }
}

use fan::Item;

const CLIENTS: usize = 6;
const GROUPS: u8 = 4;
const STEPS: usize = 400;

/// What one client watches.
#[derive(Default)]
struct Watching {
    groups: BTreeSet<u8>,
    objects: BTreeSet<Ref<Item>>,
    created: BTreeSet<Ref<Item>>,
}

/// The whole run's time limit: a server that stopped answering fails the test instead of
/// hanging it.
const LIMIT: Duration = Duration::from_secs(120);

async fn random_traffic_body(t: Transport) -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, random_traffic(t))
        .await
        .map_err(|_| anyhow::anyhow!("the run did not finish within {LIMIT:?}"))?
}

async fn random_traffic(t: Transport) -> anyhow::Result<()> {
    let mut rng = Rng::for_test("fan_out_random_traffic");
    let server = start_server().await?;
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&server, t).await?);
    }
    // Moves and deletions are made by a client that sees every item (a client may write only
    // what it can read); the others watch, create and receive.
    let writer = connect(&server, t).await?;
    writer.subscribe(fan::schema()).await?;
    let mut watching: Vec<Watching> = (0..CLIENTS).map(|_| Watching::default()).collect();
    let mut live: Vec<Ref<Item>> = Vec::new();
    for step in 0..STEPS {
        let c = rng.below(CLIENTS);
        let db = &clients[c];
        let group = rng.below(GROUPS as usize) as u8;
        match rng.below(8) {
            0 => {
                db.subscribe_index(Item::group_index(group)).await?;
                watching[c].groups.insert(group);
            }
            1 => {
                db.unsubscribe_index(Item::group_index(group)).await?;
                watching[c].groups.remove(&group);
            }
            2 if !live.is_empty() => {
                let item = live[rng.below(live.len())];
                db.subscribe_object(item).await?;
                watching[c].objects.insert(item);
            }
            3 if !watching[c].objects.is_empty() => {
                let objects: Vec<_> = watching[c].objects.iter().copied().collect();
                let item = objects[rng.below(objects.len())];
                db.unsubscribe_object(item).await?;
                watching[c].objects.remove(&item);
            }
            4 if live.len() > 8 => {
                let item = live.swap_remove(rng.below(live.len()));
                writer.flush().await?;
                writer.transaction(|tx| item.delete(tx)).await?;
            }
            5 | 6 if !live.is_empty() => {
                let item = live[rng.below(live.len())];
                let value = step as u64;
                writer.flush().await?;
                writer
                    .transaction(|tx| {
                        item.set_group(tx, group)?;
                        item.set_value(tx, value)
                    })
                    .await?;
            }
            _ => {
                let item = db
                    .transaction(|tx| {
                        Item::create(
                            tx,
                            Item {
                                group,
                                value: step as u64,
                            },
                        )
                    })
                    .await?;
                live.push(item);
                watching[c].created.insert(item);
            }
        }
    }

    let truth = connect(&server, t).await?;
    truth.subscribe(fan::schema()).await?;
    let groups: BTreeMap<u8, Vec<Ref<Item>>> = truth.view(|v| {
        (0..GROUPS)
            .map(|g| Ok((g, Item::lookup_all_by_group(v, g)?)))
            .collect::<odb::Result<_>>()
    })?;
    for (c, db) in clients.iter().enumerate() {
        db.flush().await?;
        let w = &watching[c];
        db.view(|v| {
            for g in &w.groups {
                assert_eq!(
                    Item::lookup_all_by_group(v, *g)?,
                    groups[g],
                    "client {c}, subscribed to group {g}, holds exactly its members"
                );
            }
            for item in w.objects.iter().chain(&w.created) {
                let expected = truth.view(|t| item.exists(t))?;
                assert_eq!(item.exists(v)?, expected, "client {c}, object {item:?}");
                if expected {
                    assert_eq!(
                        item.get(v)?,
                        truth.view(|t| item.get(t))?,
                        "client {c} holds the current state of {item:?}"
                    );
                }
            }
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}
both_transports!(random_traffic, random_traffic_body);
