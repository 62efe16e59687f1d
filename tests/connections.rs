//! Connection liveness objects: every live connection is a `core.Connection` object that the
//! server creates at registration and deletes when the connection ends, whatever the reason.

use futures::{SinkExt, StreamExt};
use odb::server::{RunningServer, Server, ServerConfig};
use odb::system::Connection;
use odb::{Client, ObjectId, Ref};
use odb_wire::{
    ClientMessage, CommitRequest, FieldWrite, RequestId, SchemaDef, ServerMessage, TypeDef,
    PROTOCOL_VERSION,
};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

const TOKEN: &str = "connections-test-token";

/// How long a test waits for a condition before failing.
const WAIT: Duration = Duration::from_secs(10);

async fn start(config: Option<ServerConfig>) -> anyhow::Result<RunningServer> {
    let mut builder = Server::in_memory();
    if let Some(config) = config {
        builder = builder.config(config);
    }
    Ok(builder
        .listen("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?)
}

async fn tcp_client(server: &RunningServer, name: &str) -> anyhow::Result<Client> {
    let url = server
        .url()
        .ok_or_else(|| anyhow::anyhow!("not listening"))?;
    Ok(Client::builder(url)
        .token(TOKEN)
        .name(name)
        .connect()
        .await?)
}

/// The ids of every `core.Connection` object the client sees.
fn live(db: &Client) -> odb::Result<BTreeSet<ObjectId>> {
    db.view(|v| {
        Ok(Connection::lookup_all(v)?
            .into_iter()
            .map(|c| odb::Handle::id(&c))
            .collect())
    })
}

/// Waits until the client sees exactly these connection objects.
async fn wait_for_live(db: &Client, expected: &BTreeSet<ObjectId>) -> anyhow::Result<()> {
    db.wait_for(
        |v| {
            let ids: BTreeSet<ObjectId> = Connection::lookup_all(v)?
                .into_iter()
                .map(|c| odb::Handle::id(&c))
                .collect();
            Ok(&ids == expected)
        },
        WAIT,
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "waiting for connections {expected:?} (seeing {:?}): {e}",
            live(db)
        )
    })
}

/// Polls a server statistic until it holds; the statistic has no change notification.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let poll = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting until {what}"))
}

#[tokio::test]
async fn a_client_sees_its_own_connection_object_without_subscribing() -> anyhow::Result<()> {
    let server = start(None).await?;
    let db = tcp_client(&server, "self-reader").await?;
    let me: Ref<Connection> = db.connection();
    assert_eq!(odb::Handle::id(&me), db.connection_id());
    assert_eq!(
        db.view(|v| me.get(v))?,
        Connection {
            client_name: "self-reader".into(),
            suspend_heartbeat_checks: false,
        }
    );

    // The flag is an ordinary field the client may set on its own object.
    db.transaction(|tx| me.set_suspend_heartbeat_checks(tx, true))
        .await?;
    assert!(db.view(|v| me.suspend_heartbeat_checks(v))?);

    // In-process clients get theirs too.
    let local = server.client().await?;
    assert!(local.view(|v| local.connection().exists(v))?);
    assert!(
        !local.view(|v| me.exists(v))?,
        "another connection's object is not visible without subscribing"
    );
    Ok(())
}

#[tokio::test]
async fn subscribers_see_connections_appear_and_disappear() -> anyhow::Result<()> {
    let server = start(None).await?;
    let watcher = tcp_client(&server, "watcher").await?;
    watcher.subscribe_type::<Connection>().await?;
    let me = watcher.connection_id();
    assert_eq!(live(&watcher)?, BTreeSet::from([me]));

    let newcomer = tcp_client(&server, "newcomer").await?;
    let id = newcomer.connection_id();
    wait_for_live(&watcher, &BTreeSet::from([me, id])).await?;
    let handle = <Ref<Connection> as odb::Handle>::from_id(id);
    assert_eq!(watcher.view(|v| handle.client_name(v))?, "newcomer");

    // A change the newcomer makes to its object reaches the subscriber.
    newcomer
        .transaction(|tx| newcomer.connection().set_suspend_heartbeat_checks(tx, true))
        .await?;
    watcher
        .wait_for(|v| handle.suspend_heartbeat_checks(v), WAIT)
        .await?;

    drop(newcomer);
    wait_for_live(&watcher, &BTreeSet::from([me])).await?;
    assert!(!watcher.view(|v| handle.exists(v))?);
    Ok(())
}

