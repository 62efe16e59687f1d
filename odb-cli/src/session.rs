//! A read-only protocol session with a server: connect and authenticate like the SDK (same URL
//! forms, token and TLS), then ask for figures, schemas and subscription snapshots, and receive
//! pushed commits.
//!
//! The session sends heartbeats at the pace the server announced whenever it waits for a frame,
//! so a long `tail` is not disconnected as silent.

use crate::error::CliError;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use odb_wire::{
    ClientMessage, CommitData, ObjectData, Refusal, RequestId, SchemaInfo, ServerMessage,
    StatsData, SubscriptionTarget, Tid, PROTOCOL_VERSION,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How to reach a server.
#[derive(Clone, Debug)]
pub struct Target {
    /// `odb://host:port`, or `odbs://host:port` for TLS.
    pub url: String,
    /// The service token.
    pub token: String,
    /// A PEM file of certificates to trust for TLS (a CA, or the server's own certificate).
    pub tls_ca: Option<PathBuf>,
    /// How long connecting and each request may take.
    pub timeout: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Stream for T {}

/// An authenticated connection.
pub struct Session {
    framed: Framed<Pin<Box<dyn Stream>>, LengthDelimitedCodec>,
    next_request: u64,
    heartbeat: Duration,
    last_sent: Instant,
    timeout: Duration,
    /// Commits pushed while waiting for an answer.
    pushed: VecDeque<CommitData>,
    /// The tid announced in the welcome.
    pub welcome_tid: Tid,
}

impl Session {
    /// Connects and authenticates.
    pub async fn connect(target: &Target) -> Result<Session, CliError> {
        let (scheme, addr) = target.url.split_once("://").ok_or_else(|| {
            CliError::Usage(format!(
                "malformed URL {:?}: expected odb://host:port",
                target.url
            ))
        })?;
        let addr = addr.trim_end_matches('/');
        let tcp = tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| CliError::Timeout(format!("connecting to {addr}")))?
            .map_err(|e| CliError::Connect(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Pin<Box<dyn Stream>> = match scheme {
            "odb" => Box::pin(tcp),
            "odbs" => {
                let tls = odb::connect_tls(tcp, addr, target.tls_ca.as_deref());
                let tls = tokio::time::timeout(target.timeout, tls)
                    .await
                    .map_err(|_| CliError::Timeout(format!("the TLS handshake with {addr}")))?
                    .map_err(|e| CliError::Connect(e.to_string()))?;
                Box::pin(tls)
            }
            other => {
                return Err(CliError::Usage(format!(
                    "unknown URL scheme {other:?}: expected odb:// or odbs://"
                )))
            }
        };
        let mut framed = Framed::new(stream, odb_wire::framing(odb_wire::MAX_FRAME_CAP));
        let hello = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: target.token.clone(),
            client_name: "odb".into(),
            oldest_protocol_version: odb_wire::OLDEST_PROTOCOL_VERSION,
        };
        framed.send(encode(&hello)?).await.map_err(lost)?;
        let welcome = tokio::time::timeout(target.timeout, framed.next())
            .await
            .map_err(|_| CliError::Timeout("the server's welcome".into()))?;
        let frame = welcome
            .ok_or_else(|| CliError::Connect("the server closed the connection".into()))?
            .map_err(lost)?;
        match odb_wire::decode_server_message(&frame)? {
            ServerMessage::Welcome {
                heartbeat_interval_ms,
                tid,
                max_frame,
                ..
            } => {
                let max = usize::try_from(max_frame).unwrap_or(usize::MAX);
                framed
                    .codec_mut()
                    .set_max_frame_length(max.min(odb_wire::MAX_FRAME_CAP));
                Ok(Session {
                    framed,
                    next_request: 1,
                    heartbeat: Duration::from_millis(heartbeat_interval_ms.max(100)),
                    last_sent: Instant::now(),
                    timeout: target.timeout,
                    pushed: VecDeque::new(),
                    welcome_tid: tid,
                })
            }
            ServerMessage::Rejected { reason } => Err(match reason {
                Refusal::Unauthorized => CliError::Unauthorized,
                other => CliError::Connect(format!("the server refused the connection: {other}")),
            }),
            other => Err(CliError::Protocol(format!(
                "expected a welcome, got {other:?}"
            ))),
        }
    }

    async fn send(&mut self, message: &ClientMessage) -> Result<(), CliError> {
        self.framed.send(encode(message)?).await.map_err(lost)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next frame from the server, sending heartbeats while waiting; `deadline` bounds
    /// the wait.
    async fn receive(&mut self, deadline: Option<Instant>) -> Result<ServerMessage, CliError> {
        loop {
            let beat = self.last_sent + self.heartbeat;
            let wake = deadline.map_or(beat, |d| d.min(beat));
            let next = tokio::select! {
                next = self.framed.next() => next,
                _ = tokio::time::sleep_until(wake) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(CliError::Timeout("the server's answer".into()));
                    }
                    self.send(&ClientMessage::Heartbeat).await?;
                    continue;
                }
            };
            let frame = next
                .ok_or_else(|| CliError::Connect("the server closed the connection".into()))?
                .map_err(lost)?;
            match odb_wire::decode_server_message(&frame)? {
                ServerMessage::Heartbeat => continue,
                ServerMessage::Closing { reason } => {
                    return Err(CliError::Connect(format!(
                        "the server closed the connection: {reason}"
                    )))
                }
                message => return Ok(message),
            }
        }
    }

    fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Sends a request and returns the messages answering it, up to and including the final
    /// one (`done` tells which is final). Commits pushed meanwhile are kept for
    /// [`Session::next_commit`].
    async fn request(
        &mut self,
        make: impl FnOnce(RequestId) -> ClientMessage,
        done: impl Fn(&ServerMessage) -> bool,
    ) -> Result<Vec<ServerMessage>, CliError> {
        let id = self.request_id();
        self.send(&make(id)).await?;
        let deadline = Instant::now() + self.timeout;
        let mut answers = Vec::new();
        loop {
            let message = self.receive(Some(deadline)).await?;
            match message {
                ServerMessage::Commit(commit) => self.pushed.push_back(commit),
                ServerMessage::RequestFailed {
                    request_id, reason, ..
                } if request_id == id => return Err(CliError::Refused(reason)),
                message if request_of(&message) == Some(id) => {
                    let last = done(&message);
                    answers.push(message);
                    if last {
                        return Ok(answers);
                    }
                }
                _ => {}
            }
        }
    }

    /// The server's figures.
    pub async fn stats(&mut self) -> Result<StatsData, CliError> {
        let answers = self
            .request(|request_id| ClientMessage::Stats { request_id }, |_| true)
            .await?;
        match answers.into_iter().next() {
            Some(ServerMessage::Stats { stats, .. }) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// Every schema the server knows.
    pub async fn schemas(&mut self) -> Result<Vec<SchemaInfo>, CliError> {
        let answers = self
            .request(
                |request_id| ClientMessage::ListSchemas { request_id },
                |_| true,
            )
            .await?;
        match answers.into_iter().next() {
            Some(ServerMessage::Schemas { schemas, .. }) => Ok(schemas),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes and returns the objects covered, consistent as of the returned tid. Every
    /// later commit touching them is pushed (see [`Session::next_commit`]).
    pub async fn subscribe(
        &mut self,
        targets: Vec<SubscriptionTarget>,
    ) -> Result<(Vec<ObjectData>, Tid), CliError> {
        let answers = self
            .request(
                |request_id| ClientMessage::Subscribe {
                    request_id,
                    targets,
                },
                |m| matches!(m, ServerMessage::SubscriptionComplete { .. }),
            )
            .await?;
        let mut objects = Vec::new();
        let mut tid = Tid(0);
        for answer in answers {
            match answer {
                ServerMessage::SubscriptionData { objects: chunk, .. } => objects.extend(chunk),
                ServerMessage::SubscriptionComplete { tid: t, .. } => tid = t,
                other => return Err(unexpected(Some(other))),
            }
        }
        Ok((objects, tid))
    }

    /// Sends raw bytes of a schema declaration and waits for its answer: for declaring
    /// schemas with descriptions from tools and tests.
    pub async fn define(
        &mut self,
        make: impl FnOnce(RequestId) -> ClientMessage,
    ) -> Result<(), CliError> {
        self.request(make, |_| true).await.map(drop)
    }

    /// The next pushed commit, waiting as long as it takes.
    pub async fn next_commit(&mut self) -> Result<CommitData, CliError> {
        if let Some(commit) = self.pushed.pop_front() {
            return Ok(commit);
        }
        loop {
            if let ServerMessage::Commit(commit) = self.receive(None).await? {
                return Ok(commit);
            }
        }
    }
}

/// The request a message answers, if it answers one.
fn request_of(message: &ServerMessage) -> Option<RequestId> {
    match message {
        ServerMessage::SchemaDefined { request_id, .. }
        | ServerMessage::Ids { request_id, .. }
        | ServerMessage::SubscriptionData { request_id, .. }
        | ServerMessage::SubscriptionComplete { request_id, .. }
        | ServerMessage::Unsubscribed { request_id, .. }
        | ServerMessage::CommitResult { request_id, .. }
        | ServerMessage::Flushed { request_id, .. }
        | ServerMessage::RequestFailed { request_id, .. }
        | ServerMessage::Stats { request_id, .. }
        | ServerMessage::Schemas { request_id, .. }
        | ServerMessage::Resumed { request_id, .. }
        | ServerMessage::CommitStatuses { request_id, .. } => Some(*request_id),
        ServerMessage::Welcome { .. }
        | ServerMessage::Rejected { .. }
        | ServerMessage::Commit(_)
        | ServerMessage::Closing { .. }
        | ServerMessage::Heartbeat => None,
    }
}

fn encode(message: &ClientMessage) -> Result<Bytes, CliError> {
    odb_wire::encode(message).map_err(CliError::from)
}

fn lost(e: std::io::Error) -> CliError {
    CliError::Connect(format!("connection lost: {e}"))
}

fn unexpected(message: Option<ServerMessage>) -> CliError {
    CliError::Protocol(format!("unexpected answer: {message:?}"))
}
