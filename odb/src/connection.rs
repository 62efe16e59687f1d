//! The connection task pair: a reader that applies pushed commits to the replica and resolves
//! request futures, and a writer that sends requests and heartbeats. Requests are matched to
//! answers by request id; because the server's stream is FIFO, an answer is always processed
//! after every commit pushed before it.

use crate::local::{CommitKind, Shared};
use crate::{Error, Result};
use futures::{SinkExt, StreamExt};
use odb_wire::{
    ClientMessage, CommitOutcome, IdBlock, ObjectData, ObjectId, Refusal, RequestId, SchemaIds,
    ServerMessage, Tid, PROTOCOL_VERSION,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// How many heartbeat intervals of silence from the server close the connection.
const MISSED_HEARTBEATS: u32 = 4;

/// A final answer to one request.
#[derive(Debug)]
pub(crate) enum Reply {
    Schema(SchemaIds),
    Ids(IdBlock),
    Subscribed(Tid),
    Unsubscribed(Tid),
    Commit(CommitOutcome),
    Flushed(Tid),
    Failed(String, Option<odb_wire::limits::Limit>),
}

/// What the welcome told us.
pub(crate) struct Welcome {
    pub connection: ObjectId,
    pub ids: IdBlock,
    pub tid: Tid,
    pub heartbeat_interval: Duration,
    /// The smaller of the two sides' frame limits: what a request may use.
    pub max_frame: usize,
}

/// The request side of a connection, shared by the client handle and the tasks.
pub(crate) struct Conn {
    /// Encoded frames for the writer task, each known to fit in `max_frame`.
    out: mpsc::UnboundedSender<bytes::Bytes>,
    max_frame: usize,
    pending: Mutex<HashMap<RequestId, oneshot::Sender<Reply>>>,
    next_request: AtomicU64,
    closed: Mutex<Option<String>>,
}

impl Conn {
    fn closed_error(&self) -> Error {
        Error::Disconnected(
            self.closed
                .lock()
                .clone()
                .unwrap_or_else(|| "the connection closed".to_string()),
        )
    }

    /// Why the connection closed, if it did.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.lock().clone()
    }

    /// Sends a request and waits for its final answer.
    /// A request too large for one frame fails alone with [`Error::LimitExceeded`]; the
    /// connection stays usable.
    pub async fn request(&self, make: impl FnOnce(RequestId) -> ClientMessage) -> Result<Reply> {
        let answer = self.start(make)?;
        self.finish(answer).await
    }

    /// Waits for the final answer to a request sent with [`Conn::start`].
    pub async fn finish(&self, answer: oneshot::Receiver<Reply>) -> Result<Reply> {
        Self::answer(answer.await, || self.closed_error())
    }

    /// Turns what a request's answer channel delivered into the request's result.
    pub fn answer(
        received: std::result::Result<Reply, oneshot::error::RecvError>,
        closed: impl FnOnce() -> Error,
    ) -> Result<Reply> {
        match received {
            Ok(Reply::Failed(reason, limit)) => Err(crate::refusal::request_error(reason, limit)),
            Ok(reply) => Ok(reply),
            Err(_) => Err(closed()),
        }
    }

    /// Sends a request without waiting; the answer arrives on the returned channel. `make`
    /// runs before the request is sent.
    pub fn start(
        &self,
        make: impl FnOnce(RequestId) -> ClientMessage,
    ) -> Result<oneshot::Receiver<Reply>> {
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let frame = encode(&make(id))?;
        if frame.len() > self.max_frame {
            return Err(Error::LimitExceeded {
                what: format!(
                    "a request of {} bytes exceeds the maximum frame size of {} bytes; split the transaction or raise the frame limit on both sides",
                    frame.len(),
                    self.max_frame
                ),
            });
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if self.closed.lock().is_some() {
                return Err(self.closed_error());
            }
            pending.insert(id, tx);
        }
        if self.out.send(frame).is_err() {
            self.pending.lock().remove(&id);
            return Err(self.closed_error());
        }
        Ok(rx)
    }

    /// The error requests get once the connection has closed.
    pub fn disconnected(&self) -> Error {
        self.closed_error()
    }

    fn resolve(&self, id: RequestId, reply: Reply) {
        if let Some(tx) = self.pending.lock().remove(&id) {
            let _ = tx.send(reply);
        }
    }

    fn close(&self, reason: String) {
        let mut pending = self.pending.lock();
        let mut closed = self.closed.lock();
        if closed.is_none() {
            tracing::debug!(%reason, "connection closed");
            *closed = Some(reason);
        }
        pending.clear();
    }
}