#[tokio::test]
async fn clients_may_only_set_the_suspend_flag_on_their_own_connection_object() -> anyhow::Result<()>
{
    let server = start(None).await?;
    let a = tcp_client(&server, "a").await?;
    let b = tcp_client(&server, "b").await?;
    a.subscribe_type::<Connection>().await?;
    wait_for_live(&a, &BTreeSet::from([a.connection_id(), b.connection_id()])).await?;
    let theirs = <Ref<Connection> as odb::Handle>::from_id(b.connection_id());
    let mine = a.connection();

    fn assert_refused<T: std::fmt::Debug>(result: odb::Result<T>) {
        assert!(
            matches!(&result, Err(odb::Error::Server(reason)) if reason.contains("maintained by the server")),
            "{result:?}"
        );
    }
    assert_refused(a.transaction(|tx| theirs.delete(tx)).await);
    assert_refused(
        a.transaction(|tx| theirs.set_suspend_heartbeat_checks(tx, true))
            .await,
    );
    assert_refused(
        a.transaction(|tx| mine.set_client_name(tx, "someone else".to_string()))
            .await,
    );
    assert_refused(a.transaction(|tx| mine.delete(tx)).await);
    assert_refused(
        a.transaction(|tx| {
            Connection::create(
                tx,
                Connection {
                    client_name: "forged".into(),
                    suspend_heartbeat_checks: false,
                },
            )
        })
        .await,
    );

    // Nothing changed, and what a client may do still works.
    assert_eq!(a.view(|v| theirs.client_name(v))?, "b");
    assert!(!a.view(|v| theirs.suspend_heartbeat_checks(v))?);
    assert_eq!(
        live(&a)?,
        BTreeSet::from([a.connection_id(), b.connection_id()])
    );
    a.transaction(|tx| mine.set_suspend_heartbeat_checks(tx, true))
        .await?;
    assert!(a.view(|v| mine.suspend_heartbeat_checks(v))?);
    Ok(())
}

/// A peer speaking raw frames over TCP, to go silent in ways a real client never does.
struct RawPeer {
    read: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    write: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    id: ObjectId,
}

impl RawPeer {
    /// Connects and authenticates, then reads up to its own connection object.
    async fn connect(server: &RunningServer) -> anyhow::Result<RawPeer> {
        let addr = server
            .local_addr()
            .ok_or_else(|| anyhow::anyhow!("not listening"))?;
        let (read, write) = tokio::net::TcpStream::connect(addr).await?.into_split();
        let framing = || odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME);
        let mut peer = RawPeer {
            read: FramedRead::new(read, framing()),
            write: FramedWrite::new(write, framing()),
            id: ObjectId(0),
        };
        peer.send(ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: TOKEN.into(),
            client_name: "raw-peer".into(),
            oldest_protocol_version: PROTOCOL_VERSION,
        })
        .await?;
        match peer.recv().await? {
            ServerMessage::Welcome { connection, .. } => peer.id = connection,
            other => anyhow::bail!("expected Welcome, got {other:?}"),
        }
        match peer.recv().await? {
            ServerMessage::Commit(data) if data.writes.iter().all(|w| w.object == peer.id) => {}
            other => anyhow::bail!("expected the own connection object, got {other:?}"),
        }
        Ok(peer)
    }

    async fn send(&mut self, message: ClientMessage) -> anyhow::Result<()> {
        self.write.send(odb_wire::encode(&message)?).await?;
        Ok(())
    }

    /// The next message other than a heartbeat or a pushed commit.
    async fn recv(&mut self) -> anyhow::Result<ServerMessage> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.read.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the server closed the connection"))??;
            match odb_wire::decode::<ServerMessage>(&frame)? {
                ServerMessage::Heartbeat => continue,
                message => return Ok(message),
            }
        }
    }

    /// Sets `suspend_heartbeat_checks` on its own connection object, as a client would: define
    /// the core schema by name, then commit an encoded `bool`.
    async fn suspend_heartbeat_checks(&mut self) -> anyhow::Result<()> {
        self.send(ClientMessage::DefineSchema {
            request_id: RequestId(1),
            schema: SchemaDef {
                name: "core".into(),
                types: vec![TypeDef {
                    name: "Connection".into(),
                    fields: vec!["client_name".into(), "suspend_heartbeat_checks".into()],
                    indices: vec![],
                }],
            },
        })
        .await?;
        let ids = match self.recv().await? {
            ServerMessage::SchemaDefined { schema, .. } => schema.types[0].clone(),
            other => anyhow::bail!("expected SchemaDefined, got {other:?}"),
        };
        let flush_tid = {
            self.send(ClientMessage::Flush {
                request_id: RequestId(2),
            })
            .await?;
            match self.recv().await? {
                ServerMessage::Flushed { tid, .. } => tid,
                other => anyhow::bail!("expected Flushed, got {other:?}"),
            }
        };
        self.send(ClientMessage::Commit {
            request_id: RequestId(3),
            commit: CommitRequest {
                base_tid: flush_tid,
                writes: vec![FieldWrite {
                    object: self.id,
                    field: ids.fields[1],
                    value: Some(odb_wire::encode(&true)?),
                }],
                ..CommitRequest::default()
            },
        })
        .await?;
        loop {
            match self.recv().await? {
                ServerMessage::Commit(_) => continue,
                ServerMessage::CommitResult { outcome, .. } if outcome.committed_at().is_some() => {
                    return Ok(())
                }
                other => anyhow::bail!("expected the commit result, got {other:?}"),
            }
        }
    }
}

