//! A doubly linked ring of objects mutated concurrently by several writers (insert after a
//! random node, remove a random node) while readers subscribed by type and by index value check
//! after every change they receive that the ring is whole: following `next` from any node
//! comes back to it through every node, `prev(next(x)) == x`, and the node count matches the
//! index.

mod rng;
mod support;

use odb::{Client, Read, Ref};
use rng::Rng;
use std::collections::BTreeSet;
use support::*;

#[odb::schema(name = "ring_concurrency")]
pub mod rings {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Node {
        pub next: Option<odb::Ref<Node>>,
        pub prev: Option<odb::Ref<Node>>,
        #[index]
        pub ring: String,
    }

    /// Written (blindly, so that writers do not conflict on it) by every writer transaction:
    /// readers wait for its stamp to change instead of polling.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Version {
        #[index]
        pub ring: String,
        pub stamp: u64,
    }
}

use rings::{Node, Version};

const RING: &str = "r";
const INITIAL_NODES: usize = 12;
const MIN_NODES: usize = 3;
const WRITERS: u64 = 4;
const OPS_PER_WRITER: u64 = 500;
/// The stamp that tells readers the writers are done.
const DONE: u64 = u64::MAX;

/// Checks the ring's invariants in one snapshot; `Err` describes the first violation.
fn check_ring(v: &impl Read, by_type: bool) -> odb::Result<Result<usize, String>> {
    let nodes = Node::lookup_all_by_ring(v, RING)?;
    if by_type {
        let all = Node::lookup_all(v)?;
        if all != nodes {
            return Ok(Err(format!(
                "all nodes {all:?} differ from the ring's index {nodes:?}"
            )));
        }
    }
    if nodes.len() < MIN_NODES {
        return Ok(Err(format!("only {} nodes: {nodes:?}", nodes.len())));
    }
    let members: BTreeSet<Ref<Node>> = nodes.iter().copied().collect();
    for &x in &nodes {
        let (Some(next), Some(prev)) = (x.next(v)?, x.prev(v)?) else {
            return Ok(Err(format!("{x:?} has a missing link")));
        };
        if !members.contains(&next) || !members.contains(&prev) {
            return Ok(Err(format!(
                "{x:?} links to {prev:?} / {next:?}, not both in the ring"
            )));
        }
        if next.prev(v)? != Some(x) {
            return Ok(Err(format!(
                "prev(next({x:?})) is {:?}, not {x:?}",
                next.prev(v)?
            )));
        }
    }
    // Following `next` from one node visits every node once and comes back; since every node
    // is on that single cycle, the same holds from any node.
    let start = nodes[(v.tid().0 as usize) % nodes.len()];
    let (mut seen, mut at) = (BTreeSet::new(), start);
    loop {
        if !seen.insert(at) {
            return Ok(Err(format!(
                "{at:?} reached twice before returning to {start:?}"
            )));
        }
        at = at.next(v)?.expect("checked above");
        if at == start {
            break;
        }
    }
    if seen.len() != nodes.len() {
        return Ok(Err(format!(
            "the cycle from {start:?} has {} nodes, the index {}",
            seen.len(),
            nodes.len()
        )));
    }
    Ok(Ok(nodes.len()))
}

/// Inserts a node after `x`, or does nothing if `x` is gone.
fn insert_after(tx: &mut odb::Transaction<'_>, x: Ref<Node>) -> odb::Result<bool> {
    if !x.exists(tx)? {
        return Ok(false);
    }
    let y = x.next(tx)?.ok_or_else(|| odb::Error::abort("no next"))?;
    if y.prev(tx)? != Some(x) {
        return Err(odb::Error::abort(format!("prev(next({x:?})) != {x:?}")));
    }
    let n = Node::create(
        tx,
        Node {
            next: Some(y),
            prev: Some(x),
            ring: RING.into(),
        },
    )?;
    x.set_next(tx, Some(n))?;
    y.set_prev(tx, Some(n))?;
    Ok(true)
}

/// Removes `y` unless it is gone or the ring would drop below `MIN_NODES`.
fn remove(tx: &mut odb::Transaction<'_>, y: Ref<Node>) -> odb::Result<bool> {
    if !y.exists(tx)? {
        return Ok(false);
    }
    let broken = || odb::Error::abort(format!("broken links around {y:?}"));
    let x = y.prev(tx)?.ok_or_else(broken)?;
    let z = y.next(tx)?.ok_or_else(broken)?;
    if x.next(tx)? != Some(y) || z.prev(tx)? != Some(y) {
        return Err(broken());
    }
    // With at least MIN_NODES + 1 nodes, the node after z is not x yet. Reading z.next makes
    // the size check conflict with any concurrent change that could invalidate it.
    if z.next(tx)? == Some(x) {
        return Ok(false);
    }
    x.set_next(tx, Some(z))?;
    z.set_prev(tx, Some(x))?;
    y.delete(tx)?;
    Ok(true)
}