/// What a client says when the first answer is not an ODB message.
const NOT_ODB: &str =
    "not an ODB server: it did not answer the ODB protocol; is it a TLS port (use odbs://)?";
/// A hint for a connection closed before any answer.
const IF_TLS: &str = "if it is a TLS port, use odbs://";

/// Performs the hello exchange on a fresh stream and starts the connection tasks.
pub(crate) async fn open<S>(
    stream: S,
    token: &str,
    client_name: &str,
    max_frame: usize,
    cancel: CancellationToken,
) -> Result<(Arc<Conn>, Welcome, Arc<Shared>)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read, odb_wire::framing(max_frame));
    let mut writer = FramedWrite::new(write, odb_wire::framing(max_frame));
    let hello = ClientMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_string(),
        client_name: client_name.to_string(),
    };
    writer.send(encode(&hello)?).await?;
    let first = match reader.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            if reader.read_buffer().starts_with(b"HTTP/") {
                return Err(Error::Protocol(
                    "not an ODB server: it answered HTTP; check the address and port".into(),
                ));
            }
            return Err(Error::Protocol(format!("{NOT_ODB} ({e})")));
        }
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(Error::Disconnected(format!(
                "the server closed the connection during the hello; {IF_TLS}"
            )))
        }
    };
    let first = decode(&first).map_err(|e| Error::Protocol(format!("{NOT_ODB} ({e})")))?;
    let welcome = match first {
        ServerMessage::Welcome {
            connection,
            ids,
            tid,
            heartbeat_interval_ms,
            max_frame: server_max_frame,
            ..
        } => Welcome {
            connection,
            ids,
            tid,
            heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(10)),
            max_frame: max_frame.min(usize::try_from(server_max_frame).unwrap_or(usize::MAX)),
        },
        ServerMessage::Rejected { reason } | ServerMessage::Closing { reason } => {
            return Err(crate::refusal::refusal_error(&reason))
        }
        other => return Err(Error::Protocol(format!("expected Welcome, got {other:?}"))),
    };
    let shared = Arc::new(Shared::new(welcome.tid));
    shared.ids.lock().add(welcome.ids);
    let (out, out_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        out,
        max_frame: welcome.max_frame,
        pending: Mutex::new(HashMap::new()),
        next_request: AtomicU64::new(1),
        closed: Mutex::new(None),
    });
    tokio::spawn(write_loop(
        writer,
        out_rx,
        welcome.heartbeat_interval,
        cancel.clone(),
        conn.clone(),
    ));
    tokio::spawn(read_loop(
        reader,
        shared.clone(),
        conn.clone(),
        cancel,
        welcome.heartbeat_interval * MISSED_HEARTBEATS,
    ));
    Ok((conn, welcome, shared))
}

fn encode(msg: &ClientMessage) -> Result<bytes::Bytes> {
    odb_wire::encode(msg).map_err(|e| Error::Encode(e.to_string()))
}

fn decode(frame: &[u8]) -> Result<ServerMessage> {
    odb_wire::decode_server_message(frame).map_err(|e| Error::Protocol(e.to_string()))
}

async fn write_loop<W: AsyncWrite + Send + Unpin>(
    mut writer: FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    mut rx: mpsc::UnboundedReceiver<bytes::Bytes>,
    heartbeat: Duration,
    cancel: CancellationToken,
    conn: Arc<Conn>,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let result: Result<()> = async {
        loop {
            let frame = tokio::select! {
                _ = &mut cancelled => return Ok(()),
                _ = ticker.tick() => encode(&ClientMessage::Heartbeat)?,
                frame = rx.recv() => match frame {
                    Some(frame) => frame,
                    None => return Ok(()),
                },
            };
            writer.feed(frame).await?;
            // Coalesce: write out everything already queued before flushing.
            while let Ok(frame) = rx.try_recv() {
                writer.feed(frame).await?;
            }
            SinkExt::<bytes::Bytes>::flush(&mut writer).await?;
        }
    }
    .await;
    if let Err(e) = result {
        conn.close(format!("sending failed: {e}"));
    }
    cancel.cancel();
}

