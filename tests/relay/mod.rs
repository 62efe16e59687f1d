//! A TCP relay between clients and a server, for tests that break connections: it forwards
//! bytes both ways, can cut every connection at once, can stop passing the server's answers
//! (so that a commit reaches the server but its answer never reaches the client), and can be
//! pointed at another server (a restarted one, on a new port).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay. Dropping it stops accepting; cut connections with [`Relay::cut`].
pub struct Relay {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    /// Bumped to cut every connection open at the time.
    generation: watch::Sender<u64>,
    /// While set, bytes from the server are dropped instead of forwarded.
    hold_answers: Arc<AtomicBool>,
    /// While set, bytes from clients are dropped instead of forwarded.
    hold_requests: Arc<AtomicBool>,
    /// While set, new connections are closed at once (the server seems down).
    refuse: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Relay {
    /// Starts a relay on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream));
        let generation = watch::channel(0u64).0;
        let hold_answers = Arc::new(AtomicBool::new(false));
        let hold_requests = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream.clone(),
            generation.clone(),
            [hold_requests.clone(), hold_answers.clone()],
            refuse.clone(),
            accepted.clone(),
        ));
        Ok(Relay {
            addr,
            upstream,
            generation,
            hold_answers,
            hold_requests,
            refuse,
            accepted,
            task,
        })
    }

    /// The `odb://` URL clients connect to.
    pub fn url(&self) -> String {
        format!("odb://{}", self.addr)
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards new connections to another server.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = upstream;
        }
    }

    /// While `hold` is set, the server's bytes are dropped: requests still arrive, answers do
    /// not.
    pub fn hold_answers(&self, hold: bool) {
        self.hold_answers.store(hold, Ordering::SeqCst);
    }

    /// While `hold` is set, the clients' bytes are dropped: requests never reach the server.
    pub fn hold_requests(&self, hold: bool) {
        self.hold_requests.store(hold, Ordering::SeqCst);
    }

    /// While `refuse` is set, new connections are closed at once.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// How many connections the relay accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<SocketAddr>>,
    generation: watch::Sender<u64>,
    holds: [Arc<AtomicBool>; 2],
    refuse: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        if refuse.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = match upstream.lock() {
            Ok(u) => *u,
            Err(_) => return,
        };
        let cut = generation.subscribe();
        let holds = holds.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            pipe(client, server, cut, holds).await;
        });
    }
}

/// Forwards both ways until either side closes or the relay cuts.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut cut: watch::Receiver<u64>,
    [hold_up, hold_down]: [Arc<AtomicBool>; 2],
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if hold_up.load(Ordering::SeqCst) {
                continue;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if hold_down.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    cut.borrow_and_update();
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}
