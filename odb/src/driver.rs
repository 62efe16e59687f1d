//! The tokio driver of a [`ClientCore`]: it dials, moves frames between the socket and the core,
//! keeps the core's timers, and hands the core's answers to the requests waiting for them.
//! Everything that decides anything is in the core.
//!
//! One task per client runs [`run`]: while a connection is up, a read half (frames to
//! [`ClientCore::on_message`]) and a write half (what [`ClientCore::poll_transmit`] gives, plus
//! heartbeats at [`ClientCore::poll_timeout`]) run side by side; when the connection ends, the
//! task waits as long as the core says, dials the next server URL, and starts over.

use crate::local::Shared;
use crate::session::{ClientCore, ConnectionStatus, Dial, Event, Reply};
use crate::{Error, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use odb_wire::{RequestId, ServerMessage};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// A byte stream a client speaks the protocol on.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed byte stream.
pub(crate) type BoxStream = Box<dyn Stream>;

/// Opens a byte stream to server URL number `index`.
pub(crate) type Dialer = Arc<dyn Fn(usize) -> BoxFuture<'static, Result<BoxStream>> + Send + Sync>;

/// A connection that completed its hello.
pub(crate) struct Transport {
    reader: FramedRead<ReadHalf<BoxStream>, LengthDelimitedCodec>,
    writer: FramedWrite<WriteHalf<BoxStream>, LengthDelimitedCodec>,
}

/// The core with the requests waiting for its answers.
struct Locked {
    core: ClientCore,
    waiters: HashMap<RequestId, oneshot::Sender<Result<Reply>>>,
}

/// A client's session, shared by its handles and its driver task.
pub(crate) struct Session {
    /// What views and transactions read.
    pub shared: Arc<Shared>,
    locked: Mutex<Locked>,
    /// Wakes the writer: frames to send, or the core's timers changed.
    wake: Notify,
    status: watch::Sender<ConnectionStatus>,
    /// Stops the driver.
    pub cancel: CancellationToken,
    max_frame: usize,
    connect_timeout: Duration,
}

impl Session {
    pub fn new(core: ClientCore, max_frame: usize, connect_timeout: Duration) -> Arc<Session> {
        Arc::new(Session {
            shared: core.shared().clone(),
            status: watch::channel(core.status()).0,
            locked: Mutex::new(Locked {
                core,
                waiters: HashMap::new(),
            }),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            max_frame,
            connect_timeout,
        })
    }

    /// Runs `f` on the core, then delivers the events it produced and wakes the writer.
    pub fn with_core<T>(&self, f: impl FnOnce(&mut ClientCore) -> T) -> T {
        let mut locked = self.locked.lock();
        let out = f(&mut locked.core);
        self.dispatch(&mut locked);
        out
    }

    /// Starts a request; its answer arrives on the returned channel.
    pub fn start(
        &self,
        command: impl FnOnce(&mut ClientCore) -> Result<RequestId>,
    ) -> Result<oneshot::Receiver<Result<Reply>>> {
        let mut locked = self.locked.lock();
        let id = command(&mut locked.core)?;
        let (tx, rx) = oneshot::channel();
        locked.waiters.insert(id, tx);
        self.dispatch(&mut locked);
        Ok(rx)
    }

    /// Sends a request and waits for its answer.
    pub async fn request(
        &self,
        command: impl FnOnce(&mut ClientCore) -> Result<RequestId>,
    ) -> Result<Reply> {
        let answer = self.start(command)?;
        self.finish(answer).await
    }

    /// Waits for the answer of a request made with [`Session::start`].
    pub async fn finish(&self, answer: oneshot::Receiver<Result<Reply>>) -> Result<Reply> {
        answer.await.unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// The error of a request whose answer will never come.
    pub fn closed_error(&self) -> Error {
        Error::Disconnected(
            self.closed_reason()
                .unwrap_or_else(|| "the client was closed".into()),
        )
    }

    /// Why the session closed, if it did.
    pub fn closed_reason(&self) -> Option<String> {
        self.locked.lock().core.closed_reason().map(str::to_string)
    }

    /// Watches the connection status.
    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.subscribe()
    }

    /// Waits until connected, closed, or `deadline`.
    pub async fn connected(&self, deadline: Option<tokio::time::Instant>) -> Result<()> {
        let mut status = self.status.subscribe();
        loop {
            match &*status.borrow_and_update() {
                ConnectionStatus::Connected => return Ok(()),
                ConnectionStatus::Closed { reason } => {
                    return Err(Error::Disconnected(reason.clone()))
                }
                ConnectionStatus::Reconnecting { .. } => {}
            }
            let changed = status.changed();
            let ok = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, changed)
                    .await
                    .map_err(|_| Error::Timeout(Duration::ZERO, "the connection".into()))?,
                None => changed.await,
            };
            if ok.is_err() {
                return Err(self.closed_error());
            }
        }
    }

    /// Closes the session: every request fails, and the driver stops.
    pub fn close(&self, reason: &str) {
        self.with_core(|core| core.close(reason.to_string()));
        self.cancel.cancel();
    }

    /// Hands received messages to the core, in order, and delivers the answers; returns whether
    /// the connection is still open. With `inline_limit`, a batch whose [`ClientCore::work`]
    /// reaches it is left untouched (`Handed::Heavy`), to be handed over on a thread of its own.
    fn hand_over(&self, messages: &mut Vec<ServerMessage>, inline_limit: Option<usize>) -> Handed {
        let mut locked = self.locked.lock();
        if let Some(limit) = inline_limit {
            let work: usize = messages.iter().map(|m| locked.core.work(m)).sum();
            if work >= limit {
                return Handed::Heavy;
            }
        }
        let now = Instant::now();
        for message in messages.drain(..) {
            if !locked.core.transport_open() {
                break;
            }
            locked.core.on_message(message, now);
        }
        let open = locked.core.transport_open();
        self.dispatch(&mut locked);
        if open {
            Handed::Open
        } else {
            Handed::Closed
        }
    }

    fn dispatch(&self, locked: &mut Locked) {
        while let Some(event) = locked.core.poll_event() {
            match event {
                Event::Answer { id, result } => {
                    if let Some(waiter) = locked.waiters.remove(&id) {
                        // A waiter that went away (a dropped future) needs no answer.
                        let _ = waiter.send(result);
                    }
                }
                Event::Status(status) => {
                    self.status.send_replace(status);
                }
            }
        }
        if locked.core.closed_reason().is_some() {
            // Nobody will answer these any more.
            locked.waiters.clear();
            self.wake.notify_one();
        } else if locked.core.has_transmit() {
            self.wake.notify_one();
        }
    }
}