fn short_heartbeats() -> ServerConfig {
    ServerConfig {
        // A silent peer's connection object lives about a second: long enough for a watcher
        // on a busy machine to see it before it goes.
        heartbeat_interval: Duration::from_millis(250),
        missed_heartbeats: 4,
        ..ServerConfig::new(TOKEN)
    }
}

#[tokio::test]
async fn a_peer_that_misses_its_heartbeats_loses_its_connection_object() -> anyhow::Result<()> {
    let server = start(Some(short_heartbeats())).await?;
    let watcher = tcp_client(&server, "watcher").await?;
    watcher.subscribe_type::<Connection>().await?;
    let me = watcher.connection_id();

    // Authenticates, then never sends another frame (and never reads either).
    let silent = RawPeer::connect(&server).await?;
    wait_for_live(&watcher, &BTreeSet::from([me, silent.id])).await?;
    wait_for_live(&watcher, &BTreeSet::from([me])).await?;
    assert!(
        watcher.closed_reason().is_none(),
        "the watcher, which sends heartbeats, stays connected"
    );
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn a_peer_that_suspends_heartbeat_checks_stays_connected_while_silent() -> anyhow::Result<()>
{
    let server = start(Some(short_heartbeats())).await?;
    let watcher = tcp_client(&server, "watcher").await?;
    watcher.subscribe_type::<Connection>().await?;
    let me = watcher.connection_id();

    let mut paused = RawPeer::connect(&server).await?;
    paused.suspend_heartbeat_checks().await?;
    let handle = <Ref<Connection> as odb::Handle>::from_id(paused.id);
    watcher
        .wait_for(
            |v| Ok(handle.exists(v)? && handle.suspend_heartbeat_checks(v)?),
            WAIT,
        )
        .await?;

    // Two silent peers connected one after the other, each after `paused` went silent: by the
    // time the second has been dropped for missed heartbeats, `paused` has been silent for more
    // than two idle timeouts.
    for _ in 0..2 {
        let silent = RawPeer::connect(&server).await?;
        wait_for_live(&watcher, &BTreeSet::from([me, paused.id, silent.id])).await?;
        wait_for_live(&watcher, &BTreeSet::from([me, paused.id])).await?;
    }
    assert!(watcher.view(|v| handle.exists(v))?);
    assert_eq!(server.inner().connection_count(), 2);

    drop(paused);
    wait_for_live(&watcher, &BTreeSet::from([me])).await?;
    Ok(())
}

#[tokio::test]
async fn many_connections_opened_and_closed_leave_nothing_behind() -> anyhow::Result<()> {
    let server = start(None).await?;
    let watcher = tcp_client(&server, "watcher").await?;
    watcher.subscribe_type::<Connection>().await?;
    let me = watcher.connection_id();

    let opening = (0..200).map(|i| {
        let server = &server;
        async move {
            if i % 2 == 0 {
                tcp_client(server, &format!("client-{i}")).await
            } else {
                Ok(server.client().await?)
            }
        }
    });
    let clients: Vec<Client> = futures::future::try_join_all(opening).await?;
    let mut expected: BTreeSet<ObjectId> = clients.iter().map(Client::connection_id).collect();
    assert_eq!(expected.len(), 200, "every connection has its own id");
    expected.insert(me);
    wait_for_live(&watcher, &expected).await?;
    assert_eq!(server.inner().connection_count(), 201);

    drop(clients);
    wait_for_live(&watcher, &BTreeSet::from([me])).await?;
    // Every deletion the watcher saw came after its connection was forgotten.
    assert_eq!(server.inner().connection_count(), 1);

    drop(watcher);
    eventually("every connection is closed", || {
        server.inner().connection_count() == 0
    })
    .await?;
    let last = server.client().await?;
    last.subscribe_type::<Connection>().await?;
    wait_for_live(&last, &BTreeSet::from([last.connection_id()])).await?;
    Ok(())
}
