//! Subscriptions as other clients see them: objects moving into a subscribed index value,
//! subscribing in the middle of concurrent writes, a very large transaction, and two clients
//! with different struct definitions of one schema.

mod rng;
mod support;

use odb::{Client, ObjectId};
use rng::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::*;

#[odb::schema(name = "subscriptions_concurrency")]
pub mod store {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        #[index]
        pub bucket: String,
        pub payload: String,
        pub n: u64,
    }
}

use store::Item;

fn item(bucket: &str, payload: &str, n: u64) -> Item {
    Item {
        bucket: bucket.into(),
        payload: payload.into(),
        n,
    }
}

/// Every item the client sees, with its data.
fn items(db: &Client) -> odb::Result<BTreeMap<ObjectId, Item>> {
    db.view(|v| {
        Item::lookup_all(v)?
            .into_iter()
            .map(|i| Ok((i.id(), i.get(v)?)))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_moving_into_a_subscribed_value_arrives_whole_and_stays_after_moving_out(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let writer = client(&server).await?;
        let watcher = client(&server).await?;
        watcher.subscribe_index(Item::bucket_index("in")).await?;

        let (mover, bystander) = writer
            .transaction(|tx| {
                Ok::<_, odb::Error>((
                    Item::create(tx, item("out", "written before the move", 1))?,
                    Item::create(tx, item("out", "never moves", 7))?,
                ))
            })
            .await?;
        // Data written outside the subscribed value is not sent.
        writer.transaction(|tx| mover.set_n(tx, 2)).await?;
        watcher.flush().await?;
        assert!(!watcher.view(|v| mover.exists(v))?);

        // Moving in sends the whole object, including fields written before the move.
        writer
            .transaction(|tx| mover.set_bucket(tx, "in".into()))
            .await?;
        watcher
            .wait_for(|v| mover.exists(v), WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("the moved object never arrived: {e}"))?;
        assert_eq!(
            watcher.view(|v| mover.get(v))?,
            item("in", "written before the move", 2)
        );
        assert_eq!(
            watcher.view(|v| Item::lookup_all_by_bucket(v, "in"))?,
            vec![mover]
        );

        // Moving out (with another change in the same commit) keeps it visible and current.
        writer
            .transaction(|tx| {
                mover.set_bucket(tx, "elsewhere".into())?;
                mover.set_n(tx, 3)
            })
            .await?;
        watcher
            .wait_for(|v| Ok(mover.bucket(v)? == "elsewhere"), WAIT)
            .await?;
        assert_eq!(
            watcher.view(|v| mover.get(v))?,
            item("elsewhere", "written before the move", 3)
        );
        assert_eq!(
            watcher.view(|v| Item::lookup_all_by_bucket(v, "in"))?,
            vec![]
        );

        // Later changes to the object that left still arrive.
        writer
            .transaction(|tx| mover.set_payload(tx, "changed after leaving".into()))
            .await?;
        watcher
            .wait_for(|v| Ok(mover.payload(v)? == "changed after leaving"), WAIT)
            .await?;

        // An object created directly in the value arrives too; one that never entered does not.
        let born_in = writer
            .transaction(|tx| Item::create(tx, item("in", "born in", 4)))
            .await?;
        watcher.wait_for(|v| born_in.exists(v), WAIT).await?;
        watcher.flush().await?;
        assert!(!watcher.view(|v| bystander.exists(v))?);
        assert_eq!(watcher.view(|v| Item::lookup_all(v))?, vec![mover, born_in]);
        Ok(())
    })
    .await
}

const WRITERS: u64 = 4;
const BUCKETS: [&str; 3] = ["a", "b", "c"];
/// Commits made before the subscriber subscribes, and after it did, before writers stop.
const COMMITS_BEFORE: u64 = 300;
const COMMITS_AFTER: u64 = 300;

/// Creates, changes, moves and deletes random items until told to stop, reporting each commit.
async fn churn(
    db: Client,
    writer: u64,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    progress: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<()> {
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let existing = db.view(|v| Item::lookup_all(v))?;
        let bucket = rng.pick(&BUCKETS);
        let op = if existing.len() < 20 { 0 } else { rng.below(4) };
        let target = if existing.is_empty() {
            None
        } else {
            Some(rng.pick(&existing))
        };
        let payload = format!("writer {writer} step {step}");
        db.transaction(|tx| {
            let Some(t) = target.filter(|_| op != 0) else {
                Item::create(tx, item(bucket, &payload, step))?;
                return Ok(());
            };
            if !t.exists(tx)? {
                return Ok(());
            }
            match op {
                1 => {
                    let n = t.n(tx)?;
                    t.set_n(tx, n + 1)?;
                    t.set_payload(tx, payload.clone())
                }
                2 => t.set_bucket(tx, bucket.into()),
                _ => t.delete(tx),
            }
        })
        .await?;
        progress.send_modify(|n| *n += 1);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribing_while_others_write_ends_with_exactly_the_data_of_a_fresh_subscriber(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (progress, mut commits) = tokio::sync::watch::channel(0u64);
        let mut writers = Vec::new();
        let mut rng = Rng::for_test("subscribing_while_others_write");
        for w in 0..WRITERS {
            let db = client(&server).await?;
            db.subscribe(store::schema()).await?;
            writers.push(tokio::spawn(churn(
                db,
                w,
                rng.fork(w),
                stop.clone(),
                progress.clone(),
            )));
        }
        drop(progress);

        commits.wait_for(|&n| n >= COMMITS_BEFORE).await?;
        let whole = client(&server).await?;
        whole.subscribe(store::schema()).await?;
        let partial = client(&server).await?;
        partial.subscribe_index(Item::bucket_index("a")).await?;
        let subscribed_at = *commits.borrow();
        commits
            .wait_for(|&n| n >= subscribed_at + COMMITS_AFTER)
            .await?;
        stop.store(true, Ordering::Relaxed);
        join_all(writers).await?;

        let fresh_whole = client(&server).await?;
        fresh_whole.subscribe(store::schema()).await?;
        let fresh_partial = client(&server).await?;
        fresh_partial
            .subscribe_index(Item::bucket_index("a"))
            .await?;
        for db in [&whole, &partial, &fresh_whole, &fresh_partial] {
            db.flush().await?;
        }

        let truth = items(&fresh_whole)?;
        assert!(!truth.is_empty());
        let seen = items(&whole)?;
        assert_eq!(
            seen.len(),
            truth.len(),
            "the mid-stream subscriber sees another number of items"
        );
        assert_eq!(
            seen, truth,
            "the mid-stream subscriber's data differs from a fresh subscriber's"
        );

        // The index subscriber also keeps items that left "a" after it subscribed, so it sees
        // more than a fresh index subscriber; whatever it sees must be current.
        let in_a = |db: &Client| db.view(|v| Item::lookup_all_by_bucket(v, "a"));
        assert_eq!(in_a(&partial)?, in_a(&fresh_partial)?);
        assert_eq!(in_a(&fresh_partial)?, in_a(&fresh_whole)?);
        for (id, data) in items(&partial)? {
            assert_eq!(
                truth.get(&id),
                Some(&data),
                "the index subscriber holds stale or deleted item {id:?}"
            );
        }
        for (id, data) in items(&fresh_partial)? {
            assert_eq!(data.bucket, "a");
            assert_eq!(truth.get(&id), Some(&data));
        }
        Ok(())
    })
    .await
}

const BIG: u64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_creating_fifty_thousand_objects_reaches_subscribers() -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let writer = client(&server).await?;
        let early = client(&server).await?;
        early.subscribe_type::<Item>().await?;

        writer
            .transaction(|tx| {
                for i in 0..BIG {
                    Item::create(tx, item(BUCKETS[i as usize % 3], "bulk", i))?;
                }
                Ok::<_, odb::Error>(())
            })
            .await?;
        assert_eq!(
            writer.view(|v| Item::lookup_all(v))?.len() as u64,
            BIG,
            "the committer does not see all of its own objects"
        );
        early
            .wait_for(|v| Ok(Item::lookup_all(v)?.len() as u64 == BIG), WAIT)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the subscriber saw {:?} of {BIG} objects: {e}",
                    early.view(|v| Ok::<_, odb::Error>(Item::lookup_all(v)?.len()))
                )
            })?;

        // A later subscriber receives them as its initial data.
        let late = client(&server).await?;
        late.subscribe_index(Item::bucket_index("a")).await?;
        let expected: u64 = (0..BIG).filter(|i| i % 3 == 0).sum();
        for db in [&early, &late] {
            let sum = db.view(|v| {
                Item::lookup_all_by_bucket(v, "a")?
                    .into_iter()
                    .map(|i| i.n(v))
                    .sum::<odb::Result<u64>>()
            })?;
            assert_eq!(sum, expected);
        }
        Ok(())
    })
    .await
}

