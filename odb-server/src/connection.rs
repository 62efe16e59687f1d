//! One client connection: authentication, then a reader (this task) that forwards requests to
//! the sequencer and a writer task that drains the outbound queue onto the socket. TCP and
//! in-process connections share this code.

use crate::admission::{self, Admission, HelloSlot, RefusalLog};
use crate::auth_throttle::{AuthThrottle, Failure};
use crate::config::ServerConfig;
use crate::metrics::{self, Metrics};
use crate::outbound::{self, OutboundReceiver};
use crate::sequencer::Request;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use odb_wire::{
    ClientMessage, ObjectId, Refusal, ServerMessage, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Most connections refused at once for being over the connection limit; past this, further
/// connections are closed without an answer, so a flood cannot make the refusals themselves
/// pile up.
pub(crate) const MAX_REFUSALS: usize = 64;

/// How long a refusal may take to reach a client before the connection is dropped anyway.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection task needs from the server.
#[derive(Clone)]
pub(crate) struct ConnContext {
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// One permit per open connection, up to `config.max_connections`.
    pub connections: Arc<Semaphore>,
    /// One permit per connection being refused, up to [`MAX_REFUSALS`].
    pub refusals: Arc<Semaphore>,
    /// Failed hellos per peer address.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Connections in their hello per peer address.
    pub admission: Arc<Admission>,
    /// Refused connections, logged as a summary.
    pub refusal_log: Arc<RefusalLog>,
    /// What every connection's outbound queue holds, summed.
    pub queues: Arc<outbound::Totals>,
    /// The sequencer's request channel.
    pub sequencer: mpsc::Sender<Request>,
    /// Byte budget of the requests waiting in [`ConnContext::sequencer`]: one permit per frame
    /// byte (see [`queue_budget`]).
    pub queued_bytes: Arc<Semaphore>,
    /// Cancelled when the server starts shutting down: stop accepting and reading; what is
    /// queued for clients still goes out.
    pub stop: CancellationToken,
    /// Cancelled when every task must end at once.
    pub halt: CancellationToken,
    /// Set before [`ConnContext::stop`] when the server stops for a reason other than shutting
    /// down (a leader that lost its lease): what each connection's last frame tells the client.
    pub farewell: Arc<std::sync::OnceLock<Refusal>>,
    /// Owns every task the server spawns.
    pub tracker: TaskTracker,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
}

type Reader<S> = FramedRead<tokio::io::ReadHalf<S>, LengthDelimitedCodec>;
type Writer<S> = FramedWrite<tokio::io::WriteHalf<S>, LengthDelimitedCodec>;

/// How the reader ended.
enum End {
    /// The client closed the connection.
    ByClient,
    /// The connection broke.
    Broken(String),
    /// The client misbehaved or went silent: tell it why, then close.
    Protocol(Refusal),
    /// The server or the sequencer closed the connection.
    Closed,
}

/// Who is at the other end of a connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// For logs: the socket address, or "in-process".
    pub name: String,
    /// The peer's IP address, for throttling failed authentications; `None` in process.
    pub ip: Option<IpAddr>,
}

/// Serves one connection until it ends or the server stops. `permit` is the connection's slot
/// under the connection limit, released when the connection ends; `hello_slot` its place among
/// its address's connections in their hello, released once it has authenticated.
pub(crate) async fn serve<S>(
    ctx: ConnContext,
    stream: S,
    peer: Peer,
    permit: OwnedSemaphorePermit,
    hello_slot: Option<HelloSlot>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let span = tracing::info_span!("connection", peer = %peer.name, id = tracing::field::Empty);
    run(ctx, stream, peer.ip, hello_slot).instrument(span).await;
    drop(permit);
}

/// Answers a connection with `Rejected` and closes it, without reading from it.
pub(crate) async fn refuse<S>(ctx: ConnContext, stream: S, peer: Peer, reason: Refusal)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    ctx.metrics
        .connection_refused(metrics::Refusal::of(&reason));
    tracing::debug!(peer = %peer.name, "refusing a connection: {reason}");
    ctx.refusal_log.refused(&reason);
    let (_, write) = tokio::io::split(stream);
    let mut writer = FramedWrite::new(write, odb_wire::framing(ctx.config.max_frame));
    let rejected = ServerMessage::Rejected { reason };
    let _ = timeout(REFUSAL_TIMEOUT, send_and_close(&mut writer, &rejected)).await;
}

