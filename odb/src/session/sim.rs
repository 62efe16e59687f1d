//! Deterministic simulation: [`ClientCore`]s against the real sequencer (through
//! `odb_server::sim::SimServer`), in one thread, under a seeded scheduler that interleaves
//! deliveries (each direction of each connection stays FIFO), cuts connections at any frame
//! (mid-snapshot and mid-commit included), and restarts the server from its storage.
//!
//! After every step it checks that each client's replica equals, at the client's tid, what an
//! observer that subscribed to everything saw at that tid; that every commit answered
//! "committed" is in the database; and that no commit answered "not applied" is. At the end it
//! checks that each applied commit was applied exactly once.
//!
//! `ODB_SIM_SEEDS=N` runs N seeds (default 2000, and half as many against an in-memory server), `ODB_SIM_SEED=S` runs seed S alone; a failure
//! names its seed.

use super::*;
use crate::transaction::{Finished, Transaction};
use crate::view::{Snapshot, View};
use crate::Ref;
use odb_server::sim::{SimConn, SimServer};
use odb_server::storage::MemoryStorage;
use odb_server::ServerConfig;
use std::collections::{BTreeMap, BTreeSet};

#[crate::schema(name = "sim")]
mod model {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Counter {
        pub value: i64,
    }

    /// One per commit attempt that creates it: `(client, attempt)` is unique.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Record {
        #[index]
        pub client: u32,
        pub attempt: u32,
    }
}
use model::{Counter, Record};

const TOKEN: &str = "sim-token";

/// What one simulated client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    Idle,
    /// Waiting for this request (schema, ids or subscription).
    Request(RequestId),
    /// Waiting for the answer to commit attempt `attempt`.
    Commit(RequestId, u32),
}

struct SimClient {
    index: u32,
    core: ClientCore,
    conn: Option<SimConn>,
    /// Frames the core handed out, not yet delivered to the server.
    up: VecDeque<Bytes>,
    busy: Busy,
    attempts: u32,
    subscribed: bool,
}

/// What became of each commit attempt, by `(client, attempt)`.
#[derive(Default)]
struct Outcomes {
    committed: BTreeMap<(u32, u32), Tid>,
    not_applied: BTreeSet<(u32, u32)>,
    unknown: BTreeSet<(u32, u32)>,
}

struct World {
    seed: u64,
    rng: Rng,
    server: SimServer,
    clients: Vec<SimClient>,
    /// Subscribed to everything and never cut by the scheduler: the reference view.
    observer: SimClient,
    counter: Option<Ref<Counter>>,
    outcomes: Outcomes,
    now: Instant,
    durable: bool,
    restarts: u32,
    cuts: u32,
}

fn config(seed: u64) -> CoreConfig {
    CoreConfig {
        token: TOKEN.into(),
        name: "sim".into(),
        max_frame: odb_wire::DEFAULT_MAX_FRAME,
        policy: ReconnectPolicy::default()
            .initial_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(20)),
        urls: 1,
        retain_history: 1 << 20,
        seed,
    }
}

impl SimClient {
    fn new(index: u32, seed: u64, now: Instant) -> SimClient {
        SimClient {
            index,
            core: ClientCore::new(config(seed), now),
            conn: None,
            up: VecDeque::new(),
            busy: Busy::Idle,
            attempts: 0,
            subscribed: false,
        }
    }

    /// Moves what the core wants to send into the connection.
    fn pump(&mut self) {
        while let Some(frame) = self.core.poll_transmit() {
            if self.conn.is_some() {
                self.up.push_back(frame);
            }
        }
    }

    fn cut(&mut self, server: &mut SimServer, now: Instant, reason: &str) {
        if let Some(conn) = self.conn.take() {
            server.disconnect(&conn);
        }
        self.up.clear();
        self.core.on_disconnected(reason.into(), now);
    }
}

