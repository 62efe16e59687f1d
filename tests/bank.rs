//! Bank transfers under real concurrency: many TCP clients move money between a few shared
//! accounts in conflicting transactions. Money is conserved, and every acknowledged transfer
//! is applied exactly once: each transfer records itself in the same transaction, and the
//! records reconcile every balance.

mod rng;
mod support;

use odb::{Client, Ref};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use support::*;

#[odb::schema(name = "bank_concurrency")]
pub mod ledger {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Account {
        #[index]
        pub name: String,
        pub balance: i64,
    }

    /// Written by the transaction that moved the money, so it exists exactly when the
    /// transfer was applied.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Transfer {
        pub from: odb::Ref<Account>,
        pub to: odb::Ref<Account>,
        pub amount: i64,
        #[index]
        pub uid: u64,
    }
}

use ledger::{Account, Transfer};

const CLIENTS: u64 = 16;
const TRANSFERS_PER_CLIENT: u64 = 1_000;
const ACCOUNTS: usize = 50;
/// Half of all transfers touch one of these first accounts, so that clients collide often.
const HOT_ACCOUNTS: usize = 4;
const INITIAL_BALANCE: i64 = 1_000;
const MAX_AMOUNT: usize = 100;

/// One transfer a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    from: usize,
    to: usize,
    amount: i64,
}

/// What one client's transfers came to.
#[derive(Debug, Default)]
struct Outcome {
    /// Acknowledged transfers, by uid.
    acknowledged: BTreeMap<u64, Request>,
    /// Transfers refused for insufficient funds (nothing written).
    refused: u64,
    /// Transfers still conflicting after every retry (nothing written).
    gave_up: u64,
    /// How many times transfer closures ran, first runs and re-runs after conflicts.
    runs: u64,
}

fn random_request(rng: &mut Rng) -> Request {
    let hot = rng.one_in(2);
    let from = if hot {
        rng.below(HOT_ACCOUNTS)
    } else {
        rng.below(ACCOUNTS)
    };
    let mut to = rng.below(ACCOUNTS - 1);
    if to >= from {
        to += 1;
    }
    let (from, to) = if rng.one_in(2) {
        (from, to)
    } else {
        (to, from)
    };
    Request {
        from,
        to,
        amount: 1 + rng.below(MAX_AMOUNT) as i64,
    }
}