/// The same schema and type name, declared by an older program...
#[odb::schema(name = "evo")]
pub mod v1 {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        pub a: u32,
    }
}

/// ...and by a newer one with an extra field.
#[odb::schema(name = "evo")]
pub mod v2 {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        pub a: u32,
        #[odb(default)]
        pub b: String,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_different_struct_definitions_share_a_schema_by_field_name(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let old = client(&server).await?;
        old.subscribe(v1::schema()).await?;
        let new = client(&server).await?;
        new.subscribe(v2::schema()).await?;

        // The old program writes `a` and knows nothing of `b`; the new one reads the default.
        let made_by_old = old
            .transaction(|tx| v1::Item::create(tx, v1::Item { a: 1 }))
            .await?;
        let as_new: odb::Ref<v2::Item> = odb::Handle::from_id(made_by_old.id());
        new.wait_for(|v| as_new.exists(v), WAIT).await?;
        assert_eq!(
            new.view(|v| as_new.get(v))?,
            v2::Item {
                a: 1,
                b: String::new()
            }
        );

        // The new program sets `b`; the old one then updates `a`, and `b` survives.
        new.transaction(|tx| as_new.set_b(tx, "from v2".into()))
            .await?;
        old.flush().await?;
        assert_eq!(old.view(|v| made_by_old.get(v))?, v1::Item { a: 1 });
        old.transaction(|tx| {
            let a = made_by_old.a(tx)?;
            made_by_old.set_a(tx, a + 1)
        })
        .await?;
        new.wait_for(|v| Ok(as_new.a(v)? == 2), WAIT).await?;
        assert_eq!(new.view(|v| as_new.b(v))?, "from v2");

        // Objects the new program creates are readable by the old one.
        let made_by_new = new
            .transaction(|tx| {
                v2::Item::create(
                    tx,
                    v2::Item {
                        a: 10,
                        b: "new".into(),
                    },
                )
            })
            .await?;
        let as_old: odb::Ref<v1::Item> = odb::Handle::from_id(made_by_new.id());
        old.wait_for(|v| as_old.exists(v), WAIT).await?;
        assert_eq!(old.view(|v| as_old.get(v))?, v1::Item { a: 10 });

        // A third client with the old definition sees both objects whole.
        let late = client(&server).await?;
        late.subscribe(v1::schema()).await?;
        let ids: Vec<ObjectId> = late.view(|v| {
            Ok::<_, odb::Error>(
                v1::Item::lookup_all(v)?
                    .into_iter()
                    .map(|i| i.id())
                    .collect(),
            )
        })?;
        assert_eq!(ids, vec![made_by_old.id(), made_by_new.id()]);
        Ok(())
    })
    .await
}