/// Performs the hello on a fresh stream. A refusal becomes the error a caller of
/// `connect()` should see.
pub(crate) async fn handshake(session: &Session, stream: BoxStream) -> Result<Transport> {
    let (read, write) = tokio::io::split(stream);
    let mut transport = Transport {
        reader: FramedRead::new(read, odb_wire::framing(session.max_frame)),
        writer: FramedWrite::new(write, odb_wire::framing(session.max_frame)),
    };
    let frames = session.with_core(|core| {
        core.on_connected(Instant::now());
        std::iter::from_fn(|| core.poll_transmit()).collect::<Vec<_>>()
    });
    for frame in frames {
        transport.writer.feed(frame).await?;
    }
    SinkExt::<bytes::Bytes>::flush(&mut transport.writer).await?;
    let first = loop {
        let frame = next_frame(&mut transport).await?;
        match odb_wire::decode_server_message(&frame) {
            // A heartbeat before the welcome (a server waiting to store the connection) says
            // only that the server is alive.
            Ok(ServerMessage::Heartbeat) => continue,
            Ok(message) => break message,
            Err(e) => return Err(Error::Protocol(format!("{NOT_ODB} ({e})"))),
        }
    };
    let refusal = match &first {
        ServerMessage::Welcome { .. } => None,
        ServerMessage::Rejected { reason } | ServerMessage::Closing { reason } => {
            Some(crate::refusal::refusal_error(reason))
        }
        other => Some(Error::Protocol(format!(
            "expected Welcome, got {}",
            message_name(other)
        ))),
    };
    if let Some(error) = refusal {
        return Err(error);
    }
    session.with_core(|core| core.on_message(first, Instant::now()));
    Ok(transport)
}

/// The next frame of the hello, or why there is none.
async fn next_frame(transport: &mut Transport) -> Result<bytes::BytesMut> {
    Ok(match transport.reader.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            if transport.reader.read_buffer().starts_with(b"HTTP/") {
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
    })
}

/// Whether an error of a connection attempt makes trying again (or another URL) pointless.
pub(crate) fn is_permanent(error: &Error) -> bool {
    match error {
        Error::Unauthorized | Error::Protocol(_) => true,
        Error::Refused(refusal) => refusal.is_permanent(),
        _ => false,
    }
}

/// What a client says when the first answer is not an ODB message.
const NOT_ODB: &str =
    "not an ODB server: it did not answer the ODB protocol; is it a TLS port (use odbs://)?";