/// Runs one client's transfers, one transaction each, and reports what was acknowledged.
async fn transfer_randomly(
    db: Client,
    accounts: Arc<Vec<Ref<Account>>>,
    client: u64,
    mut rng: Rng,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    for i in 0..TRANSFERS_PER_CLIENT {
        let request = random_request(&mut rng);
        let uid = client * 1_000_000 + i;
        let (from, to) = (accounts[request.from], accounts[request.to]);
        let runs = &mut out.runs;
        let result: odb::Result<bool> = db
            .transaction(|tx| {
                *runs += 1;
                let from_balance = from.balance(tx)?;
                if from_balance < request.amount {
                    return Ok(false);
                }
                let to_balance = to.balance(tx)?;
                from.set_balance(tx, from_balance - request.amount)?;
                to.set_balance(tx, to_balance + request.amount)?;
                Transfer::create(
                    tx,
                    Transfer {
                        from,
                        to,
                        amount: request.amount,
                        uid,
                    },
                )?;
                Ok(true)
            })
            .await;
        match result {
            Ok(true) => {
                out.acknowledged.insert(uid, request);
            }
            Ok(false) => out.refused += 1,
            Err(e) if e.is_retryable() => out.gave_up += 1,
            Err(e) => return Err(anyhow::anyhow!("transfer {uid} failed: {e}")),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_conserve_money_and_apply_each_acknowledged_transfer_once(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let setup = client(&server).await?;
        let accounts: Vec<Ref<Account>> = setup
            .transaction(|tx| {
                (0..ACCOUNTS)
                    .map(|i| {
                        Account::create(
                            tx,
                            Account {
                                name: format!("account-{i}"),
                                balance: INITIAL_BALANCE,
                            },
                        )
                    })
                    .collect()
            })
            .await?;
        let accounts = Arc::new(accounts);

        // Everyone connects first, so that all clients start transferring together.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            // A high retry limit: under this contention a transfer may lose many races in a
            // row, and the test wants almost every transfer acknowledged.
            let db = client_with_retries(&server, 1_000).await?;
            // Only accounts are subscribed: each client sees its own Transfer records anyway,
            // and the others' would only add traffic.
            db.subscribe_type::<Account>().await?;
            clients.push(db);
        }
        let mut rng = Rng::for_test("concurrent_transfers");
        let tasks = (0..CLIENTS)
            .zip(clients)
            .map(|(c, db)| tokio::spawn(transfer_randomly(db, accounts.clone(), c, rng.fork(c))))
            .collect();
        let outcomes = join_all(tasks).await?;

        let mut acknowledged = BTreeMap::new();
        let (mut runs, mut transactions) = (0, 0);
        for out in &outcomes {
            acknowledged.extend(out.acknowledged.iter().map(|(&u, &r)| (u, r)));
            runs += out.runs;
            transactions += out.acknowledged.len() as u64 + out.refused + out.gave_up;
        }
        assert_eq!(transactions, CLIENTS * TRANSFERS_PER_CLIENT);
        assert!(
            runs > transactions,
            "no transfer ever conflicted ({runs} runs for {transactions} transfers), so the \
             test did not exercise concurrent conflicts"
        );
        assert!(
            acknowledged.len() as u64 > CLIENTS * TRANSFERS_PER_CLIENT / 2,
            "only {} of {} transfers were acknowledged: {outcomes:?}",
            acknowledged.len(),
            CLIENTS * TRANSFERS_PER_CLIENT
        );

        // A client that took no part reads the final state.
        let fresh = client(&server).await?;
        fresh.subscribe(ledger::schema()).await?;
        fresh.flush().await?;
        let (balances, records) = fresh.view(|v| {
            let balances: Vec<i64> = accounts
                .iter()
                .map(|a| a.balance(v))
                .collect::<odb::Result<_>>()?;
            let records: Vec<Transfer> = Transfer::lookup_all(v)?
                .into_iter()
                .map(|t| t.get(v))
                .collect::<odb::Result<_>>()?;
            Ok::<_, odb::Error>((balances, records))
        })?;

        let total: i64 = balances.iter().sum();
        assert_eq!(
            total,
            ACCOUNTS as i64 * INITIAL_BALANCE,
            "the total of all balances changed"
        );
        assert!(
            balances.iter().all(|&b| b >= 0),
            "a balance went negative although transfers check funds in the same transaction: \
             {balances:?}"
        );

        assert_eq!(
            records.len(),
            acknowledged.len(),
            "the number of Transfer records differs from the number of acknowledged transfers"
        );
        let index_of: BTreeMap<Ref<Account>, usize> =
            accounts.iter().enumerate().map(|(i, &a)| (a, i)).collect();
        let mut recorded = BTreeMap::new();
        for t in &records {
            let request = Request {
                from: index_of[&t.from],
                to: index_of[&t.to],
                amount: t.amount,
            };
            assert!(
                recorded.insert(t.uid, request).is_none(),
                "transfer {} was recorded twice",
                t.uid
            );
        }
        let missing: BTreeSet<_> = acknowledged
            .keys()
            .filter(|u| !recorded.contains_key(u))
            .collect();
        let unacknowledged: BTreeSet<_> = recorded
            .keys()
            .filter(|u| !acknowledged.contains_key(u))
            .collect();
        assert!(
            missing.is_empty() && unacknowledged.is_empty(),
            "acknowledged but not recorded: {missing:?}; recorded but not acknowledged: \
             {unacknowledged:?}"
        );
        assert_eq!(recorded, acknowledged, "a record differs from its transfer");

        // The records alone explain every balance.
        let mut expected = vec![INITIAL_BALANCE; ACCOUNTS];
        for r in recorded.values() {
            expected[r.from] -= r.amount;
            expected[r.to] += r.amount;
        }
        assert_eq!(
            balances, expected,
            "balances do not reconcile with the Transfer records"
        );
        Ok(())
    })
    .await
}
