//! Commit-id records and the database identity on the durable backends, across a restart of
//! the server: the file store, and a private Redis server.

use super::*;
use crate::storage::{FileStorage, RedisStorage, Storage};
use odb_wire::{CommitId, CommitStatus};
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Handles a request as the sequencer's loop does with a storage, then stores its batch.
async fn handle_stored(seq: &mut Sequencer, request: Request) {
    if durable::reads_state(&request) {
        seq.settle().await.expect("stored");
    }
    seq.handle(request);
    seq.settle().await.expect("stored");
}

async fn message(seq: &mut Sequencer, client: &Client, message: ClientMessage) {
    let request = Request::Message {
        conn: client.id,
        message,
        _budget: None,
        received: tokio::time::Instant::now(),
    };
    handle_stored(seq, request).await;
}

/// Registers a connection; returns it with its id block and the database identity.
async fn register(seq: &mut Sequencer) -> (Client, IdBlock, DatabaseId) {
    let closed = CancellationToken::new();
    let (outbound, queue) = outbound::channel(usize::MAX, closed.clone(), Arc::default());
    let (reply, mut id) = oneshot::channel();
    let request = Request::Register {
        outbound,
        client_name: "test".into(),
        protocol_version: PUSHED_BACK,
        reply,
    };
    handle_stored(seq, request).await;
    let id = id.try_recv().expect("registered");
    let mut client = Client { id, queue, closed };
    let Some(ServerMessage::Welcome { ids, database, .. }) = client.next() else {
        panic!("expected a Welcome");
    };
    client.commit_push();
    (client, ids, database)
}

async fn define(seq: &mut Sequencer, client: &mut Client) -> TypeIds {
    let schema = SchemaDef {
        name: "s".into(),
        types: vec![TypeDef {
            name: "T".into(),
            fields: Vec::new(),
            indices: Vec::new(),
        }],
    };
    let define = ClientMessage::DefineSchema {
        request_id: RequestId(1),
        schema,
    };
    message(seq, client, define).await;
    match client.next() {
        Some(ServerMessage::SchemaDefined { schema, .. }) => schema.types[0].clone(),
        other => panic!("expected SchemaDefined, got {other:?}"),
    }
}

fn id(seq: u64) -> CommitId {
    CommitId {
        session: 0x5e55,
        seq,
    }
}

/// Commits creating object `o` under commit id `seq`; returns the outcome.
async fn create(
    seq: &mut Sequencer,
    client: &mut Client,
    t: &TypeIds,
    o: u64,
    n: u64,
) -> CommitOutcome {
    let commit = CommitRequest {
        base_tid: seq.store.tid(),
        writes: vec![FieldWrite {
            object: ObjectId(o),
            field: t.exists_field,
            value: Some(Bytes::new()),
        }],
        commit_id: Some(id(n)),
        ..CommitRequest::default()
    };
    let request = ClientMessage::Commit {
        request_id: RequestId(2),
        commit,
    };
    message(seq, client, request).await;
    loop {
        match client.next() {
            Some(ServerMessage::Commit(_)) => continue,
            Some(ServerMessage::CommitResult { outcome, .. }) => return outcome,
            other => panic!("expected a commit result, got {other:?}"),
        }
    }
}

/// Commits three ids with a window of two records, restarts on a storage `open` returns
/// again, and checks what the restarted server knows.
async fn records_survive_a_restart<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn Storage>>,
{
    let config = || {
        Arc::new(ServerConfig {
            commit_id_window_count: 2,
            ..ServerConfig::new("t")
        })
    };
    let status = Arc::new(Status::default());
    let mut seq = durable::open(config(), status.clone(), Some(open().await))
        .await
        .expect("opens");
    let (mut client, block, database) = register(&mut seq).await;
    let t = define(&mut seq, &mut client).await;
    let mut commits = Vec::new();
    for n in 1..=3 {
        let base = seq.store.tid();
        let CommitOutcome::Committed { tid } =
            create(&mut seq, &mut client, &t, block.start + n, n).await
        else {
            panic!("commit {n} commits");
        };
        commits.push((base, tid));
    }
    drop((seq, client));

    let mut seq = durable::open(config(), status, Some(open().await))
        .await
        .expect("opens again");
    let (mut client, _, again) = register(&mut seq).await;
    assert_eq!(again, database, "the identity is stored");
    let current = seq.store.tid();
    let query = ClientMessage::QueryCommits {
        request_id: RequestId(3),
        commits: vec![
            (id(1), commits[0].0),
            (id(2), commits[1].0),
            (id(3), commits[2].0),
            (id(4), current),
        ],
    };
    message(&mut seq, &client, query).await;
    let Some(ServerMessage::CommitStatuses { statuses, .. }) = client.next() else {
        panic!("expected commit statuses");
    };
    assert_eq!(
        statuses,
        vec![
            CommitStatus::Unknown,
            CommitStatus::Applied { tid: commits[1].1 },
            CommitStatus::Applied { tid: commits[2].1 },
            CommitStatus::NotApplied,
        ],
        "records and the horizon are stored"
    );
    let t = define(&mut seq, &mut client).await;
    assert_eq!(
        create(&mut seq, &mut client, &t, block.start + 3, 3).await,
        CommitOutcome::AlreadyApplied { tid: commits[2].1 }
    );
}

#[tokio::test]
async fn commit_records_survive_a_restart_on_the_file_store() {
    let dir = std::env::temp_dir().join(format!(
        "odb-stored-sessions-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    records_survive_a_restart(|| {
        let dir = dir.clone();
        async move {
            Box::new(FileStorage::open(&dir).expect("opens the directory")) as Box<dyn Storage>
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private `redis-server` without persistence, on a free port; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (install it, e.g. apt-get install redis-server)");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited at start with {status}");
            }
            if RedisStorage::connect(&redis.url(), "probe:", Duration::from_secs(1))
                .await
                .is_ok()
            {
                return redis;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn commit_records_survive_a_restart_on_redis() {
    let redis = Redis::start().await;
    let url = redis.url();
    records_survive_a_restart(|| {
        let url = url.clone();
        async move {
            let storage = RedisStorage::connect(&url, "sessions:", Duration::from_secs(5))
                .await
                .expect("connects to Redis");
            Box::new(storage) as Box<dyn Storage>
        }
    })
    .await;
}