/// The refusal for a connection over the connection limit.
pub(crate) fn server_full(ctx: &ConnContext) -> Refusal {
    Refusal::ServerFull {
        limit: ctx.config.max_connections as u64,
    }
}

async fn run<S>(ctx: ConnContext, stream: S, ip: Option<IpAddr>, hello_slot: Option<HelloSlot>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let hello_timeout = admission::hello_timeout(
        ctx.config.hello_timeout,
        ctx.connections.available_permits(),
        ctx.config.max_connections,
    );
    let (read, write) = tokio::io::split(stream);
    let hello_frame = ctx.config.max_hello_frame.min(ctx.config.max_frame);
    let mut reader = FramedRead::new(read, odb_wire::framing(hello_frame));
    let mut writer = FramedWrite::new(write, odb_wire::framing(ctx.config.max_frame));

    let authenticated = authenticate(&ctx, &mut reader, hello_timeout).await;
    let Hello {
        client_name,
        version,
    } = match authenticated {
        Ok(hello) => {
            if let Some(ip) = ip {
                ctx.auth_throttle.succeeded(ip);
            }
            drop(hello_slot);
            hello
        }
        Err(None) => return,
        Err(Some(reason)) => {
            ctx.metrics
                .connection_refused(metrics::Refusal::of(&reason));
            if let Some(ip) = ip {
                let failure = match reason {
                    Refusal::Unauthorized => Some(Failure::Token),
                    Refusal::NotHello { .. } => Some(Failure::Malformed),
                    _ => None,
                };
                if let Some(failure) = failure {
                    let delay = ctx.auth_throttle.failed(ip, failure);
                    // The connection keeps its slot while it waits, so the per-address cap of
                    // connections in their hello bounds the guesses per second.
                    if !delay.is_zero() {
                        tokio::select! {
                            _ = ctx.stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            ctx.refusal_log.refused(&reason);
            let rejected = ServerMessage::Rejected { reason };
            let _ = timeout(REFUSAL_TIMEOUT, send_and_close(&mut writer, &rejected)).await;
            return;
        }
    };

    // Authenticated: from now on frames up to the full limit are accepted.
    reader
        .decoder_mut()
        .set_max_frame_length(ctx.config.max_frame.min(odb_wire::MAX_FRAME_CAP));

    let closed = ctx.halt.child_token();
    let (outbound, queue) = outbound::channel(
        ctx.config.outbound_limit_bytes,
        closed.clone(),
        ctx.queues.clone(),
    );
    let (reply, conn) = oneshot::channel();
    let register = Request::Register {
        outbound: outbound.clone(),
        client_name: client_name.clone(),
        protocol_version: version,
        reply,
    };
    if ctx.sequencer.send(register).await.is_err() {
        return;
    }
    let Ok(conn) = conn.await else { return };
    tracing::Span::current().record("id", conn.0);
    ctx.metrics.connection_accepted();
    tracing::info!(client = %client_name, "client authenticated");

    let heartbeat = ctx.config.heartbeat_interval;
    // Set once the `Welcome` is written: only then does the client know the heartbeat pace.
    let welcomed = Arc::new(AtomicBool::new(false));
    let writer_task = ctx.tracker.spawn(
        write_loop(writer, queue, heartbeat, closed.clone(), welcomed.clone()).in_current_span(),
    );
    let stopping = ctx.stop.clone();

    let end = read_loop(&ctx, &mut reader, conn, &closed, &welcomed).await;
    let _ = ctx.sequencer.send(Request::Disconnect { conn }).await;
    match &end {
        End::ByClient => tracing::info!("connection closed by the client"),
        End::Broken(reason) => tracing::info!("connection lost: {reason}"),
        End::Protocol(reason) => {
            tracing::warn!("closing connection: {reason}");
            if let Ok(frame) = odb_wire::encode(&ServerMessage::Closing {
                reason: reason.clone(),
            }) {
                outbound.send(frame);
            }
        }
        End::Closed => match outbound.reason() {
            Some(reason) => {
                ctx.metrics.connection_closed(reason);
                tracing::warn!("connection closed: {reason}")
            }
            None => tracing::info!("connection closed: the server is stopping"),
        },
    }
    // Closed by the server without a frame saying why: say it once the writer has stopped.
    let tell = match (&end, outbound.reason()) {
        (End::Closed, Some(reason)) => Some(reason.clone()),
        (End::Closed, None) if stopping.is_cancelled() => {
            Some(ctx.farewell.get().cloned().unwrap_or(Refusal::ShuttingDown))
        }
        _ => None,
    };
    // Once every sender is gone the writer drains what is queued and stops; a client that does
    // not read gets a bounded grace period.
    drop(outbound);
    let grace = heartbeat.max(Duration::from_secs(1));
    let mut writer_task = writer_task;
    let writer = match timeout(grace, &mut writer_task).await {
        Ok(writer) => writer,
        Err(_) => {
            closed.cancel();
            writer_task.await
        }
    };
    // A client closed for reading too slowly is given time to read why: its queue is freed
    // already, and only the frame being written and the socket are kept meanwhile.
    let patience = match &tell {
        Some(Refusal::SlowReader { .. } | Refusal::OutboundBudget { .. }) => {
            ctx.config.idle_timeout().max(REFUSAL_TIMEOUT)
        }
        _ => REFUSAL_TIMEOUT,
    };
    if let Ok(Some(mut writer)) = writer {
        let close = async {
            match tell {
                Some(reason) => {
                    send_and_close(&mut writer, &ServerMessage::Closing { reason }).await
                }
                None => {
                    let _ = SinkExt::<Bytes>::close(&mut writer).await;
                }
            }
            // Read until the client closes too: a socket closed with unread input (heartbeats
            // the client sent meanwhile) resets the connection, and the client's system may
            // then discard the last frame before the client has read why it was closed.
            while let Some(Ok(_)) = reader.next().await {}
        };
        tokio::select! {
            _ = ctx.halt.cancelled() => {}
            _ = timeout(patience, close) => {}
        }
    }
}

/// Waits for the hello and checks it. `Err(None)`: the client left without a word;
/// `Err(Some(reason))`: refuse with this reason. Never waits after the hello has arrived: a
/// right token is answered at once, and only the answer to a failure is delayed (by the
/// caller).
async fn authenticate<S: AsyncRead>(
    ctx: &ConnContext,
    reader: &mut Reader<S>,
    hello_timeout: Duration,
) -> Result<Hello, Option<Refusal>> {
    let first = tokio::select! {
        _ = ctx.stop.cancelled() => return Err(None),
        first = timeout(hello_timeout, reader.next()) => first,
    };
    let frame = match first {
        Err(_) => {
            return Err(Some(Refusal::HelloTimeout {
                after_ms: u64::try_from(hello_timeout.as_millis()).unwrap_or(u64::MAX),
            }))
        }
        Ok(None) => {
            tracing::debug!("connection closed before its hello");
            return Err(None);
        }
        Ok(Some(Err(e))) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(Some(Refusal::NotHello {
                detail: format!("unreadable first frame: {e}"),
            }))
        }
        Ok(Some(Err(e))) => {
            tracing::debug!("connection lost before its hello: {e}");
            return Err(None);
        }
        Ok(Some(Ok(frame))) => frame,
    };
    accept_hello(&ctx.config, &frame).map_err(Some)
}

/// What an accepted hello says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The name the client gave.
    pub client_name: String,
    /// The protocol version of the connection: the newest both sides speak.
    pub version: u32,
}

/// Reads and checks the first frame of a connection.
pub(crate) fn accept_hello(config: &ServerConfig, frame: &[u8]) -> Result<Hello, Refusal> {
    match odb_wire::decode::<ClientMessage>(frame) {
        Ok(hello) => check_hello(config, hello),
        // A hello of another protocol version may not decode as this version's: its leading
        // version number still tells why.
        Err(_)
            if odb_wire::hello_version(frame)
                .is_some_and(|v| !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v)) =>
        {
            Err(Refusal::ProtocolVersion {
                server: PROTOCOL_VERSION,
                oldest: OLDEST_PROTOCOL_VERSION,
            })
        }
        Err(e) => Err(Refusal::NotHello {
            detail: format!("first message unreadable: {e}"),
        }),
    }
}

/// Accepts a hello with a protocol version this server speaks and the right token.
fn check_hello(config: &ServerConfig, message: ClientMessage) -> Result<Hello, Refusal> {
    let ClientMessage::Hello {
        protocol_version,
        token,
        client_name,
        oldest_protocol_version,
    } = message
    else {
        return Err(Refusal::NotHello {
            detail: format!(
                "the first message must be Hello, not {}",
                message_name(&message)
            ),
        });
    };
    if protocol_version < OLDEST_PROTOCOL_VERSION || oldest_protocol_version > PROTOCOL_VERSION {
        return Err(Refusal::ProtocolVersion {
            server: PROTOCOL_VERSION,
            oldest: OLDEST_PROTOCOL_VERSION,
        });
    }
    if !bool::from(token.as_bytes().ct_eq(config.token.as_bytes())) {
        return Err(Refusal::Unauthorized);
    }
    Ok(Hello {
        client_name,
        version: protocol_version.min(PROTOCOL_VERSION),
    })
}

fn message_name(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Hello { .. } => "Hello",
        ClientMessage::DefineSchema { .. } => "DefineSchema",
        ClientMessage::RequestIds { .. } => "RequestIds",
        ClientMessage::Subscribe { .. } => "Subscribe",
        ClientMessage::Unsubscribe { .. } => "Unsubscribe",
        ClientMessage::Commit { .. } => "Commit",
        ClientMessage::Flush { .. } => "Flush",
        ClientMessage::Heartbeat => "Heartbeat",
        ClientMessage::Resume { .. } => "Resume",
        ClientMessage::QueryCommits { .. } => "QueryCommits",
        ClientMessage::DefineDescribedSchema { .. } => "DefineDescribedSchema",
        ClientMessage::Stats { .. } => "Stats",
        ClientMessage::ListSchemas { .. } => "ListSchemas",
    }
}

