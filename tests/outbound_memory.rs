//! What clients that stop reading cost the server: its resident memory stays near the
//! per-connection outbound limit times the stalled readers, and a server-wide budget
//! disconnects the largest queue first, telling the client why.
//!
//! The server runs as a child process so that its memory can be read from /proc. The clients
//! speak the wire protocol directly: a stalled reader subscribes, reads its snapshot and then
//! never reads again (while still sending heartbeats, so that it is closed for its queue and
//! not for its silence).

mod processes;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use odb_wire::{
    ClientMessage, CommitRequest, FieldWrite, IdBlock, ObjectId, Refusal, RequestId, SchemaDef,
    ServerMessage, StatsData, SubscriptionTarget, Tid, TypeDef, TypeIds, PROTOCOL_VERSION,
};
use processes::ServerProcess;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

const TOKEN: &str = "outbound-memory-test";
const MIB: usize = 1 << 20;

type Wire = Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>;

/// One raw protocol connection, authenticated.
struct Conn {
    wire: Wire,
    ids: IdBlock,
    next_request: u64,
}

impl Conn {
    /// Connects and says hello. `receive_buffer` shrinks the socket's receive buffer, so that
    /// the kernel holds little of what a stalled reader does not read.
    async fn open(port: u16, name: &str, receive_buffer: Option<u32>) -> Conn {
        let socket = TcpSocket::new_v4().expect("a socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("set SO_RCVBUF");
        }
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect to odb-server");
        let mut wire = Framed::new(stream, odb_wire::framing(odb_wire::MAX_FRAME_CAP));
        let hello = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: TOKEN.into(),
            client_name: name.into(),
            oldest_protocol_version: PROTOCOL_VERSION,
        };
        wire.send(odb_wire::encode(&hello).expect("encode"))
            .await
            .expect("send the hello");
        let mut conn = Conn {
            wire,
            ids: IdBlock { start: 0, len: 0 },
            next_request: 1,
        };
        match conn.next().await {
            ServerMessage::Welcome { ids, .. } => conn.ids = ids,
            other => panic!("expected Welcome, got {other:?}"),
        }
        conn
    }

    async fn send(&mut self, message: &ClientMessage) {
        self.wire
            .send(odb_wire::encode(message).expect("encode"))
            .await
            .expect("send to odb-server");
    }

    /// The next message, skipping heartbeats.
    async fn next(&mut self) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.wire.next())
                .await
                .expect("odb-server answers in time")
                .expect("the connection stays open")
                .expect("a frame");
            match odb_wire::decode_server_message(&frame).expect("a server message") {
                ServerMessage::Heartbeat => continue,
                message => return message,
            }
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    async fn define(&mut self) -> TypeIds {
        let request_id = self.request_id();
        let schema = SchemaDef {
            name: "outbound_memory".into(),
            types: vec![TypeDef {
                name: "Blob".into(),
                fields: vec!["payload".into()],
                indices: Vec::new(),
            }],
        };
        self.send(&ClientMessage::DefineSchema { request_id, schema })
            .await;
        loop {
            if let ServerMessage::SchemaDefined { schema, .. } = self.next().await {
                return schema.types.into_iter().next().expect("one type");
            }
        }
    }

    /// Subscribes and reads the snapshot to its end.
    async fn subscribe(&mut self, target: SubscriptionTarget) {
        let request_id = self.request_id();
        self.send(&ClientMessage::Subscribe {
            request_id,
            targets: vec![target],
        })
        .await;
        loop {
            if let ServerMessage::SubscriptionComplete { .. } = self.next().await {
                return;
            }
        }
    }

    /// Commits field writes and waits for the outcome.
    async fn commit(&mut self, base_tid: Tid, writes: Vec<FieldWrite>) -> Tid {
        let request_id = self.request_id();
        let commit = CommitRequest {
            base_tid,
            writes,
            ..CommitRequest::default()
        };
        self.send(&ClientMessage::Commit { request_id, commit })
            .await;
        loop {
            if let ServerMessage::CommitResult { outcome, .. } = self.next().await {
                match outcome.committed_at() {
                    Some(tid) => return tid,
                    None => panic!("commit failed: {outcome:?}"),
                }
            }
        }
    }

    async fn stats(&mut self) -> StatsData {
        let request_id = self.request_id();
        self.send(&ClientMessage::Stats { request_id }).await;
        loop {
            if let ServerMessage::Stats { stats, .. } = self.next().await {
                return stats;
            }
        }
    }

    /// Stops reading: from now on only heartbeats are sent, from a task of their own. The
    /// returned handle reads what is left once the test wants to see why the server closed.
    fn stall(self) -> Stalled {
        let (mut sink, stream) = self.wire.split();
        let beats = tokio::spawn(async move {
            let beat = odb_wire::encode(&ClientMessage::Heartbeat).expect("encode");
            loop {
                if sink.send(beat.clone()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Stalled { stream, beats }
    }
}

/// A connection that no longer reads.
struct Stalled {
    stream: futures::stream::SplitStream<Wire>,
    beats: tokio::task::JoinHandle<()>,
}

impl Stalled {
    /// Reads everything the server sent until it closed the connection; returns the reason
    /// of its `Closing` frame.
    async fn closing_reason(mut self) -> Option<Refusal> {
        self.beats.abort();
        let mut reason = None;
        let read_all = async {
            while let Some(Ok(frame)) = self.stream.next().await {
                if let Ok(ServerMessage::Closing { reason: r }) =
                    odb_wire::decode_server_message(&frame)
                {
                    reason = Some(r);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .expect("the server closes the stalled connection");
        reason
    }
}

/// A writer with one object per reader, and readers each subscribed to their own object, so
/// that no two queues share a frame.
struct Setup {
    server: ServerProcess,
    writer: Conn,
    objects: Vec<ObjectId>,
    payload_field: odb_wire::FieldId,
    tid: Tid,
    readers: Vec<Stalled>,
}

async fn setup(flags: &[&str], readers: usize, value: &Bytes, subscribe: bool) -> Setup {
    let server = ServerProcess::start(TOKEN, flags).await;
    let mut writer = Conn::open(server.port(), "writer", None).await;
    let ids = writer.define().await;
    let payload_field = ids.fields[0];
    assert!(writer.ids.len >= readers as u64);
    let objects: Vec<ObjectId> = (0..readers as u64)
        .map(|i| ObjectId(writer.ids.start + i))
        .collect();
    let mut writes = Vec::new();
    for &object in &objects {
        writes.push(FieldWrite {
            object,
            field: ids.exists_field,
            value: Some(odb_wire::EXISTS_VALUE),
        });
        writes.push(FieldWrite {
            object,
            field: payload_field,
            value: Some(value.clone()),
        });
    }
    let mut tid = writer.commit(Tid(0), writes).await;
    let mut stalled = Vec::new();
    for (i, &object) in objects.iter().enumerate() {
        let mut reader = Conn::open(server.port(), &format!("reader-{i}"), Some(64 << 10)).await;
        if subscribe {
            reader.subscribe(SubscriptionTarget::Object(object)).await;
        }
        stalled.push(reader.stall());
    }
    // The writer's buffers and the store reach their working size before the baseline.
    tid = write_round(&mut writer, tid, &objects, payload_field, value, &[1])
        .await
        .0;
    Setup {
        server,
        writer,
        objects,
        payload_field,
        tid,
        readers: stalled,
    }
}

/// Writes a new value to each object `times[i % times.len()]` times, each write its own
/// commit; the commits are sent at once and their outcomes read afterwards. Returns the last
/// tid and how many commits were made.
async fn write_round(
    writer: &mut Conn,
    tid: Tid,
    objects: &[ObjectId],
    field: odb_wire::FieldId,
    value: &Bytes,
    times: &[usize],
) -> (Tid, usize) {
    let mut sent = 0;
    for (i, &object) in objects.iter().enumerate() {
        for _ in 0..times[i % times.len()] {
            let request_id = writer.request_id();
            let commit = CommitRequest {
                base_tid: tid,
                writes: vec![FieldWrite {
                    object,
                    field,
                    value: Some(value.clone()),
                }],
                ..CommitRequest::default()
            };
            let frame = odb_wire::encode(&ClientMessage::Commit { request_id, commit });
            writer
                .wire
                .feed(frame.expect("encode"))
                .await
                .expect("send to odb-server");
            sent += 1;
        }
    }
    SinkExt::<Bytes>::flush(&mut writer.wire)
        .await
        .expect("send to odb-server");
    let (commits, mut left, mut last) = (sent, sent, tid);
    while left > 0 {
        if let ServerMessage::CommitResult { outcome, .. } = writer.next().await {
            match outcome.committed_at() {
                Some(tid) => last = last.max(tid),
                None => panic!("commit failed: {outcome:?}"),
            }
            left -= 1;
        }
    }
    (last, commits)
}

/// Commits rounds of `times` writes per object (see [`write_round`]) until the server holds
/// only `until` connections, or `commits` commits have been made when that is given; returns
/// the server's growth in resident memory at its peak over the baseline taken before the first
/// round, and the commits made.
async fn load(
    s: &mut Setup,
    value: &Bytes,
    times: &[usize],
    until: u64,
    commits: Option<usize>,
) -> (u64, usize) {
    let baseline = s.server.rss();
    let mut peak = baseline;
    let mut made = 0;
    loop {
        let (tid, n) = write_round(
            &mut s.writer,
            s.tid,
            &s.objects,
            s.payload_field,
            value,
            times,
        )
        .await;
        s.tid = tid;
        made += n;
        peak = peak.max(s.server.rss());
        match commits {
            Some(c) if made >= c => break,
            Some(_) => {}
            None => {
                if s.writer.stats().await.connections <= until {
                    break;
                }
                assert!(
                    made < 10_000_000,
                    "the stalled readers were never disconnected"
                );
            }
        }
    }
    (peak - baseline.min(peak), made)
}

/// Reads what every stalled reader was told, all at once (the server waits only a moment to
/// deliver its reason).
async fn reasons(readers: Vec<Stalled>) -> Vec<Option<Refusal>> {
    let reading: Vec<_> = readers
        .into_iter()
        .map(|r| tokio::spawn(r.closing_reason()))
        .collect();
    let mut reasons = Vec::new();
    for r in reading {
        reasons.push(r.await.expect("a reading task"));
    }
    reasons
}

/// Stalled readers each with their own queue of small frames, the case in which a queue used
/// to cost the server several times its limit: at its peak the server's memory grows by at
/// most 1.25 times the readers' limits over a baseline, and every reader is told it reads too
/// slowly. The baseline is what the same commits cost a server where nobody subscribed (the
/// conflict history and the allocator's working set grow with every commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_cost_about_their_outbound_limit() {
    const READERS: usize = 2;
    const LIMIT: usize = 3 * MIB;
    let value = Bytes::from(vec![7u8; 200]);
    let limit = LIMIT.to_string();
    let flags = ["--max-outbound-bytes", &limit];

    let mut stalled = setup(&flags, READERS, &value, true).await;
    let (growth, commits) = load(&mut stalled, &value, &[100], 1, None).await;
    let told = reasons(std::mem::take(&mut stalled.readers)).await;
    drop(stalled);
    let mut idle = setup(&flags, READERS, &value, false).await;
    let (baseline, _) = load(&mut idle, &value, &[100], 1, Some(commits)).await;
    drop(idle);

    let limits = (READERS * LIMIT) as u64;
    let queues = growth.saturating_sub(baseline);
    eprintln!(
        "{READERS} stalled readers at {LIMIT} bytes each, {commits} commits of 200-byte values: \
         the server grew by {growth} bytes, by {baseline} with nobody subscribed; the queues \
         cost {queues} = {:.2} x their limits",
        queues as f64 / limits as f64
    );
    for reason in told {
        assert!(
            matches!(reason, Some(Refusal::SlowReader { limit, .. }) if limit == LIMIT as u64),
            "a stalled reader is told it reads too slowly, not {reason:?}"
        );
    }
    assert!(
        queues <= limits + limits / 4,
        "the queues cost {queues} bytes for {limits} bytes of limits"
    );
}

/// With a server-wide budget smaller than the readers' own limits, the reader with the largest
/// queue is disconnected first, told why, and the others stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_budget_the_largest_queue_goes_first() {
    const READERS: usize = 3;
    const BUDGET: usize = 4 * MIB;
    let value = Bytes::from(vec![9u8; 2000]);
    let budget = BUDGET.to_string();
    let flags = ["--max-outbound-total-bytes", &budget];
    let mut s = setup(&flags, READERS, &value, true).await;
    // The first reader is sent three times as much as each of the others.
    let (growth, commits) = load(&mut s, &value, &[15, 5, 5], READERS as u64, None).await;
    eprintln!("the first reader was disconnected after {commits} commits; growth {growth} bytes");
    let stats = s.writer.stats().await;
    assert_eq!(
        stats.connections, READERS as u64,
        "only the largest queue was disconnected"
    );
    let mut readers = std::mem::take(&mut s.readers);
    let others = readers.split_off(1);
    let told = reasons(readers).await;
    assert!(
        matches!(told[0], Some(Refusal::OutboundBudget { budget, queued })
            if budget == BUDGET as u64 && queued > 0),
        "the largest queue's reader is told about the budget, not {:?}",
        told[0]
    );
    assert_eq!(
        s.writer.stats().await.connections,
        READERS as u64,
        "the other readers are still served"
    );
    drop(others);
}
