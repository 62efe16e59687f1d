//! The server's protocol spoken with raw frames, over TCP and in process.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use odb_server::{Server, ServerConfig};
use odb_wire::{
    ClientMessage, CommitOutcome, CommitRequest, FieldWrite, IndexDef, Key, ObjectId, Refusal,
    RequestId, SchemaDef, ServerMessage, SubscriptionTarget, Tid, TypeDef, TypeId, TypeIds,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

mod common;
use common::*;

const TOKEN: &str = "test-token";

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A client speaking raw frames.
struct Raw {
    read: FramedRead<BoxRead, LengthDelimitedCodec>,
    write: FramedWrite<BoxWrite, LengthDelimitedCodec>,
    /// The protocol version its hello announces (the newest unless a test says otherwise).
    version: u32,
}

impl Raw {
    fn new<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Raw {
        let (r, w) = tokio::io::split(stream);
        Raw {
            read: FramedRead::new(Box::new(r), odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME)),
            write: FramedWrite::new(Box::new(w), odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME)),
            version: PROTOCOL_VERSION,
        }
    }

    /// The same client, announcing protocol `version` in its hello.
    fn speaking(self, version: u32) -> Raw {
        Raw { version, ..self }
    }

    async fn tcp(server: &Server) -> Raw {
        let addr = server.local_addr().expect("listening");
        Raw::new(tokio::net::TcpStream::connect(addr).await.expect("connect"))
    }

    fn in_process(server: &Server) -> Raw {
        Raw::new(server.connect_in_process().expect("in-process connection"))
    }

    async fn send_frame(&mut self, frame: Bytes) {
        self.write.send(frame).await.expect("send");
    }

    /// Sends a subscription to every object of a type.
    async fn subscribe_type(&mut self, request_id: u64, ty: TypeId) {
        self.send(ClientMessage::Subscribe {
            request_id: RequestId(request_id),
            targets: vec![SubscriptionTarget::Type(ty)],
        })
        .await;
    }

    async fn send(&mut self, message: ClientMessage) {
        self.send_frame(odb_wire::encode(&message).unwrap()).await;
    }

    /// The next message other than a heartbeat; `None` at end of stream.
    async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let frame = timeout(PATIENCE, self.read.next())
                .await
                .expect("server answers in time")?;
            let Ok(frame) = frame else { return None };
            match odb_wire::decode(&frame).expect("server messages decode") {
                ServerMessage::Heartbeat => continue,
                message => return Some(message),
            }
        }
    }

    async fn expect(&mut self) -> ServerMessage {
        self.recv().await.expect("a message, not end of stream")
    }

    /// Sends a hello and returns the answer. After a `Welcome`, also takes the registration
    /// commit that brings the connection's own `core.Connection` object.
    async fn hello(&mut self, token: &str) -> Option<ServerMessage> {
        self.send(ClientMessage::Hello {
            protocol_version: self.version,
            token: token.into(),
            client_name: "protocol-test".into(),
            oldest_protocol_version: self.version,
        })
        .await;
        let answer = self.recv().await;
        if let Some(ServerMessage::Welcome {
            connection, tid, ..
        }) = &answer
        {
            match self.expect().await {
                ServerMessage::Commit(data) => {
                    assert_eq!(data.tid, tid.next(), "registered at the next tid");
                    assert!(data.writes.iter().all(|w| w.object == *connection));
                    assert!(data
                        .writes
                        .iter()
                        .any(|w| w.value == Some(encoded("protocol-test"))));
                }
                other => panic!("expected the own connection object, got {other:?}"),
            }
        }
        answer
    }

    /// Authenticates and defines the test schema; returns type T (field a, index by_a).
    async fn login(&mut self) -> TypeIds {
        assert!(matches!(
            self.hello(TOKEN).await,
            Some(ServerMessage::Welcome { .. })
        ));
        self.send(ClientMessage::DefineSchema {
            request_id: RequestId(1),
            schema: SchemaDef {
                name: "test".into(),
                types: vec![TypeDef {
                    name: "T".into(),
                    fields: vec!["a".into()],
                    indices: vec![IndexDef {
                        name: "by_a".into(),
                        fields: vec!["a".into()],
                    }],
                }],
            },
        })
        .await;
        match self.expect().await {
            ServerMessage::SchemaDefined {
                request_id: RequestId(1),
                schema,
            } => schema.types[0].clone(),
            other => panic!("expected SchemaDefined, got {other:?}"),
        }
    }

    async fn flush(&mut self, request_id: u64) -> Tid {
        self.send(ClientMessage::Flush {
            request_id: RequestId(request_id),
        })
        .await;
        match self.expect().await {
            ServerMessage::Flushed { request_id: r, tid } if r == RequestId(request_id) => tid,
            other => panic!("expected Flushed, got {other:?}"),
        }
    }

    async fn commit(&mut self, request_id: u64, commit: CommitRequest) {
        self.send(ClientMessage::Commit {
            request_id: RequestId(request_id),
            commit,
        })
        .await;
    }

    async fn commit_result(&mut self) -> CommitOutcome {
        match self.expect().await {
            ServerMessage::CommitResult { outcome, .. } => outcome,
            other => panic!("expected CommitResult, got {other:?}"),
        }
    }

    /// Asserts the server closes the stream, possibly after saying why.
    async fn expect_closed(&mut self) {
        match self.recv().await {
            None => {}
            Some(ServerMessage::Closing { .. }) => {
                assert_eq!(self.recv().await, None, "nothing after Closing")
            }
            Some(other) => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

/// A value encoded as clients encode field values.
fn encoded(s: &str) -> Bytes {
    odb_wire::encode(s).unwrap()
}

#[tokio::test]
async fn wrong_token_is_rejected_while_others_keep_working() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut good = Raw::tcp(&server).await;
    good.login().await;

    let mut bad = Raw::tcp(&server).await;
    assert_eq!(
        bad.hello("not-the-token").await,
        Some(ServerMessage::Rejected {
            reason: Refusal::Unauthorized
        })
    );
    assert_eq!(bad.recv().await, None, "the server closes after Rejected");

    let mut old = Raw::in_process(&server);
    send_hello_version(&mut old, PROTOCOL_VERSION + 1).await;
    assert_eq!(
        old.recv().await,
        Some(ServerMessage::Rejected {
            reason: Refusal::ProtocolVersion {
                server: PROTOCOL_VERSION,
                oldest: odb_wire::OLDEST_PROTOCOL_VERSION,
            }
        })
    );

    let mut rude = Raw::tcp(&server).await;
    rude.send(ClientMessage::Flush {
        request_id: RequestId(1),
    })
    .await;
    assert!(matches!(
        rude.recv().await,
        Some(ServerMessage::Rejected {
            reason: Refusal::NotHello { .. }
        })
    ));

    assert_eq!(
        good.flush(2).await,
        Tid(1),
        "only the registration of the good connection committed"
    );
    assert_eq!(
        server.connection_count(),
        1,
        "rejected connections were never registered"
    );
    server.shutdown().await;
}

async fn send_hello_version(raw: &mut Raw, version: u32) {
    raw.send(ClientMessage::Hello {
        protocol_version: version,
        token: TOKEN.into(),
        client_name: "old".into(),
        oldest_protocol_version: version,
    })
    .await;
}

#[tokio::test]
async fn a_garbage_frame_closes_only_that_connection() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut good = Raw::in_process(&server);
    good.login().await;
    let mut garbage = Raw::tcp(&server).await;
    garbage.login().await;
    let mut second_hello = Raw::tcp(&server).await;
    second_hello.login().await;
    eventually("three connections are registered", || {
        server.connection_count() == 3
    })
    .await;

    garbage.send_frame(Bytes::from_static(&[0xff; 16])).await;
    garbage.expect_closed().await;
    assert!(second_hello
        .hello(TOKEN)
        .await
        .is_some_and(|m| matches!(m, ServerMessage::Closing { .. })));
    second_hello.expect_closed().await;

    eventually("both connections are dropped", || {
        server.connection_count() == 1
    })
    .await;
    assert_eq!(
        good.flush(7).await,
        Tid(5),
        "three registrations and two connection deletions"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_the_reason() {
    let config = ServerConfig {
        max_frame: odb_server::MIN_MAX_FRAME,
        ..ServerConfig::new(TOKEN)
    };
    let server = start(config).await;
    let mut big = Raw::tcp(&server).await;
    big.login().await;
    // Announce a frame far over the limit; the server must not wait for its body.
    let header = 1_000_000u32.to_be_bytes();
    big.write.get_mut().write_all(&header).await.unwrap();
    big.write.get_mut().flush().await.unwrap();
    // Heartbeats may come first; the last word is the reason.
    let mut last = None;
    while let Some(message) = big.recv().await {
        last = Some(message);
    }
    assert_eq!(
        last,
        Some(ServerMessage::Closing {
            reason: Refusal::FrameTooLarge {
                limit: odb_server::MIN_MAX_FRAME as u64
            }
        })
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_limit_too_small_to_work_is_refused_at_start() {
    let config = ServerConfig {
        max_frame: 100,
        ..ServerConfig::new(TOKEN)
    };
    match odb_server::Server::start(config, None).await {
        Err(odb_server::ServerError::Config(reason)) => {
            assert!(reason.contains("too small"), "{reason}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_gets_pushes_and_a_version_2_committer_its_push_before_its_result() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut writer = Raw::tcp(&server).await.speaking(OLDEST_PROTOCOL_VERSION);
    let t = writer.login().await;
    let mut reader = Raw::in_process(&server).speaking(OLDEST_PROTOCOL_VERSION);
    assert_eq!(reader.login().await, t, "the same schema gets the same ids");
    // Tids 1 and 2 registered the two connections.

    reader.subscribe_type(2, t.type_id).await;
    assert_eq!(
        reader.expect().await,
        ServerMessage::SubscriptionComplete {
            request_id: RequestId(2),
            tid: Tid(2)
        }
    );

    writer.commit(3, create(&t, 1_000, "x", Tid(2))).await;
    match writer.expect().await {
        ServerMessage::Commit(data) => {
            assert_eq!(data.tid, Tid(3));
            assert_eq!(data.writes.len(), 2);
        }
        other => panic!("the push must precede the result, got {other:?}"),
    }
    assert_eq!(
        writer.commit_result().await,
        CommitOutcome::Committed { tid: Tid(3) }
    );
    match reader.expect().await {
        ServerMessage::Commit(data) => {
            assert_eq!(data.tid, Tid(3));
            assert!(data
                .writes
                .iter()
                .any(|w| w.object == ObjectId(1_000) && w.value == Some(b("x"))));
            assert!(data.index_writes.iter().any(|w| w.index == t.all_index));
        }
        other => panic!("expected the pushed commit, got {other:?}"),
    }

    // The subscriber writes; the creator sees it, and the subscriber gets its push first too.
    let update = CommitRequest {
        base_tid: Tid(3),
        writes: vec![FieldWrite {
            object: ObjectId(1_000),
            field: t.fields[0],
            value: Some(b("y")),
        }],
        reads: vec![(ObjectId(1_000), t.exists_field)],
        ..CommitRequest::default()
    };
    reader.commit(4, update).await;
    assert!(matches!(reader.expect().await, ServerMessage::Commit(data) if data.tid == Tid(4)));
    assert_eq!(
        reader.commit_result().await,
        CommitOutcome::Committed { tid: Tid(4) }
    );
    assert!(matches!(writer.expect().await, ServerMessage::Commit(data) if data.tid == Tid(4)));
    assert_eq!(server.current_tid(), Tid(4));

    // A late subscriber gets the current data, then the completion at the current tid (its own
    // registration).
    let mut late = Raw::tcp(&server).await;
    late.login().await;
    late.send(ClientMessage::Subscribe {
        request_id: RequestId(5),
        targets: vec![
            SubscriptionTarget::Index {
                index: t.indices[0],
                value: b("x"),
            },
            SubscriptionTarget::Object(ObjectId(1_000)),
        ],
    })
    .await;
    match late.expect().await {
        ServerMessage::SubscriptionData { objects, .. } => {
            assert_eq!(objects.len(), 1);
            assert!(objects.to_vec()[0].fields.contains(&(t.fields[0], b("y"))));
        }
        other => panic!("expected subscription data, got {other:?}"),
    }
    assert_eq!(
        late.expect().await,
        ServerMessage::SubscriptionComplete {
            request_id: RequestId(5),
            tid: Tid(5)
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_committer_that_saw_everything_it_changed_gets_its_result_and_no_push() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut writer = Raw::tcp(&server).await;
    let t = writer.login().await;
    let mut reader = Raw::in_process(&server);
    reader.login().await;
    reader.subscribe_type(2, t.type_id).await;
    assert!(matches!(
        reader.expect().await,
        ServerMessage::SubscriptionComplete { .. }
    ));

    // Its own creation: answered as sent, pushed to the subscriber only.
    writer.commit(3, create(&t, 1_000, "x", Tid(2))).await;
    assert_eq!(
        writer.commit_result().await,
        CommitOutcome::CommittedAsSent { tid: Tid(3) }
    );
    assert!(matches!(reader.expect().await, ServerMessage::Commit(data) if data.tid == Tid(3)));

    // The subscriber updates an object it sees: answered as sent too; the creator gets the push.
    let update = CommitRequest {
        base_tid: Tid(3),
        writes: vec![FieldWrite {
            object: ObjectId(1_000),
            field: t.fields[0],
            value: Some(b("y")),
        }],
        ..CommitRequest::default()
    };
    reader.commit(4, update).await;
    assert_eq!(
        reader.commit_result().await,
        CommitOutcome::CommittedAsSent { tid: Tid(4) }
    );
    assert!(matches!(writer.expect().await, ServerMessage::Commit(data) if data.tid == Tid(4)));
    // Nothing else is waiting for the writer: the next thing it gets answers its flush.
    assert_eq!(writer.flush(5).await, Tid(4));
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_writers_of_a_read_field_conflict() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut one = Raw::tcp(&server).await;
    let t = one.login().await;
    let mut two = Raw::in_process(&server);
    two.login().await;
    // Tids 1 and 2 registered the two connections.
    assert_eq!(
        commit_ok(&mut one, 1, create(&t, 500, "0", Tid(0))).await,
        Tid(3)
    );

    let increment = |value: &str| CommitRequest {
        base_tid: Tid(3),
        writes: vec![FieldWrite {
            object: ObjectId(500),
            field: t.fields[0],
            value: Some(b(value)),
        }],
        reads: vec![(ObjectId(500), t.fields[0])],
        ..CommitRequest::default()
    };
    assert_eq!(commit_ok(&mut one, 2, increment("1")).await, Tid(4));
    two.commit(2, increment("1")).await;
    assert_eq!(
        two.commit_result().await,
        CommitOutcome::Conflict {
            key: Key::Field(ObjectId(500), t.fields[0]),
            written_at: Tid(4)
        }
    );
    assert_eq!(two.flush(3).await, Tid(4), "the conflict consumed no tid");
    server.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_closed() {
    let config = ServerConfig {
        heartbeat_interval: Duration::from_millis(20),
        missed_heartbeats: 3,
        hello_timeout: Duration::from_millis(100),
        ..ServerConfig::new(TOKEN)
    };
    let server = start(config).await;
    let mut mute = Raw::tcp(&server).await;
    assert!(matches!(
        mute.recv().await,
        Some(ServerMessage::Rejected {
            reason: Refusal::HelloTimeout { .. }
        })
    ));
    assert_eq!(mute.recv().await, None);

    let mut quiet = Raw::in_process(&server);
    quiet.login().await;
    // Heartbeats arrive, but this client never sends one: it is closed.
    let closing = loop {
        let frame = timeout(PATIENCE, quiet.read.next()).await.unwrap();
        let Some(Ok(frame)) = frame else {
            panic!("closed without saying why")
        };
        match odb_wire::decode::<ServerMessage>(&frame).unwrap() {
            ServerMessage::Heartbeat => continue,
            other => break other,
        }
    };
    assert!(matches!(
        closing,
        ServerMessage::Closing {
            reason: Refusal::Silent { .. }
        }
    ));
    eventually("the silent connection is dropped", || {
        server.connection_count() == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn ids_and_shutdown() {
    let server = start(ServerConfig {
        id_block_size: 10,
        ..ServerConfig::new(TOKEN)
    })
    .await;
    let mut client = Raw::tcp(&server).await;
    let Some(ServerMessage::Welcome {
        connection,
        ids,
        tid,
        heartbeat_interval_ms,
        ..
    }) = client.hello(TOKEN).await
    else {
        panic!("expected Welcome")
    };
    assert_eq!(
        (connection, ids.start, ids.len, tid, heartbeat_interval_ms),
        (ObjectId(1), 2, 10, Tid(0), 5000)
    );
    client
        .send(ClientMessage::RequestIds {
            request_id: RequestId(1),
            count: 50,
        })
        .await;
    assert!(
        matches!(client.expect().await, ServerMessage::Ids { block, .. } if block.start == 12 && block.len == 50)
    );

    let in_process = Raw::in_process(&server);
    server.shutdown().await;
    client.expect_closed().await;
    drop(in_process);
}

#[tokio::test]
async fn binding_a_used_port_fails_with_a_clear_error() {
    let first = start(ServerConfig::new(TOKEN)).await;
    let addr = first.local_addr().unwrap();
    let err = Server::start(ServerConfig::new(TOKEN), Some(addr))
        .await
        .expect_err("port is taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    first.shutdown().await;
}

/// Asks for `count` object ids and returns the first.
async fn grant(raw: &mut Raw, request_id: u64, count: u64) -> u64 {
    raw.send(ClientMessage::RequestIds {
        request_id: RequestId(request_id),
        count,
    })
    .await;
    match raw.expect().await {
        ServerMessage::Ids { block, .. } => block.start,
        other => panic!("expected Ids, got {other:?}"),
    }
}

/// Commits and returns the tid, after taking the commit's push if there is one.
async fn commit_ok(raw: &mut Raw, request_id: u64, commit: CommitRequest) -> Tid {
    raw.commit(request_id, commit).await;
    loop {
        match raw.expect().await {
            ServerMessage::Commit(_) => continue,
            ServerMessage::CommitResult { outcome, .. } => match outcome.committed_at() {
                Some(tid) => return tid,
                None => panic!("expected a commit, got {outcome:?}"),
            },
            other => panic!("expected the commit's result, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_large_subscription_streams_in_chunks_while_others_commit() {
    const OBJECTS: u64 = 100_000;
    const PER_COMMIT: u64 = 10_000;
    // The snapshot's frames take far more than this; only what is queued behind it counts.
    const QUEUE_LIMIT: usize = 512 << 10;
    let server = start(ServerConfig {
        outbound_limit_bytes: QUEUE_LIMIT,
        ..ServerConfig::new(TOKEN)
    })
    .await;
    let mut writer = Raw::in_process(&server);
    let t = writer.login().await;
    let first = grant(&mut writer, 2, OBJECTS + 1).await;
    let mut base = writer.flush(3).await;
    for start in (0..OBJECTS).step_by(PER_COMMIT as usize) {
        let mut req = CommitRequest {
            base_tid: base,
            ..CommitRequest::default()
        };
        for o in first + start..first + start + PER_COMMIT {
            let one = create(&t, o, "x", base);
            req.writes.extend(one.writes);
            req.index_writes.extend(one.index_writes);
        }
        base = commit_ok(&mut writer, 4, req).await;
    }

    let mut subscriber = Raw::in_process(&server);
    subscriber.login().await;
    subscriber.subscribe_type(7, t.type_id).await;
    // The subscriber reads one chunk, then nothing while another client commits.
    let mut received = match subscriber.expect().await {
        ServerMessage::SubscriptionData { objects, .. } => objects.len(),
        other => panic!("expected subscription data, got {other:?}"),
    };
    assert!(received <= 1000);
    assert_eq!(server.stats().outbound_snapshots, 1, "still streaming");
    let extra = first + OBJECTS;
    let committed = commit_ok(&mut writer, 5, create(&t, extra, "x", base)).await;
    let stats = server.stats();
    assert_eq!(
        stats.outbound_snapshots, 1,
        "the commit did not wait for it"
    );
    assert!(stats.outbound_bytes < QUEUE_LIMIT, "{stats:?}");

    // The rest of the snapshot, its completion, then the commit made meanwhile.
    let complete = loop {
        match subscriber.expect().await {
            ServerMessage::SubscriptionData { objects, .. } => {
                assert!(objects.len() <= 1000);
                received += objects.len();
            }
            ServerMessage::SubscriptionComplete {
                request_id: RequestId(7),
                tid,
            } => break tid,
            other => panic!("expected subscription data, got {other:?}"),
        }
    };
    assert_eq!(received, OBJECTS as usize);
    assert!(complete < committed);
    match subscriber.expect().await {
        ServerMessage::Commit(data) => {
            assert_eq!(data.tid, committed);
            assert!(data.writes.iter().any(|w| w.object == ObjectId(extra)));
        }
        other => panic!("expected the commit made while streaming, got {other:?}"),
    }
    eventually("the snapshot is done", || {
        server.stats().outbound_snapshots == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn unsubscribing_drops_objects_and_stops_their_pushes() {
    let server = start(ServerConfig::new(TOKEN)).await;
    let mut writer = Raw::tcp(&server).await;
    let t = writer.login().await;
    let o = grant(&mut writer, 2, 1).await;
    let base = writer.flush(3).await;
    commit_ok(&mut writer, 4, create(&t, o, "x", base)).await;

    let mut reader = Raw::tcp(&server).await;
    reader.login().await;
    let target = SubscriptionTarget::Type(t.type_id);
    reader
        .send(ClientMessage::Subscribe {
            request_id: RequestId(2),
            targets: vec![target.clone()],
        })
        .await;
    assert!(matches!(
        reader.expect().await,
        ServerMessage::SubscriptionData { objects, .. } if objects.len() == 1
    ));
    assert!(matches!(
        reader.expect().await,
        ServerMessage::SubscriptionComplete { .. }
    ));
    reader
        .send(ClientMessage::Unsubscribe {
            request_id: RequestId(3),
            targets: vec![target],
        })
        .await;
    assert_eq!(
        reader.expect().await,
        ServerMessage::Unsubscribed {
            request_id: RequestId(3),
            tid: server.current_tid(),
            dropped: vec![ObjectId(o)],
        }
    );
    let update = CommitRequest {
        base_tid: server.current_tid(),
        writes: vec![FieldWrite {
            object: ObjectId(o),
            field: t.fields[0],
            value: Some(b("y")),
        }],
        ..CommitRequest::default()
    };
    let tid = commit_ok(&mut writer, 5, update).await;
    assert_eq!(
        reader.flush(4).await,
        tid,
        "Flushed comes with no push before it"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stats_stay_flat_under_churn() {
    let server = start(ServerConfig {
        conflict_history: 100,
        ..ServerConfig::new(TOKEN)
    })
    .await;
    let mut client = Raw::in_process(&server);
    let t = client.login().await;
    let baseline = server.stats();
    assert_eq!((baseline.connections, baseline.objects), (1, 1));

    for _ in 0..50 {
        let mut other = Raw::in_process(&server);
        other.login().await;
    }
    eventually("every other connection is gone", || {
        let stats = server.stats();
        stats.connections == 1 && stats.objects == 1
    })
    .await;

    let first = grant(&mut client, 2, 1_000).await;
    let mut base = client.flush(3).await;
    for o in first..first + 1_000 {
        base = commit_ok(&mut client, 4, create(&t, o, "x", base)).await;
        let delete = CommitRequest {
            base_tid: base,
            deletes: vec![ObjectId(o)],
            ..CommitRequest::default()
        };
        base = commit_ok(&mut client, 5, delete).await;
    }
    let stats = server.stats();
    assert_eq!(stats.objects, 1);
    assert!(
        stats.conflict_stamps <= 100 * 4,
        "at most the keys of the last 100 commits: {stats:?}"
    );
    eventually("nothing is queued", || server.stats().outbound_bytes == 0).await;
    server.shutdown().await;
}