/// Sends one message straight to the socket, then closes it.
async fn send_and_close<S: AsyncWrite>(writer: &mut Writer<S>, message: &ServerMessage) {
    let Ok(frame) = odb_wire::encode(message) else {
        return;
    };
    if writer.send(frame).await.is_ok() {
        let _ = SinkExt::<Bytes>::close(writer).await;
    }
}

/// Forwards requests to the sequencer until the connection ends.
///
/// The cancellation future and the silence timer live for the whole loop: creating a fresh
/// timeout and cancellation waiter for every frame would register and deregister them with the
/// runtime once per request. The timer is only moved forward when it fires and frames have
/// arrived since, so a connection is still closed after `idle` of silence.
async fn read_loop<S: AsyncRead>(
    ctx: &ConnContext,
    reader: &mut Reader<S>,
    conn: ObjectId,
    closed: &CancellationToken,
    welcomed: &AtomicBool,
) -> End {
    let idle = ctx.config.idle_timeout();
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    let stopping = ctx.stop.cancelled();
    tokio::pin!(stopping);
    let mut last_frame = Instant::now();
    let silence = tokio::time::sleep_until(last_frame + idle);
    tokio::pin!(silence);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => return End::Closed,
            _ = &mut stopping => return End::Closed,
            next = reader.next() => Some(next),
            _ = &mut silence => None,
        };
        let Some(next) = next else {
            let deadline = last_frame + idle;
            if Instant::now() < deadline {
                silence.as_mut().reset(deadline);
                continue;
            }
            // A client sends heartbeats from its welcome on; a durable server holds the welcome
            // until the connection's object is stored, which may take a storage timeout.
            if !welcomed.load(Ordering::Acquire)
                || heartbeat_checks_suspended(ctx, conn, closed).await
            {
                tracing::debug!("silent for {idle:?}, but heartbeat checks are suspended");
                last_frame = Instant::now();
                silence.as_mut().reset(last_frame + idle);
                continue;
            }
            ctx.metrics.heartbeat_expired();
            return End::Protocol(Refusal::Silent {
                after_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            });
        };
        last_frame = Instant::now();
        let frame = match next {
            None => return End::ByClient,
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                return End::Protocol(Refusal::FrameTooLarge {
                    limit: ctx.config.max_frame as u64,
                })
            }
            Some(Err(e)) => return End::Broken(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        // Frozen, the frame's buffer is shared by the values of a commit decoded from it; the
        // store copies what it keeps.
        let frame = frame.freeze();
        let message = match odb_wire::decode_client_frame(&frame) {
            Ok(ClientMessage::Heartbeat) => continue,
            Ok(ClientMessage::Hello { .. }) => {
                return End::Protocol(Refusal::ProtocolViolation {
                    detail: "a second Hello on an authenticated connection".into(),
                })
            }
            Ok(message) => message,
            Err(e) => {
                return End::Protocol(Refusal::ProtocolViolation {
                    detail: e.to_string(),
                })
            }
        };
        let forwarded = tokio::select! {
            biased;
            _ = &mut cancelled => return End::Closed,
            sent = forward(ctx, conn, message, frame.len()) => sent,
        };
        // A closed queue cancels `closed`, which the next turn of the loop sees first.
        if !forwarded {
            return End::Closed;
        }
    }
}

