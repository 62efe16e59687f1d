//! Hostile peers speaking raw frames: malformed, truncated and oversized frames, well-formed
//! nonsense, limits, a client that never reads, floods of connections and of wrong tokens, and
//! arbitrary message sequences. In every case only the offending connection gets an error or is
//! closed, every other client keeps being served, and no committed data changes.

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use odb_server::{Server, ServerConfig, ServerError, TlsConfig};
use odb_wire::limits::Limit;
use odb_wire::{
    ClientMessage, CommitOutcome, CommitRequest, FieldId, FieldWrite, IdBlock, IndexDef, IndexId,
    IndexWrite, ObjectData, ObjectId, Refusal, RequestId, SchemaDef, ServerMessage,
    SubscriptionTarget, Tid, TypeDef, TypeId, TypeIds, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

mod common;
use common::*;

const TOKEN: &str = "hostile-test-token";

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A client speaking raw frames.
struct Raw {
    read: FramedRead<BoxRead, LengthDelimitedCodec>,
    write: FramedWrite<BoxWrite, LengthDelimitedCodec>,
}

/// What the welcome granted.
struct Session {
    ids: IdBlock,
    schema: Vec<TypeIds>,
}

impl Raw {
    fn new<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Raw {
        let (r, w) = tokio::io::split(stream);
        Raw {
            read: FramedRead::new(Box::new(r), odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME)),
            write: FramedWrite::new(Box::new(w), odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME)),
        }
    }

    async fn tcp(server: &Server) -> Raw {
        let addr = server.local_addr().expect("listening");
        Raw::new(tokio::net::TcpStream::connect(addr).await.expect("connect"))
    }

    /// Sends a frame; `false` if the server already closed the connection.
    async fn send_frame(&mut self, frame: Bytes) -> bool {
        self.write.send(frame).await.is_ok()
    }

    async fn send(&mut self, message: &ClientMessage) -> bool {
        self.send_frame(odb_wire::encode(message).unwrap()).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let socket = self.write.get_mut();
        let _ = socket.write_all(bytes).await;
        let _ = socket.flush().await;
    }

    /// The next message other than a heartbeat or a pushed commit; `None` at end of stream or
    /// on a broken connection.
    async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let frame = timeout(PATIENCE, self.read.next())
                .await
                .expect("the server answers in time")?;
            let Ok(frame) = frame else { return None };
            match odb_wire::decode(&frame).expect("server messages decode") {
                ServerMessage::Heartbeat | ServerMessage::Commit(_) => continue,
                message => return Some(message),
            }
        }
    }

    async fn expect(&mut self) -> ServerMessage {
        self.recv().await.expect("a message, not end of stream")
    }

    async fn hello(&mut self, token: &str) -> Option<ServerMessage> {
        self.send(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.into(),
            client_name: "hostile-test".into(),
            oldest_protocol_version: PROTOCOL_VERSION,
        })
        .await;
        self.recv().await
    }

    /// Authenticates and defines the test schema: type T (field a, index by_a) and type U
    /// (field b, index by_b).
    async fn login(&mut self) -> Session {
        let ids = match self.hello(TOKEN).await {
            Some(ServerMessage::Welcome { ids, .. }) => ids,
            other => panic!("expected Welcome, got {other:?}"),
        };
        let ty = |name: &str, field: &str| TypeDef {
            name: name.into(),
            fields: vec![field.into()],
            indices: vec![IndexDef {
                name: format!("by_{field}"),
                fields: vec![field.into()],
            }],
        };
        self.send(&ClientMessage::DefineSchema {
            request_id: RequestId(1),
            schema: SchemaDef {
                name: "hostile".into(),
                types: vec![ty("T", "a"), ty("U", "b")],
            },
        })
        .await;
        match self.expect().await {
            ServerMessage::SchemaDefined { schema, .. } => Session {
                ids,
                schema: schema.types,
            },
            other => panic!("expected SchemaDefined, got {other:?}"),
        }
    }

    async fn flush(&mut self) -> Tid {
        self.send(&ClientMessage::Flush {
            request_id: RequestId(u64::MAX),
        })
        .await;
        match self.expect().await {
            ServerMessage::Flushed { tid, .. } => tid,
            other => panic!("expected Flushed, got {other:?}"),
        }
    }

    async fn commit(&mut self, commit: CommitRequest) -> CommitOutcome {
        self.send(&ClientMessage::Commit {
            request_id: RequestId(7),
            commit,
        })
        .await;
        match self.expect().await {
            ServerMessage::CommitResult { outcome, .. } => outcome,
            other => panic!("expected CommitResult, got {other:?}"),
        }
    }

    /// Every object of type `ty`, as a fresh subscription sees it.
    async fn snapshot(&mut self, ty: TypeId) -> Vec<ObjectData> {
        self.send(&ClientMessage::Subscribe {
            request_id: RequestId(9),
            targets: vec![SubscriptionTarget::Type(ty)],
        })
        .await;
        let mut objects = Vec::new();
        loop {
            match self.expect().await {
                ServerMessage::SubscriptionData { objects: chunk, .. } => objects.extend(chunk),
                ServerMessage::SubscriptionComplete { .. } => return objects,
                other => panic!("expected subscription data, got {other:?}"),
            }
        }
    }

    /// Asserts the server closes the stream, possibly after saying why; returns what it said.
    async fn expect_closed(&mut self) -> Option<ServerMessage> {
        match self.recv().await {
            None => None,
            Some(said @ (ServerMessage::Closing { .. } | ServerMessage::Rejected { .. })) => {
                assert_eq!(self.recv().await, None, "nothing after {said:?}");
                Some(said)
            }
            Some(other) => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

fn config() -> ServerConfig {
    ServerConfig::new(TOKEN)
}

fn invalid_reason(outcome: CommitOutcome) -> String {
    match outcome {
        CommitOutcome::Invalid { reason, .. } => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn invalid_limit(outcome: CommitOutcome) -> Option<Limit> {
    match outcome {
        CommitOutcome::Invalid { limit, .. } => limit,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A well-behaved client with one committed object of type T, the canary.
struct Canary {
    raw: Raw,
    session: Session,
    data: Vec<ObjectData>,
    addr: std::net::SocketAddr,
}

impl Canary {
    async fn new(server: &Server) -> Canary {
        let mut raw = Raw::tcp(server).await;
        let session = raw.login().await;
        let t = session.schema[0].clone();
        let outcome = raw
            .commit(create(&t, session.ids.start, "canary", Tid(0)))
            .await;
        assert!(outcome.committed_at().is_some(), "{outcome:?}");
        let data = raw.snapshot(t.type_id).await;
        assert_eq!(data.len(), 1);
        Canary {
            raw,
            session,
            data,
            addr: server.local_addr().expect("listening"),
        }
    }

    fn t(&self) -> &TypeIds {
        &self.session.schema[0]
    }

    fn u(&self) -> &TypeIds {
        &self.session.schema[1]
    }

    /// The canary client is still served, a new client is accepted, and the data of type T is
    /// exactly as it was.
    async fn check(&mut self) {
        self.raw.flush().await;
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("a new connection is accepted");
        let mut fresh = Raw::new(stream);
        fresh.login().await;
        assert_eq!(fresh.snapshot(self.t().type_id).await, self.data);
    }
}

#[tokio::test]
async fn malformed_truncated_and_oversized_frames_close_only_their_connection() {
    let server = start(config()).await;
    let mut canary = Canary::new(&server).await;

    // Before authentication.
    let mut garbage = Raw::tcp(&server).await;
    garbage.send_frame(Bytes::from_static(&[0xff; 16])).await;
    assert!(matches!(
        garbage.expect_closed().await,
        Some(ServerMessage::Rejected {
            reason: Refusal::NotHello { .. }
        })
    ));

    // A length prefix far over the pre-authentication limit (but under the frame limit) is
    // refused at once, without waiting for the body.
    let mut oversized = Raw::tcp(&server).await;
    oversized.send_raw(&(1u32 << 20).to_be_bytes()).await;
    match oversized.expect_closed().await {
        Some(ServerMessage::Rejected {
            reason: Refusal::NotHello { detail },
        }) => assert!(detail.contains("unreadable"), "{detail}"),
        other => panic!("expected Rejected, got {other:?}"),
    }

    let mut truncated = Raw::tcp(&server).await;
    truncated.send_raw(&100u32.to_be_bytes()).await;
    truncated.send_raw(&[1; 10]).await;
    let _ = truncated.write.get_mut().shutdown().await;
    truncated.expect_closed().await;

    // After authentication.
    let mut garbage = Raw::tcp(&server).await;
    garbage.login().await;
    garbage.send_frame(Bytes::from_static(&[0xff; 16])).await;
    garbage.expect_closed().await;

    let mut oversized = Raw::tcp(&server).await;
    oversized.login().await;
    oversized
        .send_raw(&((odb_wire::DEFAULT_MAX_FRAME as u32) + 1).to_be_bytes())
        .await;
    oversized.expect_closed().await;

    let mut truncated = Raw::tcp(&server).await;
    truncated.login().await;
    truncated.send_raw(&1000u32.to_be_bytes()).await;
    truncated.send_raw(&[0; 10]).await;
    let _ = truncated.write.get_mut().shutdown().await;
    truncated.expect_closed().await;

    // An empty frame and one with trailing bytes after a valid message.
    let mut empty = Raw::tcp(&server).await;
    empty.login().await;
    empty.send_frame(Bytes::new()).await;
    empty.expect_closed().await;
    let mut trailing = Raw::tcp(&server).await;
    trailing.login().await;
    let mut frame = odb_wire::encode(&ClientMessage::Heartbeat)
        .unwrap()
        .to_vec();
    frame.extend_from_slice(&[0, 0, 0]);
    trailing.send_frame(Bytes::from(frame)).await;
    trailing.expect_closed().await;

    eventually("only the canary stays connected", || {
        server.connection_count() == 1
    })
    .await;
    canary.check().await;
    server.shutdown().await;
}

#[tokio::test]
async fn well_formed_nonsense_is_refused_and_changes_nothing() {
    let server = start(config()).await;
    let mut canary = Canary::new(&server).await;
    let (t, u) = (canary.t().clone(), canary.u().clone());

    let mut hostile = Raw::tcp(&server).await;
    let own = hostile.login().await.ids;

    // Unknown field id.
    let mut commit = create(&t, own.start, "x", Tid(0));
    commit.writes[1].field = FieldId(9_999);
    let reason = invalid_reason(hostile.commit(commit).await);
    assert!(reason.contains("unknown field id"), "{reason}");

    // An index of another type.
    let mut commit = create(&t, own.start, "x", Tid(0));
    commit.index_writes[0].index = u.indices[0];
    let reason = invalid_reason(hostile.commit(commit).await);
    assert!(reason.contains("belongs to type"), "{reason}");

    // An unknown index id.
    let mut commit = create(&t, own.start, "x", Tid(0));
    commit.index_writes[0].index = IndexId(9_999);
    let reason = invalid_reason(hostile.commit(commit).await);
    assert!(reason.contains("unknown index id"), "{reason}");

    // Ids never granted to this connection: in the canary's block, and ids nobody was granted.
    for id in [
        canary.session.ids.start + 1,
        canary.session.ids.start + canary.session.ids.len - 1,
        own.start + own.len + 1_000_000,
    ] {
        let reason = invalid_reason(hostile.commit(create(&t, id, "x", Tid(0))).await);
        assert!(reason.contains("not granted"), "{reason}");
    }

    // A schema never defined: field and index ids no type has.
    let never = CommitRequest {
        writes: vec![FieldWrite {
            object: ObjectId(own.start),
            field: FieldId(50_000),
            value: Some(Bytes::new()),
        }],
        ..CommitRequest::default()
    };
    let reason = invalid_reason(hostile.commit(never).await);
    assert!(reason.contains("unknown field id"), "{reason}");

    // Writing to or deleting an object that does not exist, reading unknown fields, a base tid
    // from the future.
    let mut commit = create(&t, own.start, "x", Tid(0));
    commit.writes.remove(0);
    commit.index_writes.clear();
    invalid_reason(hostile.commit(commit).await);
    invalid_reason(
        hostile
            .commit(CommitRequest {
                deletes: vec![ObjectId(own.start + 5)],
                ..CommitRequest::default()
            })
            .await,
    );
    invalid_reason(
        hostile
            .commit(CommitRequest {
                reads: vec![(ObjectId(1), FieldId(77_777))],
                ..CommitRequest::default()
            })
            .await,
    );
    invalid_reason(
        hostile
            .commit(CommitRequest {
                base_tid: Tid(u64::MAX),
                ..create(&t, own.start, "x", Tid(0))
            })
            .await,
    );
    // The maintained all-objects index cannot be written.
    let mut commit = create(&t, own.start, "x", Tid(0));
    commit.index_writes[0] = IndexWrite {
        object: ObjectId(own.start),
        index: t.all_index,
        value: Some(b("forged")),
    };
    invalid_reason(hostile.commit(commit).await);

    // Subscriptions to unknown types and indices fail alone.
    for target in [
        SubscriptionTarget::Type(TypeId(9_999)),
        SubscriptionTarget::Index {
            index: IndexId(9_999),
            value: Bytes::new(),
        },
    ] {
        hostile
            .send(&ClientMessage::Subscribe {
                request_id: RequestId(3),
                targets: vec![target],
            })
            .await;
        assert!(matches!(
            hostile.expect().await,
            ServerMessage::RequestFailed { .. }
        ));
    }
    // Absurd id requests fail alone too.
    hostile
        .send(&ClientMessage::RequestIds {
            request_id: RequestId(4),
            count: u64::MAX,
        })
        .await;
    assert!(matches!(
        hostile.expect().await,
        ServerMessage::RequestFailed { .. }
    ));

    // A second hello closes the connection.
    hostile
        .send(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: TOKEN.into(),
            client_name: "again".into(),
            oldest_protocol_version: PROTOCOL_VERSION,
        })
        .await;
    hostile.expect_closed().await;

    // After all that, the one valid creation with a granted id still works.
    let mut honest = Raw::tcp(&server).await;
    let ids = honest.login().await.ids;
    let outcome = honest.commit(create(&u, ids.start, "fine", Tid(0))).await;
    assert!(outcome.committed_at().is_some(), "{outcome:?}");
    // Ids granted later by RequestIds are accepted as well.
    honest
        .send(&ClientMessage::RequestIds {
            request_id: RequestId(5),
            count: 1,
        })
        .await;
    let block = match honest.expect().await {
        ServerMessage::Ids { block, .. } => block,
        other => panic!("expected Ids, got {other:?}"),
    };
    let outcome = honest
        .commit(create(&u, block.start, "later", Tid(0)))
        .await;
    assert!(outcome.committed_at().is_some(), "{outcome:?}");
    canary.check().await;
    server.shutdown().await;
}

#[tokio::test]
async fn limits_are_refused_with_their_names() {
    let server = start(ServerConfig {
        max_writes_per_commit: 4,
        max_reads_per_commit: 2,
        max_value_bytes: 64,
        max_subscriptions: 2,
        ..config()
    })
    .await;
    let mut canary = Canary::new(&server).await;
    let t = canary.t().clone();
    let mut client = Raw::tcp(&server).await;
    let ids = client.login().await.ids;

    let mut too_many = create(&t, ids.start, "x", Tid(0));
    too_many.deletes = vec![ObjectId(ids.start + 1), ObjectId(ids.start + 2)];
    assert_eq!(
        invalid_limit(client.commit(too_many).await),
        Some(Limit::WritesPerCommit)
    );

    let mut reads = create(&t, ids.start, "x", Tid(0));
    reads.reads = vec![(ObjectId(1), t.fields[0]); 3];
    assert_eq!(
        invalid_limit(client.commit(reads).await),
        Some(Limit::ReadsPerCommit)
    );

    let big = "v".repeat(65);
    assert_eq!(
        invalid_limit(client.commit(create(&t, ids.start, &big, Tid(0))).await),
        Some(Limit::ValueSize)
    );

    let objects = |range: std::ops::Range<u64>| -> Vec<SubscriptionTarget> {
        range
            .map(|o| SubscriptionTarget::Object(ObjectId(o)))
            .collect()
    };
    client
        .send(&ClientMessage::Subscribe {
            request_id: RequestId(20),
            targets: objects(100..103),
        })
        .await;
    match client.expect().await {
        ServerMessage::RequestFailed { reason, limit, .. } => {
            assert_eq!(limit, Some(Limit::SubscriptionsPerConnection), "{reason}")
        }
        other => panic!("expected RequestFailed, got {other:?}"),
    }
    // Within the limit, and the same targets again, are fine.
    for _ in 0..2 {
        client
            .send(&ClientMessage::Subscribe {
                request_id: RequestId(21),
                targets: objects(100..102),
            })
            .await;
        assert!(matches!(
            client.expect().await,
            ServerMessage::SubscriptionComplete { .. }
        ));
    }

    let outcome = client.commit(create(&t, ids.start, "ok", Tid(0))).await;
    assert!(outcome.committed_at().is_some(), "{outcome:?}");
    canary.data = {
        let mut fresh = Raw::tcp(&server).await;
        fresh.login().await;
        fresh.snapshot(t.type_id).await
    };
    assert_eq!(canary.data.len(), 2, "exactly the one valid commit applied");
    canary.check().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let server = start(ServerConfig {
        outbound_limit_bytes: 256 << 10,
        ..config()
    })
    .await;
    let mut canary = Canary::new(&server).await;
    let t = canary.t().clone();

    // Subscribes to every T, then never reads again (with a tiny receive buffer).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.local_addr().unwrap()).await.unwrap();
    let mut sleeper = Raw::new(stream);
    sleeper.login().await;
    sleeper
        .send(&ClientMessage::Subscribe {
            request_id: RequestId(2),
            targets: vec![SubscriptionTarget::Type(t.type_id)],
        })
        .await;
    eventually("the sleeper is connected", || {
        server.connection_count() == 2
    })
    .await;

    let mut writer = Raw::tcp(&server).await;
    let ids = writer.login().await.ids;
    let value = "w".repeat(32 << 10);
    let mut n = 0;
    while server.connection_count() > 2 || n == 0 {
        let outcome = writer
            .commit(create(&t, ids.start + n, &value, Tid(0)))
            .await;
        assert!(outcome.committed_at().is_some(), "{outcome:?}");
        n += 1;
        assert!(n < 2_000, "the sleeper was never disconnected");
    }
    eventually("the sleeper is disconnected", || {
        server.connection_count() == 2
    })
    .await;
    writer.flush().await;
    canary.data = {
        let mut fresh = Raw::tcp(&server).await;
        fresh.login().await;
        fresh.snapshot(t.type_id).await
    };
    assert_eq!(canary.data.len() as u64, n + 1);
    canary.check().await;
    drop(sleeper);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_others_keep_working() {
    let server = start(ServerConfig {
        max_connections: 4,
        max_hello_connections_per_address: Some(100),
        ..config()
    })
    .await;
    let mut canary = Canary::new(&server).await;

    // Three silent connections fill the remaining places.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Raw::tcp(&server).await);
    }
    // Give the accept loop time to hand out the places before the flood.
    idle[2].send_raw(&[]).await;
    let mut refused = 0;
    for _ in 0..20 {
        let mut extra = Raw::tcp(&server).await;
        match extra.recv().await {
            Some(ServerMessage::Rejected {
                reason: Refusal::ServerFull { limit: 4 },
            }) => refused += 1,
            None => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(refused > 0, "no connection was refused");
    canary.raw.flush().await;
    assert_eq!(server.connection_count(), 1);

    // Once the idle connections leave, new ones are accepted again.
    drop(idle);
    let addr = server.local_addr().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut late = loop {
        let mut raw = Raw::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        match raw.hello(TOKEN).await {
            Some(ServerMessage::Welcome { .. }) => break raw,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no place was freed in time"
                );
                tokio::time::sleep(Duration::from_millis(20)).await
            }
        }
    };
    late.flush().await;
    // The canary's check needs one more place.
    drop(late);
    eventually("the late client left", || server.connection_count() == 1).await;
    canary.check().await;
    server.shutdown().await;
}

/// Whether a message from the server is waiting right now.
fn answered(raw: &mut Raw) -> bool {
    raw.read.next().now_or_never().is_some()
}

#[tokio::test]
async fn bad_hellos_never_delay_a_right_token_from_the_same_address() {
    let server = start(config()).await;
    let garbage = || Bytes::from_static(&[0xff; 16]);
    // Seven malformed first frames, one after the other: five free, then growing delays.
    for _ in 0..7 {
        let mut raw = Raw::tcp(&server).await;
        raw.send_frame(garbage()).await;
        assert!(matches!(
            raw.expect_closed().await,
            Some(ServerMessage::Rejected {
                reason: Refusal::NotHello { .. }
            })
        ));
    }
    // The eighth failure from this address is answered only after a delay (a second), and
    // five more follow at once: thirteen bad frames in all.
    let mut delayed = Raw::tcp(&server).await;
    delayed.send_frame(garbage()).await;
    let mut more = Vec::new();
    for _ in 0..5 {
        let mut raw = Raw::tcp(&server).await;
        raw.send_frame(garbage()).await;
        more.push(raw);
    }
    // A right token from the same address is answered at once, long before that delay ends;
    // a wrong token too, since malformed frames and wrong tokens are counted apart.
    let mut right = Raw::tcp(&server).await;
    assert!(matches!(
        right.hello(TOKEN).await,
        Some(ServerMessage::Welcome { .. })
    ));
    let mut wrong = Raw::tcp(&server).await;
    assert_eq!(
        wrong.hello("guess").await,
        Some(ServerMessage::Rejected {
            reason: Refusal::Unauthorized
        })
    );
    assert!(
        !answered(&mut delayed),
        "the delayed failure was answered before the right token"
    );
    // Wrong tokens past the free ones are delayed in turn, so a guesser waits.
    let mut guesses = Vec::new();
    for _ in 0..8 {
        let mut raw = Raw::tcp(&server).await;
        raw.send(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: "guess".into(),
            client_name: "hostile-test".into(),
            oldest_protocol_version: PROTOCOL_VERSION,
        })
        .await;
        guesses.push(raw);
    }
    let mut late = Raw::tcp(&server).await;
    assert!(matches!(
        late.hello(TOKEN).await,
        Some(ServerMessage::Welcome { .. })
    ));
    let waiting = guesses
        .iter_mut()
        .filter_map(|g| (!answered(g)).then_some(()))
        .count();
    assert!(waiting > 0, "no wrong token is delayed");
    // In process (no address) nothing is slowed down.
    let mut in_process = Raw::new(server.connect_in_process().unwrap());
    in_process.login().await;
    server.shutdown().await;
}

/// Connects to the server from another loopback address.
async fn tcp_from(server: &Server, local: &str) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{local}:0").parse().unwrap())
        .expect("bind a loopback address");
    let stream = socket
        .connect(server.local_addr().expect("listening"))
        .await
        .expect("connect");
    Raw::new(stream)
}

#[tokio::test]
async fn one_address_cannot_fill_the_server_with_idle_connections() {
    let server = start(ServerConfig {
        max_connections: 50,
        ..config()
    })
    .await;
    // One address opens as many connections as the server allows and never says hello.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tcp_from(&server, "127.0.0.1").await);
    }
    // Forty legitimate clients from another address.
    let mut welcomed = 0;
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut client = tcp_from(&server, "127.0.0.2").await;
        if let Some(ServerMessage::Welcome { .. }) = client.hello(TOKEN).await {
            welcomed += 1;
        }
        clients.push(client);
    }
    assert!(welcomed >= 36, "only {welcomed} of 40 clients got in");
    // The idle address was held to its cap: the rest of its connections were refused.
    let mut refused = 0;
    for raw in &mut idle {
        if let Some(Some(Ok(frame))) = raw.read.next().now_or_never() {
            if let Ok(ServerMessage::Rejected {
                reason: Refusal::TooManyFromAddress { .. },
            }) = odb_wire::decode(&frame)
            {
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 40,
        "only {refused} idle connections were refused"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_hello_timeout() {
    let server = start(ServerConfig {
        hello_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut silent = Raw::tcp(&server).await;
    match silent.expect_closed().await {
        Some(ServerMessage::Rejected {
            reason: Refusal::HelloTimeout { after_ms },
        }) => assert_eq!(after_ms, 300),
        other => panic!("expected Rejected, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn plaintext_on_a_public_address_needs_an_explicit_flag() {
    let public = "0.0.0.0:0".parse().unwrap();
    match Server::start(config(), Some(public)).await {
        Err(ServerError::Config(reason)) => assert!(reason.contains("--allow-plaintext")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let allowed = Server::start(
        ServerConfig {
            allow_plaintext: true,
            ..config()
        },
        Some(public),
    )
    .await
    .expect("plaintext allowed explicitly");
    allowed.shutdown().await;
    let tls = TlsConfig::self_signed(&["localhost".into()]).unwrap();
    let with_tls = Server::start(
        ServerConfig {
            tls: Some(tls),
            ..config()
        },
        Some(public),
    )
    .await
    .expect("TLS on a public address");
    with_tls.shutdown().await;
}

/// A TLS client trusting exactly `pem`.
fn tls_connector(pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    // Deprecated since rustls 0.23.48 (no post-quantum key exchange); the server uses the same
    // provider, see its TLS module.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn a_stalled_tls_handshake_does_not_block_other_clients() {
    let tls = TlsConfig::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let pem = tls.certificate_pem().unwrap().to_string();
    let server = start(ServerConfig {
        tls: Some(tls),
        hello_timeout: Duration::from_secs(3),
        ..config()
    })
    .await;
    let addr = server.local_addr().unwrap();
    // Connects and never starts the handshake.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Sends garbage instead of a ClientHello.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0x42; 64]).await.unwrap();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls_connector(&pem).connect(name, tcp).await.unwrap();
    let mut good = Raw::new(stream);
    good.login().await;
    good.flush().await;
    // The good client was served while the stalled one still held its connection: it did not
    // wait for the stalled handshake to time out.
    let mut probe = [0u8; 1];
    assert!(
        tokio::io::AsyncReadExt::read(&mut stalled, &mut probe)
            .now_or_never()
            .is_none(),
        "the stalled connection was closed before the good client got in"
    );

    // The stalled connection is closed after the hello timeout.
    let mut buf = [0u8; 16];
    let read = timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buf),
    )
    .await
    .expect("the stalled connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)));
    let read = timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read(&mut garbage, &mut buf),
    )
    .await;
    assert!(read.is_ok(), "the garbage connection is closed");
    good.flush().await;
    server.shutdown().await;
}

/// Arbitrary client messages, with object ids kept away from the canary's.
mod arbitrary {
    use super::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
    }

    fn object() -> impl Strategy<Value = ObjectId> {
        (1_000u64..400_000).prop_map(ObjectId)
    }

    fn target() -> impl Strategy<Value = SubscriptionTarget> {
        prop_oneof![
            (0u32..12).prop_map(|t| SubscriptionTarget::Type(TypeId(t))),
            (0u32..24, bytes()).prop_map(|(i, value)| SubscriptionTarget::Index {
                index: IndexId(i),
                value
            }),
            object().prop_map(SubscriptionTarget::Object),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "T", "U", "hostile", "core", "", "é"])
            .prop_map(String::from)
    }

    fn schema() -> impl Strategy<Value = SchemaDef> {
        let ty = (
            name(),
            prop::collection::vec(name(), 0..3),
            prop::collection::vec(
                (name(), prop::collection::vec(name(), 0..3))
                    .prop_map(|(name, fields)| IndexDef { name, fields }),
                0..2,
            ),
        )
            .prop_map(|(name, fields, indices)| TypeDef {
                name,
                fields,
                indices,
            });
        (name(), prop::collection::vec(ty, 0..3))
            .prop_map(|(name, types)| SchemaDef { name, types })
    }

    fn commit() -> impl Strategy<Value = CommitRequest> {
        let write =
            (object(), 0u32..24, prop::option::of(bytes())).prop_map(|(object, f, value)| {
                FieldWrite {
                    object,
                    field: FieldId(f),
                    value,
                }
            });
        let index_write =
            (object(), 0u32..24, prop::option::of(bytes())).prop_map(|(object, i, value)| {
                IndexWrite {
                    object,
                    index: IndexId(i),
                    value,
                }
            });
        (
            0u64..20,
            prop::collection::vec(write, 0..6),
            prop::collection::vec(index_write, 0..4),
            prop::collection::vec(object(), 0..3),
            prop::collection::vec((object(), (0u32..24).prop_map(FieldId)), 0..4),
            prop::collection::vec(((0u32..24).prop_map(IndexId), bytes()), 0..3),
        )
            .prop_map(
                |(base, writes, index_writes, deletes, reads, index_reads)| CommitRequest {
                    base_tid: Tid(base),
                    writes,
                    index_writes,
                    deletes,
                    reads,
                    index_reads,
                    commit_id: None,
                },
            )
    }

    pub(super) fn message() -> impl Strategy<Value = ClientMessage> {
        let id = any::<u64>().prop_map(RequestId);
        prop_oneof![
            1 => (any::<u32>(), ".{0,8}", ".{0,8}").prop_map(|(v, token, client_name)| {
                ClientMessage::Hello {
                    protocol_version: v,
                    token,
                    client_name,
                    oldest_protocol_version: v,
                }
            }),
            3 => (id.clone(), schema())
                .prop_map(|(request_id, schema)| ClientMessage::DefineSchema { request_id, schema }),
            2 => (id.clone(), any::<u64>())
                .prop_map(|(request_id, count)| ClientMessage::RequestIds { request_id, count }),
            3 => (id.clone(), prop::collection::vec(target(), 0..4)).prop_map(
                |(request_id, targets)| ClientMessage::Subscribe {
                    request_id,
                    targets
                }
            ),
            2 => (id.clone(), prop::collection::vec(target(), 0..4)).prop_map(
                |(request_id, targets)| ClientMessage::Unsubscribe {
                    request_id,
                    targets
                }
            ),
            6 => (id.clone(), commit())
                .prop_map(|(request_id, commit)| ClientMessage::Commit { request_id, commit }),
            1 => id.prop_map(|request_id| ClientMessage::Flush { request_id }),
            1 => Just(ClientMessage::Heartbeat),
        ]
    }
}

#[test]
fn arbitrary_message_sequences_never_disturb_other_clients() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(start(config()));
    let canary = tokio::sync::Mutex::new(runtime.block_on(Canary::new(&server)));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec(arbitrary::message(), 1..8);
    let result = runner.run(&strategy, |messages| {
        runtime.block_on(async {
            let mut hostile = Raw::tcp(&server).await;
            hostile.login().await;
            for message in &messages {
                if !hostile.send(message).await {
                    break;
                }
            }
            // Whatever happened, the connection either still answers or is closed.
            if hostile
                .send(&ClientMessage::Flush {
                    request_id: RequestId(u64::MAX),
                })
                .await
            {
                loop {
                    match hostile.recv().await {
                        None
                        | Some(ServerMessage::Closing { .. })
                        | Some(ServerMessage::Flushed {
                            request_id: RequestId(u64::MAX),
                            ..
                        }) => break,
                        Some(_) => {}
                    }
                }
            }
            canary.lock().await.check().await;
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    runtime.block_on(server.shutdown());
}
