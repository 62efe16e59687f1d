//! The client replica under random commits: snapshots of nested views, pruning once they close,
//! lookups after index moves, and `wait_for` wake-ups. `join!` polls the waiter first, so it has
//! read its condition before the other client commits.
#![allow(unused_macros)]

#[macro_use]
mod common;
mod rng;

use common::*;
use odb::{Ref, Transaction};
use rng::Rng;
use std::collections::BTreeMap;

type Model = BTreeMap<Ref<Account>, Account>;

const OWNERS: [&str; 4] = ["", "x", "y", "z"];

fn check(v: &odb::View<'_>, model: &Model, ever: &[Ref<Account>], what: &str) -> odb::Result<()> {
    for r in ever {
        match model.get(r) {
            Some(a) => assert_eq!(&r.get(v)?, a, "{what}: {r:?}"),
            None => assert!(!r.exists(v)?, "{what}: {r:?} should not exist"),
        }
    }
    for o in OWNERS {
        let expected: Vec<_> = model
            .iter()
            .filter(|(_, a)| a.owner == o)
            .map(|(r, _)| *r)
            .collect();
        assert_eq!(
            Account::lookup_all_by_owner(v, o)?,
            expected,
            "{what}: owner {o:?}"
        );
    }
    let all: Vec<_> = model.keys().copied().collect();
    assert_eq!(Account::lookup_all(v)?, all, "{what}: all");
    Ok(())
}

/// One random commit, on `db`, applied to `model`.
async fn random_commit(
    db: &odb::Client,
    rng: &mut Rng,
    model: &mut Model,
    ever: &mut Vec<Ref<Account>>,
) -> anyhow::Result<()> {
    let live: Vec<Ref<Account>> = model.keys().copied().collect();
    let pick = |rng: &mut Rng| -> Option<Ref<Account>> {
        (!live.is_empty()).then(|| live[rng.below(live.len())])
    };
    let owner = |rng: &mut Rng| OWNERS[rng.below(OWNERS.len())].to_string();
    let kind = rng.below(8);
    match kind {
        0 | 1 => {
            let o = owner(rng);
            let b = rng.below(100) as i64;
            let r = db
                .transaction(|tx| Account::create(tx, account(&o, b)))
                .await?;
            model.insert(r, account(&o, b));
            ever.push(r);
        }
        2 | 3 => {
            if let Some(r) = pick(rng) {
                let o = owner(rng);
                db.transaction(|tx| r.set_owner(tx, o.clone())).await?;
                model.get_mut(&r).unwrap().owner = o;
            }
        }
        4 => {
            if let Some(r) = pick(rng) {
                db.transaction(|tx| r.delete(tx)).await?;
                model.remove(&r);
            }
        }
        5 => {
            // Move away and back in one commit, plus a balance change.
            if let Some(r) = pick(rng) {
                let o = owner(rng);
                let back = model[&r].owner.clone();
                db.transaction(|tx| {
                    r.set_owner(tx, o.clone())?;
                    r.set_balance(tx, 7)?;
                    r.set_owner(tx, back.clone())
                })
                .await?;
                model.get_mut(&r).unwrap().balance = 7;
            }
        }
        6 => {
            // Create one, delete another, create-and-delete a third, in one commit.
            let victim = pick(rng);
            let o = owner(rng);
            let r = db
                .transaction(|tx: &mut Transaction<'_>| {
                    let tmp = Account::create(tx, account("x", 1))?;
                    tmp.delete(tx)?;
                    if let Some(v) = victim {
                        v.delete(tx)?;
                    }
                    Account::create(tx, account(&o, 3))
                })
                .await?;
            if let Some(v) = victim {
                model.remove(&v);
            }
            model.insert(r, account(&o, 3));
            ever.push(r);
        }
        _ => {
            if let Some(r) = pick(rng) {
                let b = rng.below(100) as i64;
                db.transaction(|tx| r.set_balance(tx, b)).await?;
                model.get_mut(&r).unwrap().balance = b;
            }
        }
    }
    Ok(())
}