/// The byte budget of queued requests: `frames` frames of the largest size, within what a
/// semaphore can count.
pub(crate) fn queue_budget(max_frame: usize, frames: usize) -> usize {
    max_frame
        .saturating_mul(frames)
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

/// Hands a message to the sequencer once its frame's bytes fit in the budget of queued
/// requests; `false` if the sequencer is gone.
async fn forward(ctx: &ConnContext, conn: ObjectId, message: ClientMessage, bytes: usize) -> bool {
    let received = Instant::now();
    // A frame is at most `max_frame` bytes and the budget holds several of those.
    let wanted = u32::try_from(bytes.clamp(1, ctx.config.max_frame)).unwrap_or(u32::MAX);
    let Ok(permit) = ctx.queued_bytes.clone().acquire_many_owned(wanted).await else {
        return false;
    };
    let request = Request::Message {
        conn,
        message,
        _budget: Some(permit),
        received,
    };
    ctx.sequencer.send(request).await.is_ok()
}

/// Asks the sequencer whether the connection's `core.Connection` object currently suspends
/// heartbeat checks. Anything but a clear yes (including the sequencer being gone) is a no.
async fn heartbeat_checks_suspended(
    ctx: &ConnContext,
    conn: ObjectId,
    closed: &CancellationToken,
) -> bool {
    let (reply, answer) = oneshot::channel();
    let ask = async {
        ctx.sequencer
            .send(Request::Silent { conn, reply })
            .await
            .is_ok()
            && answer.await.unwrap_or(false)
    };
    tokio::select! {
        _ = closed.cancelled() => false,
        suspended = ask => suspended,
    }
}

/// Writes queued frames to the socket, coalescing whatever is queued into one flush, and sends
/// a heartbeat every `heartbeat`. Stops when the queue is closed and drained, on a write error
/// (closing the connection), or at once when `closed` is cancelled. Gives the writer back when
/// it still works, so that a last frame can say why the connection closes.
async fn write_loop<S: AsyncWrite>(
    mut writer: Writer<S>,
    mut queue: OutboundReceiver,
    heartbeat: Duration,
    closed: CancellationToken,
    welcomed: Arc<AtomicBool>,
) -> Option<Writer<S>> {
    let Ok(heartbeat_frame) = odb_wire::encode(&ServerMessage::Heartbeat) else {
        queue.close(Refusal::Internal {
            detail: "cannot encode a heartbeat".into(),
        });
        return Some(writer);
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first frame is the `Welcome`, which a durable server sends only once the connection's
    // object is stored: no heartbeat may go before it, since a client reads anything else first
    // as a broken hello.
    let mut started = false;
    let work = async {
        loop {
            tokio::select! {
                frame = queue.recv() => {
                    let Some(frame) = frame else {
                        // Drained; the caller closes the socket, after a last word if any.
                        return SinkExt::<Bytes>::flush(&mut writer).await;
                    };
                    writer.feed(frame).await?;
                    while let Some(frame) = queue.try_recv() {
                        writer.feed(frame).await?;
                    }
                    SinkExt::<Bytes>::flush(&mut writer).await?;
                    if !started {
                        started = true;
                        welcomed.store(true, Ordering::Release);
                        ticker.reset();
                    }
                }
                _ = ticker.tick(), if started => writer.send(heartbeat_frame.clone()).await?,
            }
        }
    };
    let result: Option<io::Result<()>> = tokio::select! {
        _ = closed.cancelled() => None,
        result = work => Some(result),
    };
    let result = result.unwrap_or(Ok(()));
    match result {
        Ok(()) => Some(writer),
        Err(e) => {
            tracing::debug!("writing to the client failed: {e}");
            queue.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_budget_holds_whole_frames_and_fits_a_semaphore() {
        assert_eq!(queue_budget(64 << 20, 4), 256 << 20);
        let largest = odb_wire::MAX_FRAME_CAP;
        assert!(
            queue_budget(largest, 4) >= largest,
            "a frame of any allowed size fits"
        );
        assert!(queue_budget(largest, 4) <= u32::MAX as usize);
        assert_eq!(queue_budget(0, 4), 1);
    }

    fn hello(version: u32, token: &str) -> ClientMessage {
        ClientMessage::Hello {
            protocol_version: version,
            token: token.into(),
            client_name: "test".into(),
            oldest_protocol_version: version,
        }
    }

    #[test]
    fn hello_checks() {
        let config = ServerConfig::new("secret");
        let welcomed = |version| {
            Ok(Hello {
                client_name: "test".into(),
                version,
            })
        };
        assert_eq!(
            check_hello(&config, hello(PROTOCOL_VERSION, "secret")),
            welcomed(PROTOCOL_VERSION)
        );
        // A client of an older version this server still speaks is welcomed at its version.
        assert_eq!(
            check_hello(&config, hello(OLDEST_PROTOCOL_VERSION, "secret")),
            welcomed(OLDEST_PROTOCOL_VERSION)
        );
        assert_eq!(
            check_hello(&config, hello(PROTOCOL_VERSION, "secreT")),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            check_hello(&config, hello(PROTOCOL_VERSION, "")),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            check_hello(&config, hello(PROTOCOL_VERSION + 1, "secret")),
            Err(Refusal::ProtocolVersion {
                server: PROTOCOL_VERSION,
                oldest: OLDEST_PROTOCOL_VERSION,
            })
        );
        // A client that also speaks this version is welcomed.
        let mut wide = hello(PROTOCOL_VERSION + 1, "secret");
        if let ClientMessage::Hello {
            oldest_protocol_version,
            ..
        } = &mut wide
        {
            *oldest_protocol_version = OLDEST_PROTOCOL_VERSION;
        }
        assert_eq!(check_hello(&config, wide), welcomed(PROTOCOL_VERSION));
        assert!(matches!(
            check_hello(&config, ClientMessage::Heartbeat),
            Err(Refusal::NotHello { .. })
        ));
    }

    #[test]
    fn an_unreadable_hello_is_refused_for_its_version_only_when_this_server_lacks_it() {
        let config = ServerConfig::new("secret");
        for (version, speaks) in [
            (OLDEST_PROTOCOL_VERSION, true),
            (PROTOCOL_VERSION, true),
            (PROTOCOL_VERSION + 1, false),
        ] {
            let mut frame = odb_wire::encode(&hello(version, "secret"))
                .unwrap()
                .to_vec();
            frame.truncate(frame.len() - 3);
            let refusal = accept_hello(&config, &frame).unwrap_err();
            assert_eq!(
                matches!(refusal, Refusal::NotHello { .. }),
                speaks,
                "version {version}: {refusal:?}"
            );
        }
    }
}