/// A hint for a connection closed before any answer.
const IF_TLS: &str = "if it is a TLS port, use odbs://";

fn message_name(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Welcome { .. } => "Welcome",
        ServerMessage::Rejected { .. } => "Rejected",
        ServerMessage::Heartbeat => "Heartbeat",
        ServerMessage::Closing { .. } => "Closing",
        _ => "an answer to a request",
    }
}

/// The driver task: runs connections one after the other until the session closes.
pub(crate) async fn run(session: Arc<Session>, dialer: Option<Dialer>, first: Transport) {
    let mut transport = Some(first);
    loop {
        if let Some(t) = transport.take() {
            let reason = run_link(&session, t).await;
            session.with_core(|core| core.on_disconnected(reason, Instant::now()));
        }
        if session.cancel.is_cancelled() {
            break;
        }
        let dial = session.with_core(|core| core.poll_dial(Instant::now()));
        match (dial, &dialer) {
            (Dial::Now(index), Some(dialer)) => {
                let timeout = session.connect_timeout;
                let dialed = tokio::select! {
                    _ = session.cancel.cancelled() => break,
                    dialed = tokio::time::timeout(timeout, async {
                        let stream = dialer(index).await?;
                        handshake(&session, stream).await
                    }) => dialed,
                };
                match dialed {
                    Ok(Ok(t)) => transport = Some(t),
                    Ok(Err(e)) => {
                        let permanent = is_permanent(&e);
                        session.with_core(|core| {
                            core.on_connect_failed(e.to_string(), permanent, Instant::now())
                        });
                    }
                    Err(_) => session.with_core(|core| {
                        core.on_connect_failed(
                            format!("no connection within {timeout:?}"),
                            false,
                            Instant::now(),
                        )
                    }),
                }
            }
            (Dial::At(at), _) => {
                tokio::select! {
                    _ = session.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            (Dial::Now(_), None) | (Dial::Idle, _) => {
                if session.closed_reason().is_some() {
                    break;
                }
                tokio::select! {
                    _ = session.cancel.cancelled() => break,
                    _ = session.wake.notified() => {}
                }
            }
        }
    }
    tracing::debug!("client driver stopped");
}

/// Runs one connection until it ends; returns why.
async fn run_link(session: &Arc<Session>, transport: Transport) -> String {
    let Transport { reader, writer } = transport;
    let mut apart = None;
    let reason = tokio::select! {
        reason = read_half(session, reader, &mut apart) => reason,
        reason = write_half(session, writer) => reason,
        _ = session.cancel.cancelled() => "the client was closed".into(),
    };
    // A batch still being handed over on a thread of its own when the connection ended (its
    // write half failed, or the client was closed) arrived before the end: the core hears it
    // before it hears of the end, as it would have inline.
    if let Some(batch) = apart.take() {
        if let Err(e) = batch.await {
            rethrow(e);
        }
    }
    reason
}

async fn read_half(
    session: &Arc<Session>,
    mut reader: FramedRead<ReadHalf<BoxStream>, LengthDelimitedCodec>,
    apart: &mut Option<Apart>,
) -> String {
    let mut frames = Vec::new();
    let mut messages = Vec::new();
    loop {
        // Everything that has already arrived is handed to the core at once: one lock, one
        // delivery of answers, one wake of each waiting program per batch. What arrived before
        // the end of the stream (a `Closing` with its reason, say) is handed over before the
        // end is reported.
        let mut next = reader.next().await;
        let mut bytes = 0;
        let mut end = loop {
            let frame = match next {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => break Some(format!("reading from the server failed: {e}")),
                None => break Some("the server closed the connection".into()),
            };
            // Frozen, the frame's buffer is shared by the values decoded from it.
            let frame = frame.freeze();
            bytes += frame.len();
            frames.push(frame);
            if frames.len() >= READ_BATCH || bytes >= READ_BATCH_BYTES {
                break None;
            }
            match futures::poll!(reader.next()) {
                std::task::Poll::Ready(ready) => next = ready,
                std::task::Poll::Pending => break None,
            }
        };
        // Large frames are decoded, and large batches applied, on a thread of their own (see
        // `hand_over_apart`); the rest right here.
        let handed = if bytes >= OFFLOAD_BYTES {
            Handed::Heavy
        } else {
            if let Some(error) = decode(&mut frames, &mut messages) {
                end = Some(error);
            }
            session.hand_over(&mut messages, Some(OFFLOAD_WORK))
        };
        let handed = match handed {
            Handed::Heavy => {
                let batch = apart.insert(hand_over_apart(session, frames, messages));
                let joined = batch.await;
                *apart = None;
                let (handed, error, kept_frames, kept_messages) = match joined {
                    Ok(done) => done,
                    Err(e) => return rethrow(e),
                };
                (frames, messages) = (kept_frames, kept_messages);
                if let Some(error) = error {
                    end = Some(error);
                }
                handed
            }
            handed => handed,
        };
        if handed == Handed::Closed {
            return "the connection was refused".into();
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// What [`Session::hand_over`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    /// Handled; the connection is open.
    Open,
    /// Handled or dropped; the connection is closed.
    Closed,
    /// Left untouched: its work is over the limit.
    Heavy,
}

/// Decodes `frames` into `messages`, in order, until one is undecodable: then says why (the
/// frames after it are dropped with the connection). `frames` is left empty.
fn decode(frames: &mut Vec<Bytes>, messages: &mut Vec<ServerMessage>) -> Option<String> {
    let mut error = None;
    for frame in frames.drain(..) {
        if error.is_some() {
            continue;
        }
        match odb_wire::decode_server_frame(&frame) {
            Ok(message) => messages.push(message),
            Err(e) => error = Some(format!("the server sent an undecodable message: {e}")),
        }
    }
    error
}

/// What a batch handed over apart gives back: how it went, an undecodable frame's reason, and
/// the emptied buffers for the next batch.
type Done = (Handed, Option<String>, Vec<Bytes>, Vec<ServerMessage>);

/// A batch being handed over on a thread of its own.
type Apart = tokio::task::JoinHandle<Done>;

/// Starts decoding and handing over a heavy batch on a thread of the blocking pool; the read
/// half waits for it before it reads on, so the batches of one connection are still handed
/// over one at a time and in order. Meanwhile the worker thread that ran the driver runs other
/// tasks: another client's connection (a reader of the same commit, in one program), or the
/// runtime's I/O. Left to the worker, a 100,000-object commit held it for tens of
/// milliseconds, and what arrived for other tasks waited until it was done.
fn hand_over_apart(
    session: &Arc<Session>,
    mut frames: Vec<Bytes>,
    mut messages: Vec<ServerMessage>,
) -> Apart {
    let session = Arc::clone(session);
    tokio::task::spawn_blocking(move || {
        let error = decode(&mut frames, &mut messages);
        let handed = session.hand_over(&mut messages, None);
        (handed, error, frames, messages)
    })
}

/// A batch handed over apart that did not finish: its panic goes on in the driver, as it would
/// have inline (the core may be half-updated, and must not be used on as if it were not);
/// otherwise the runtime is shutting down, and the reason says so.
fn rethrow(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    format!("handling the server's messages was stopped: {e}")
}

/// Frame bytes from which a batch is decoded and handed over on a thread of its own.
const OFFLOAD_BYTES: usize = 256 << 10;

/// [`ClientCore::work`] from which a batch is handed over on a thread of its own: about a
/// millisecond of applying.
const OFFLOAD_WORK: usize = 4096;

/// The most frames the read half hands to the core at once.
const READ_BATCH: usize = 64;

/// The frame bytes past which the read half stops adding frames to a batch: large frames (a
/// subscription's chunks, a bulk commit's push) are handed over as they come rather than held
/// back together.
const READ_BATCH_BYTES: usize = 1 << 20;

async fn write_half(
    session: &Session,
    mut writer: FramedWrite<WriteHalf<BoxStream>, LengthDelimitedCodec>,
) -> String {
    let mut frames = Vec::new();
    // One timer for the whole loop, moved only when the core's deadline moves (its next
    // heartbeat, mostly): a fresh timer per request would be registered with the runtime and
    // removed again for every frame sent.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    loop {
        let (open, timeout) = session.with_core(|core| {
            let now = Instant::now();
            if core.poll_timeout().is_some_and(|at| at <= now) && core.handle_timeout(now) {
                return (false, None);
            }
            frames.extend(std::iter::from_fn(|| core.poll_transmit()));
            (core.transport_open(), core.poll_timeout())
        });
        if !open {
            return "the connection was closed by the client".into();
        }
        if !frames.is_empty() {
            for frame in frames.drain(..) {
                if let Err(e) = writer.feed(frame).await {
                    return format!("sending failed: {e}");
                }
            }
            if let Err(e) = SinkExt::<bytes::Bytes>::flush(&mut writer).await {
                return format!("sending failed: {e}");
            }
            continue;
        }
        match timeout {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                tokio::select! {
                    _ = session.wake.notified() => {}
                    _ = &mut timer => {}
                }
            }
            None => session.wake.notified().await,
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