fn level(
    p: &Pair,
    depth: usize,
    rng: &mut Rng,
    model: &mut Model,
    ever: &mut Vec<Ref<Account>>,
) -> anyhow::Result<()> {
    p.a.view(|v| {
        let mine = model.clone();
        check(v, &mine, ever, &format!("depth {depth} open"))?;
        let n = 1 + rng.below(4);
        let r: anyhow::Result<()> = run_now(async {
            for _ in 0..n {
                let db = if rng.below(2) == 0 { &p.a } else { &p.b };
                // The model holds the other client's commits too: catch up with them first.
                db.flush().await?;
                random_commit(db, rng, model, ever).await?;
            }
            p.a.flush().await?;
            Ok(())
        });
        r.map_err(|e| odb::Error::Invalid(e.to_string()))?;
        check(v, &mine, ever, &format!("depth {depth} after commits"))?;
        if depth > 0 {
            level(p, depth - 1, rng, model, ever)
                .map_err(|e| odb::Error::Invalid(e.to_string()))?;
        }
        check(v, &mine, ever, &format!("depth {depth} after nested"))?;
        p.a.view(|fresh| check(fresh, model, ever, &format!("depth {depth} fresh")))?;
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_views_keep_their_snapshots_under_random_commits() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let base = p.a.stats().replica_objects;
    let mut rng = Rng::for_test("nested_views_keep_their_snapshots");
    let mut model = Model::new();
    let mut ever = Vec::new();
    for round in 0..40 {
        level(&p, 1 + round % 4, &mut rng, &mut model, &mut ever)?;
        p.a.view(|v| check(v, &model, &ever, "between rounds"))?;
        p.b.flush().await?;
        p.b.view(|v| check(v, &model, &ever, "b between rounds"))?;
    }
    // Every view closed: only the live objects remain in the replica.
    assert_eq!(p.a.stats().replica_objects, base + model.len());
    Ok(())
}

/// `wait_for` on "all objects of a type" wakes for creations and deletions by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_all_objects_wakes_on_create_and_delete() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let first =
        p.b.transaction(|tx| Account::create(tx, account("x", 1)))
            .await?;
    p.a.flush().await?;
    for round in 0..10 {
        let waiter = {
            let a = &p.a;
            async move {
                a.wait_for(|v| Ok(Account::lookup_all(v)?.len() == 2), WAIT)
                    .await
            }
        };
        let (w, made) = tokio::join!(waiter, async {
            p.b.transaction(|tx| Account::create(tx, account("y", round)))
                .await
        });
        w?;
        let made = made?;
        let waiter =
            p.a.wait_for(|v| Ok(Account::lookup_all(v)?.len() == 1), WAIT);
        let (w, d) = tokio::join!(waiter, async {
            p.b.transaction(|tx| made.delete(tx)).await
        });
        w?;
        d?;
    }
    assert!(p.a.view(|v| first.exists(v))?);
    Ok(())
}

/// `wait_for` on an index value wakes when an object moves in or out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_index_value_wakes_on_moves() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let acc =
        p.b.transaction(|tx| Account::create(tx, account("x", 1)))
            .await?;
    p.a.flush().await?;
    for round in 0..10 {
        let (to, from) = if round % 2 == 0 {
            ("y", "x")
        } else {
            ("x", "y")
        };
        let waiter = p.a.wait_for(
            |v| Ok(Account::lookup_all_by_owner(v, from)?.is_empty()),
            WAIT,
        );
        let (w, m) = tokio::join!(waiter, async {
            p.b.transaction(|tx| acc.set_owner(tx, to.into())).await
        });
        w?;
        m?;
        assert_eq!(
            p.a.view(|v| Account::lookup_all_by_owner(v, to))?,
            vec![acc]
        );
    }
    Ok(())
}

/// Deleted objects are dropped once the views that needed them close; unsubscribing drops the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_dropped_objects_leave_the_replica() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let base = p.a.stats().replica_objects;
    let made: Vec<Ref<Account>> = p
        .setup(|tx| {
            (0..50)
                .map(|i| Account::create(tx, account("x", i)))
                .collect()
        })
        .await?;
    assert_eq!(p.a.stats().replica_objects, base + 50);
    p.a.view(|v| {
        run_now(async {
            for chunk in made.chunks(10) {
                p.b.transaction(|tx| chunk.iter().try_for_each(|r| r.delete(tx)))
                    .await?;
            }
            p.a.flush().await?;
            Ok::<_, anyhow::Error>(())
        })
        .map_err(|e| odb::Error::Invalid(e.to_string()))?;
        assert_eq!(Account::lookup_all_by_owner(v, "x")?.len(), 50);
        Ok::<_, odb::Error>(())
    })?;
    assert_eq!(p.a.stats().replica_objects, base);
    assert!(p.a.view(|v| Account::lookup_all(v))?.is_empty());
    let more: Vec<Ref<Account>> = p
        .setup(|tx| {
            (0..20)
                .map(|i| Account::create(tx, account("y", i)))
                .collect()
        })
        .await?;
    p.a.unsubscribe(bank::schema()).await?;
    assert!(!p.a.view(|v| more[0].exists(v))?);
    assert_eq!(p.a.stats().replica_objects, base);
    Ok(())
}