async fn write_randomly(
    db: Client,
    version: Ref<Version>,
    writer: u64,
    mut rng: Rng,
) -> anyhow::Result<(u64, u64)> {
    let (mut inserted, mut removed) = (0, 0);
    for op in 0..OPS_PER_WRITER {
        // The target is chosen outside the transaction: a lookup inside would make every
        // insert and remove conflict with every other.
        let nodes = db.view(|v| Node::lookup_all_by_ring(v, RING))?;
        let target = rng.pick(&nodes);
        // Grow while small, then keep the size roughly stable.
        let insert = nodes.len() < INITIAL_NODES || rng.one_in(2);
        let stamp = writer << 32 | op;
        let done = db
            .transaction(|tx| {
                let done = if insert {
                    insert_after(tx, target)?
                } else {
                    remove(tx, target)?
                };
                version.set_stamp(tx, stamp)?;
                Ok::<_, odb::Error>(done)
            })
            .await?;
        match (done, insert) {
            (true, true) => inserted += 1,
            (true, false) => removed += 1,
            _ => {}
        }
    }
    Ok((inserted, removed))
}

/// Checks the ring after every change the client receives, until the writers are done.
async fn check_until_done(db: Client, by_type: bool) -> anyhow::Result<u64> {
    let mut checks = 0u64;
    let mut violation = None;
    db.wait_for(
        |v| {
            checks += 1;
            if let Err(e) = check_ring(v, by_type)? {
                violation = Some(format!("at tid {}: {e}", v.tid()));
                return Ok(true);
            }
            Ok(Version::lookup_one_by_ring(v, RING)?.stamp(v)? == DONE)
        },
        TEST_LIMIT,
    )
    .await?;
    if let Some(e) = violation {
        anyhow::bail!(
            "{} reader saw a broken ring {e}",
            if by_type { "type" } else { "index" }
        );
    }
    Ok(checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_stays_consistent_for_type_and_index_readers_under_concurrent_writers(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let setup = client(&server).await?;
        let version = setup
            .transaction(|tx| {
                let nodes: Vec<Ref<Node>> = (0..INITIAL_NODES)
                    .map(|_| {
                        Node::create(
                            tx,
                            Node {
                                next: None,
                                prev: None,
                                ring: RING.into(),
                            },
                        )
                    })
                    .collect::<odb::Result<_>>()?;
                for (i, n) in nodes.iter().enumerate() {
                    n.set_next(tx, Some(nodes[(i + 1) % nodes.len()]))?;
                    n.set_prev(tx, Some(nodes[(i + nodes.len() - 1) % nodes.len()]))?;
                }
                Version::create(
                    tx,
                    Version {
                        ring: RING.into(),
                        stamp: 0,
                    },
                )
            })
            .await?;

        let mut readers = Vec::new();
        for by_type in [true, true, false, false] {
            let db = client(&server).await?;
            if by_type {
                db.subscribe_type::<Node>().await?;
            } else {
                db.subscribe_index(Node::ring_index(RING)).await?;
            }
            db.subscribe_index(Version::ring_index(RING)).await?;
            readers.push(tokio::spawn(check_until_done(db, by_type)));
        }

        let mut clients = Vec::new();
        for _ in 0..WRITERS {
            let db = client(&server).await?;
            db.subscribe(rings::schema()).await?;
            clients.push(db);
        }
        let mut rng = Rng::for_test("ring_stays_consistent");
        let writers = (0..WRITERS)
            .zip(clients)
            .map(|(w, db)| tokio::spawn(write_randomly(db, version, w, rng.fork(w))))
            .collect();
        let counts = join_all(writers).await?;
        setup.transaction(|tx| version.set_stamp(tx, DONE)).await?;
        let checks = join_all(readers).await?;

        let inserted: u64 = counts.iter().map(|c| c.0).sum();
        let removed: u64 = counts.iter().map(|c| c.1).sum();
        assert!(
            inserted > 0 && removed > 0,
            "the writers did not both insert and remove: {counts:?}"
        );
        assert!(
            checks.iter().all(|&c| c >= 2),
            "a reader checked fewer than twice: {checks:?}"
        );
        // A client that took no part sees the same whole ring, of the size the acknowledged
        // operations imply.
        let fresh = client(&server).await?;
        fresh.subscribe(rings::schema()).await?;
        fresh.flush().await?;
        let size = fresh
            .view(|v| check_ring(v, true))?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            size as u64,
            INITIAL_NODES as u64 + inserted - removed,
            "the ring's size does not match the acknowledged inserts and removes"
        );
        Ok(())
    })
    .await
}