async fn read_loop<R: AsyncRead + Send + Unpin>(
    mut reader: FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    cancel: CancellationToken,
    silence_limit: Duration,
) {
    let mut subscriptions: HashMap<RequestId, Vec<ObjectData>> = HashMap::new();
    let mut closing: Option<Refusal> = None;
    // One cancellation waiter and one silence timer for the whole loop rather than fresh ones
    // per frame; the timer is moved forward only when it fires after frames have arrived.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut last_frame = tokio::time::Instant::now();
    let silence = tokio::time::sleep_until(last_frame + silence_limit);
    tokio::pin!(silence);
    let reason = loop {
        let frame = tokio::select! {
            biased;
            _ = &mut cancelled => break "the client was closed".to_string(),
            frame = reader.next() => frame,
            _ = &mut silence => {
                let deadline = last_frame + silence_limit;
                if tokio::time::Instant::now() < deadline {
                    silence.as_mut().reset(deadline);
                    continue;
                }
                break format!(
                    "the server sent nothing for {silence_limit:?} (not even a heartbeat)"
                );
            }
        };
        last_frame = tokio::time::Instant::now();
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break format!("reading from the server failed: {e}"),
            None => {
                break closing
                    .take()
                    .map(|r| format!("the server closed the connection: {r}"))
                    .unwrap_or_else(|| "the server closed the connection".to_string())
            }
        };
        let msg = match decode(&frame) {
            Ok(msg) => msg,
            Err(e) => break format!("the server sent an undecodable message: {e}"),
        };
        match msg {
            ServerMessage::Commit(data) => shared.apply_commit(data, CommitKind::Pushed),
            ServerMessage::SubscriptionData {
                request_id,
                objects,
            } => subscriptions.entry(request_id).or_default().extend(objects),
            ServerMessage::SubscriptionComplete { request_id, tid } => {
                let objects = subscriptions.remove(&request_id).unwrap_or_default();
                let types = shared
                    .subscribing
                    .lock()
                    .remove(&request_id)
                    .unwrap_or_default();
                shared.apply_snapshot(objects, &types, tid);
                conn.resolve(request_id, Reply::Subscribed(tid));
            }
            ServerMessage::Unsubscribed {
                request_id,
                tid,
                dropped,
            } => {
                // Objects no longer sent are removed, so nothing stale stays readable.
                shared.apply_commit(
                    odb_wire::CommitData {
                        tid,
                        deletes: dropped,
                        ..odb_wire::CommitData::default()
                    },
                    CommitKind::Dropped,
                );
                conn.resolve(request_id, Reply::Unsubscribed(tid));
            }
            ServerMessage::CommitResult {
                request_id,
                outcome,
            } => conn.resolve(request_id, Reply::Commit(outcome)),
            ServerMessage::Flushed { request_id, tid } => {
                shared.advance(tid);
                conn.resolve(request_id, Reply::Flushed(tid));
            }
            ServerMessage::SchemaDefined { request_id, schema } => {
                conn.resolve(request_id, Reply::Schema(schema))
            }
            ServerMessage::Ids { request_id, block } => conn.resolve(request_id, Reply::Ids(block)),
            ServerMessage::RequestFailed {
                request_id,
                reason,
                limit,
            } => {
                subscriptions.remove(&request_id);
                shared.subscribing.lock().remove(&request_id);
                conn.resolve(request_id, Reply::Failed(reason, limit))
            }
            ServerMessage::Closing { reason } => closing = Some(reason),
            ServerMessage::Heartbeat => {}
            other @ (ServerMessage::Welcome { .. } | ServerMessage::Rejected { .. }) => {
                break format!("unexpected message from the server: {other:?}")
            }
        }
    };
    conn.close(reason);
    // Wake everything waiting on the replica so it sees the closed connection.
    shared.publish_closed();
    cancel.cancel();
}