/// view_at reads retained states, including lookups after moves and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_at_reads_retained_lookups() -> anyhow::Result<()> {
    let server = start_server().await?;
    let b = connect(&server, Transport::InProcess).await?;
    b.subscribe(bank::schema()).await?;
    let stream = server.inner().connect_in_process()?;
    let a = odb::Client::builder("odb://in-process")
        .token(TOKEN)
        .retain_history(8)
        .connect_stream(stream)
        .await?;
    a.subscribe(bank::schema()).await?;
    let acc = b
        .transaction(|tx| Account::create(tx, account("x", 1)))
        .await?;
    let t1 = a.flush().await?;
    b.transaction(|tx| acc.set_owner(tx, "y".into())).await?;
    let t2 = a.flush().await?;
    b.transaction(|tx| acc.delete(tx)).await?;
    let t3 = a.flush().await?;
    a.view_at(t1, |v| {
        assert_eq!(Account::lookup_all_by_owner(v, "x")?, vec![acc]);
        assert_eq!(Account::lookup_all(v)?, vec![acc]);
        Ok::<_, odb::Error>(())
    })?;
    a.view_at(t2, |v| {
        assert_eq!(Account::lookup_all_by_owner(v, "x")?, vec![]);
        assert_eq!(Account::lookup_all_by_owner(v, "y")?, vec![acc]);
        Ok::<_, odb::Error>(())
    })?;
    a.view_at(t3, |v| {
        assert_eq!(Account::lookup_all(v)?, vec![]);
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}

fn visible_model(model: &Model, seen: &std::collections::BTreeSet<Ref<Account>>) -> Model {
    model
        .iter()
        .filter(|(r, _)| seen.contains(r))
        .map(|(r, a)| (*r, a.clone()))
        .collect()
}

fn index_level(
    p: &Pair,
    a: &odb::Client,
    depth: usize,
    rng: &mut Rng,
    model: &mut Model,
    ever: &mut Vec<Ref<Account>>,
    seen: &mut std::collections::BTreeSet<Ref<Account>>,
) -> odb::Result<()> {
    a.view(|v| {
        let mine = visible_model(model, seen);
        check(v, &mine, ever, &format!("idx depth {depth} open"))?;
        let n = 1 + rng.below(4);
        let r: anyhow::Result<()> = run_now(async {
            for _ in 0..n {
                random_commit(&p.b, rng, model, ever).await?;
                for (r, acc) in model.iter() {
                    if acc.owner == "x" {
                        seen.insert(*r);
                    }
                }
            }
            a.flush().await?;
            Ok(())
        });
        r.map_err(|e| odb::Error::Invalid(e.to_string()))?;
        check(v, &mine, ever, &format!("idx depth {depth} after commits"))?;
        if depth > 0 {
            index_level(p, a, depth - 1, rng, model, ever, seen)?;
        }
        check(v, &mine, ever, &format!("idx depth {depth} after nested"))?;
        let now = visible_model(model, seen);
        a.view(|fresh| check(fresh, &now, ever, &format!("idx depth {depth} fresh")))?;
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_subscriber_views_under_random_moves() -> anyhow::Result<()> {
    let p = Pair::new(Transport::InProcess).await?;
    let a = connect(&p.server, Transport::InProcess).await?;
    a.subscribe_index(Account::owner_index("x")).await?;
    let base = a.stats().replica_objects;
    let mut rng = Rng::for_test("index_subscriber_views");
    let mut model = Model::new();
    let mut ever = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..40 {
        index_level(
            &p,
            &a,
            1 + round % 4,
            &mut rng,
            &mut model,
            &mut ever,
            &mut seen,
        )?;
        // Objects seen and later deleted are gone from the model; keep `seen` in step.
        seen.retain(|r| model.contains_key(r));
    }
    assert_eq!(a.stats().replica_objects, base + seen.len());
    a.unsubscribe_index(Account::owner_index("x")).await?;
    assert_eq!(a.stats().replica_objects, base);
    Ok(())
}