impl World {
    fn new(seed: u64, clients: u32, durable: bool) -> World {
        let now = Instant::now();
        let storage = durable.then(MemoryStorage::new);
        let server = SimServer::new(ServerConfig::new(TOKEN), storage)
            .unwrap_or_else(|e| panic!("seed {seed}: the server starts: {e}"));
        World {
            seed,
            rng: Rng::new(seed),
            server,
            clients: (0..clients)
                .map(|i| SimClient::new(i, seed.wrapping_mul(31).wrapping_add(u64::from(i)), now))
                .collect(),
            observer: SimClient::new(u32::MAX, seed ^ 0x5eed, now),
            counter: None,
            outcomes: Outcomes::default(),
            now,
            durable,
            restarts: 0,
            cuts: 0,
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "simulation seed {} failed (rerun with ODB_SIM_SEED={}): {what}",
            self.seed, self.seed
        )
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    /// Dials, delivers and answers until nothing moves for `client` (`None`: the observer).
    fn settle_one(&mut self, which: Option<usize>) {
        for _ in 0..10_000 {
            if !self.step_client(which, true) {
                return;
            }
        }
        self.fail("a client never settled");
    }

    /// One thing for one client: dial, deliver one frame either way, or handle its events.
    /// With `all`, tries each in turn; returns whether anything happened.
    fn step_client(&mut self, which: Option<usize>, all: bool) -> bool {
        let now = self.now;
        let choice = if all { 0 } else { self.rand(3) };
        let World {
            server,
            clients,
            observer,
            ..
        } = self;
        let client = match which {
            Some(i) => &mut clients[i],
            None => observer,
        };
        let mut moved = false;
        if client.conn.is_none() {
            if let Dial::Now(_) = client.core.poll_dial(now) {
                client.conn = Some(server.connect());
                client.core.on_connected(now);
                moved = true;
            }
        }
        if client.core.poll_timeout().is_some_and(|at| at <= now) && client.core.handle_timeout(now)
        {
            client.cut(server, now, "silent");
            moved = true;
        }
        client.pump();
        let Some(conn) = client.conn else {
            return moved;
        };
        if (all || choice == 0) && !client.up.is_empty() {
            if let Some(frame) = client.up.pop_front() {
                if std::env::var("ODB_SIM_TRACE").is_ok() {
                    if let Ok(m) = odb_wire::decode_client_message(&frame) {
                        eprintln!(
                            "client {} -> {}",
                            client.index,
                            format!("{m:?}").chars().take(160).collect::<String>()
                        );
                    }
                }
                server.send_frame(&conn, frame);
                moved = true;
            }
        }
        if all || choice == 1 {
            if let Some(message) = server.recv(&conn) {
                if std::env::var("ODB_SIM_TRACE").is_ok() {
                    eprintln!("client {} <- {}", client.index, brief(&message));
                }
                client.core.on_message(message, now);
                moved = true;
                if !client.core.transport_open() {
                    client.conn = None;
                    client.up.clear();
                    server.disconnect(&conn);
                }
            } else if !server.is_open(&conn) {
                client.cut(server, now, "the server closed the connection");
                moved = true;
            }
        }
        client.pump();
        moved
    }

    /// Handles a client's answers; returns the answers to its current work.
    fn events(&mut self, which: Option<usize>) {
        loop {
            let client = match which {
                Some(i) => &mut self.clients[i],
                None => &mut self.observer,
            };
            let Some(event) = client.core.poll_event() else {
                return;
            };
            let Event::Answer { id, result } = event else {
                continue;
            };
            let index = client.index;
            match client.busy {
                Busy::Request(r) if r == id => {
                    client.busy = Busy::Idle;
                    if let Err(e) = result {
                        if !matches!(e, Error::Disconnected(_)) {
                            self.fail(format!("client {index}: a request failed: {e}"));
                        }
                    }
                }
                Busy::Commit(r, attempt) if r == id => {
                    client.busy = Busy::Idle;
                    if which.is_some() {
                        self.commit_answered(index, attempt, result);
                    } else if let Err(e) = result {
                        self.fail(format!("the observer's setup failed: {e}"));
                    }
                }
                _ => {}
            }
        }
    }

    fn commit_answered(&mut self, client: u32, attempt: u32, result: Result<Reply>) {
        let key = (client, attempt);
        match result {
            Ok(Reply::Committed(tid)) => {
                self.outcomes.committed.insert(key, tid);
            }
            Ok(other) => self.fail(format!("commit {key:?} answered {other:?}")),
            Err(Error::CommitNotApplied { .. })
            | Err(Error::Conflict { .. })
            | Err(Error::TooOld { .. }) => {
                self.outcomes.not_applied.insert(key);
            }
            Err(Error::CommitOutcomeUnknown { reason }) => {
                if self.durable {
                    self.fail(format!(
                        "commit {key:?}: outcome unknown on a durable server: {reason}"
                    ));
                }
                self.outcomes.unknown.insert(key);
            }
            Err(e) => self.fail(format!("commit {key:?} failed: {e}")),
        }
    }

    /// Starts the client's next piece of work when it is idle and connected.
    fn work(&mut self, i: usize) {
        let counter = self.counter;
        let client = &mut self.clients[i];
        if client.busy != Busy::Idle || !client.core.is_up() {
            return;
        }
        let schema = model::schema();
        let defined = client
            .core
            .shared()
            .registry
            .read()
            .has_types(schema.types());
        let request = if !defined {
            client.core.define_schema(schema)
        } else if !client.subscribed {
            client.subscribed = true;
            let targets: Vec<Target> = schema
                .types()
                .iter()
                .map(|&t| Target::Type(TypeKey(t)))
                .collect();
            client.core.subscribe(&targets)
        } else if client.core.shared().ids.lock().remaining() < 2 {
            client.core.request_ids(2)
        } else {
            let Some(counter) = counter else {
                return;
            };
            client.attempts += 1;
            let attempt = client.attempts;
            let index = client.index;
            let shared = client.core.shared().clone();
            let mut tx = Transaction::new(&shared);
            let ran = (|| -> Result<()> {
                let value = counter.value(&tx)?;
                counter.set_value(&mut tx, value + 1)?;
                Record::create(
                    &mut tx,
                    Record {
                        client: index,
                        attempt,
                    },
                )?;
                Ok(())
            })();
            // A need (the registry or the pool changed under the attempt: a new connection)
            // or an error (the counter is not visible yet, while the subscription is restored):
            // the next step tries again.
            if tx.take_need().is_some() || ran.is_err() {
                return;
            }
            let origin = tx.origin();
            let Finished::Commit(request) = tx.finish() else {
                return;
            };
            match client.core.commit(request, origin) {
                Ok(id) => client.busy = Busy::Commit(id, attempt),
                Err(e) => self.fail(format!("commit refused locally: {e}")),
            }
            return;
        };
        match request {
            Ok(id) => client.busy = Busy::Request(id),
            Err(e) => self.fail(format!("client {i}: request refused locally: {e}")),
        }
    }

    /// Sets up the observer and the shared counter, with nothing cut.
    fn setup(&mut self) {
        let schema = model::schema();
        self.settle_one(None);
        let id = self
            .observer
            .core
            .define_schema(schema)
            .unwrap_or_else(|e| self.fail(e));
        self.observer.busy = Busy::Request(id);
        while self.observer.busy != Busy::Idle {
            self.settle_one(None);
            self.events(None);
        }
        let targets: Vec<Target> = schema
            .types()
            .iter()
            .map(|&t| Target::Type(TypeKey(t)))
            .collect();
        let id = self
            .observer
            .core
            .subscribe(&targets)
            .unwrap_or_else(|e| self.fail(e));
        self.observer.busy = Busy::Request(id);
        while self.observer.busy != Busy::Idle {
            self.settle_one(None);
            self.events(None);
        }
        let shared = self.observer.core.shared().clone();
        let mut tx = Transaction::new(&shared);
        let counter =
            Counter::create(&mut tx, Counter { value: 0 }).unwrap_or_else(|e| self.fail(e));
        let origin = tx.origin();
        let Finished::Commit(request) = tx.finish() else {
            self.fail("creating the counter wrote nothing");
        };
        let id = self
            .observer
            .core
            .commit(request, origin)
            .unwrap_or_else(|e| self.fail(e));
        self.observer.busy = Busy::Commit(id, 0);
        while self.observer.busy != Busy::Idle {
            self.settle_one(None);
            self.events(None);
        }
        self.counter = Some(counter);
    }

    /// One scheduler step.
    fn step(&mut self) {
        let micros = 200 + self.rand(800);
        self.now += Duration::from_micros(micros);
        let n = self.clients.len();
        match self.rand(100) {
            0..=4 => {
                let i = self.rand(n as u64) as usize;
                if self.clients[i].conn.is_some() {
                    self.cuts += 1;
                    let now = self.now;
                    let World {
                        server, clients, ..
                    } = self;
                    clients[i].cut(server, now, "cut by the simulation");
                }
            }
            5 if self.durable => self.restart(),
            _ => {
                let i = self.rand(n as u64) as usize;
                self.step_client(Some(i), false);
                self.events(Some(i));
                self.work(i);
            }
        }
        // The observer sees everything at once.
        self.settle_one(None);
        self.events(None);
        self.check();
    }

    fn restart(&mut self) {
        self.restarts += 1;
        if let Err(e) = self.server.restart() {
            self.fail(format!("restart: {e}"));
        }
        let now = self.now;
        for client in self.clients.iter_mut().chain([&mut self.observer]) {
            if client.conn.is_some() {
                client.conn = None;
                client.up.clear();
                client
                    .core
                    .on_disconnected("the server restarted".into(), now);
            }
        }
    }

    /// What a replica holds at its current state, and its tid.
    fn contents(shared: &Shared) -> Result<(Tid, Contents)> {
        let view = View::new(Snapshot::open(shared));
        Ok((view.tid(), read(&view)?))
    }

    /// What the observer saw right after commit `tid`.
    fn observed_at(&self, tid: Tid) -> Result<Contents> {
        let shared = self.observer.core.shared();
        read(&View::new(Snapshot::open_at(shared, tid)?))
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        if !self.observer.core.is_up() {
            return;
        }
        let (now, (records, _)) = Self::contents(self.observer.core.shared())
            .unwrap_or_else(|e| self.fail(format!("the observer cannot read: {e}")));
        let applied: BTreeSet<(u32, u32)> = records.iter().map(|&(_, c, a)| (c, a)).collect();
        if applied.len() != records.len() {
            self.fail(format!("a record appears twice: {records:?}"));
        }
        for (key, tid) in &self.outcomes.committed {
            if *tid <= now && !applied.contains(key) {
                self.fail(format!(
                    "commit {key:?} was acknowledged at {tid} but is not applied"
                ));
            }
        }
        for key in &self.outcomes.not_applied {
            if applied.contains(key) {
                self.fail(format!(
                    "commit {key:?} was reported not applied but is applied"
                ));
            }
        }
        for client in &self.clients {
            if !client.subscribed {
                continue;
            }
            let Ok((tid, (mine, counter))) = Self::contents(client.core.shared()) else {
                continue;
            };
            // The observer has every commit of these types; commits after its tid touched
            // nothing it sees (connection objects), so its newest state stands for later tids.
            let (theirs, their_counter) = match self.observed_at(tid.min(now)) {
                Ok(seen) => seen,
                // Before the observer's first subscription.
                Err(_) => continue,
            };
            // A client whose subscription is not complete yet sees less, never something else.
            if mine.is_empty() && counter.is_none() {
                continue;
            }
            if mine != theirs || counter != their_counter {
                self.fail(format!(
                    "client {} at tid {tid} holds {mine:?} / {counter:?}, the observer saw {theirs:?} / {their_counter:?}",
                    client.index
                ));
            }
        }
    }

    /// Stops cutting, lets everyone reconnect and finish, and checks the final state.
    fn finish(&mut self) {
        for _ in 0..200 {
            for i in 0..self.clients.len() {
                self.settle_one(Some(i));
                self.events(Some(i));
            }
            self.settle_one(None);
            self.events(None);
            if self.clients.iter().all(|c| matches!(c.busy, Busy::Idle)) {
                break;
            }
            self.now += Duration::from_millis(5);
        }
        for c in &self.clients {
            if c.busy != Busy::Idle {
                self.fail(format!(
                    "client {} never got its answer ({:?})",
                    c.index, c.busy
                ));
            }
        }
        self.check();
        let (_, (records, counter)) = Self::contents(self.observer.core.shared())
            .unwrap_or_else(|e| self.fail(format!("the observer cannot read: {e}")));
        let applied: BTreeSet<(u32, u32)> = records.iter().map(|&(_, c, a)| (c, a)).collect();
        for key in self.outcomes.committed.keys() {
            if !applied.contains(key) {
                self.fail(format!("acknowledged commit {key:?} is missing at the end"));
            }
        }
        for key in &applied {
            if !self.outcomes.committed.contains_key(key) && !self.outcomes.unknown.contains(key) {
                self.fail(format!(
                    "commit {key:?} is applied but was never acknowledged"
                ));
            }
        }
        if counter != Some(records.len() as i64) {
            self.fail(format!(
                "the counter is {counter:?} after {} applied increments",
                records.len()
            ));
        }
    }
}

/// The records, as (object, client, attempt), and the counter's value.
type Contents = (Vec<(ObjectId, u32, u32)>, Option<i64>);

/// What a view shows of the model.
fn read(view: &View<'_>) -> Result<Contents> {
    let mut records = Vec::new();
    for r in Record::lookup_all(view)? {
        records.push((r.id(), r.client(view)?, r.attempt(view)?));
    }
    let counter = match Counter::lookup_all(view)?.first() {
        Some(c) => Some(c.value(view)?),
        None => None,
    };
    Ok((records, counter))
}

fn run(seed: u64, durable: bool) -> (usize, u32, u32, usize) {
    let mut world = World::new(seed, 3, durable);
    world.setup();
    for _ in 0..250 {
        world.step();
    }
    world.finish();
    (
        world.outcomes.committed.len(),
        world.cuts,
        world.restarts,
        world.outcomes.not_applied.len(),
    )
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("ODB_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n: u64 = std::env::var("ODB_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    (1..=n).collect()
}

#[test]
fn sessions_survive_cuts_and_restarts_of_a_durable_server() {
    let (mut commits, mut cuts, mut restarts, mut refused) = (0, 0, 0, 0);
    let seeds = seeds();
    for &seed in &seeds {
        let (c, k, r, n) = run(seed, true);
        commits += c;
        cuts += k;
        restarts += r;
        refused += n;
    }
    eprintln!(
        "{} seeds: {commits} commits acknowledged, {refused} not applied (conflicts included), {cuts} cuts, {restarts} restarts",
        seeds.len()
    );
    assert!(commits > seeds.len(), "the simulation commits");
    assert!(cuts > 0 && restarts > 0, "the simulation cuts and restarts");
}

#[test]
fn sessions_survive_cuts_of_an_in_memory_server() {
    let seeds = seeds();
    let mut commits = 0;
    for &seed in seeds.iter().take(seeds.len() / 2 + 1) {
        commits += run(seed, false).0;
    }
    assert!(commits > 0);
}

fn brief(message: &ServerMessage) -> String {
    match message {
        ServerMessage::Commit(c) => format!(
            "Commit tid {} writes {:?} deletes {:?}",
            c.tid,
            c.writes
                .iter()
                .map(|w| (w.object.0, w.field.0))
                .collect::<Vec<_>>(),
            c.deletes
        ),
        ServerMessage::SubscriptionData {
            request_id,
            objects,
        } => format!(
            "Data {request_id} {:?}",
            objects.iter().map(|o| o.id.0).collect::<Vec<_>>()
        ),
        other => format!("{other:?}").chars().take(160).collect(),
    }
}
