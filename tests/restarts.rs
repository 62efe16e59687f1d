//! The quick example survives server crashes: the `odb-server` binary, on a data directory and
//! on Redis, is killed with SIGKILL again and again while the example's producer and consumer
//! run (in this process, through a relay that keeps their URL while the server's port
//! changes). The consumer must print every message exactly once, in order.

mod processes;
mod relay;

use odb::{Client, ReconnectPolicy};
use processes::server_binary;
use relay::Relay;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "restarts-test-token";
/// Server crashes per backend.
const ROUNDS: usize = 20;
/// Messages the producer writes.
const MESSAGES: u64 = 400;

/// A running `odb-server` process on port 0, and the address it reported.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(storage: &[String]) -> ServerProcess {
        let mut child = Command::new(server_binary())
            .args(["--service-token", TOKEN, "--print-address"])
            .args(storage)
            .args(["127.0.0.1", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start odb-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("odb-server printed {line:?}, not an address"));
        ServerProcess { child, addr }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `redis-server` with append-only persistence, fsynced on every write.
struct RedisProcess {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisProcess {
    fn start() -> RedisProcess {
        let dir = TempDir::new("redis");
        // redis-server cannot report a port it picked: take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install it, e.g. apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisProcess {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("odb-restarts-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn client(relay: &Relay) -> Client {
    let db = Client::builder(relay.url())
        .token(TOKEN)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(200)),
        )
        .connect()
        .await
        .expect("connects through the relay");
    odb_examples::report_reconnects(&db);
    db
}

/// Runs the producer and the consumer while the server is killed `ROUNDS` times.
async fn survive_crashes(storage: Vec<String>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("survive_crashes {storage:?}: seed {seed}");
    let mut server = ServerProcess::start(&storage);
    let relay = Relay::start(server.addr).await.expect("relay");
    let producer = client(&relay).await;
    let consumer = client(&relay).await;
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let consuming = {
        let printed = printed.clone();
        tokio::spawn(async move {
            odb_examples::consume(&consumer, Some(MESSAGES as usize), |line| {
                if let Ok(mut p) = printed.lock() {
                    p.push(line.to_string());
                }
            })
            .await
        })
    };
    let producing = tokio::spawn(async move {
        odb_examples::produce(&producer, Some(MESSAGES), Duration::from_millis(5)).await
    });
    let mut rng = seed;
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(20 + rng % 80)).await;
        server.kill();
        server = ServerProcess::start(&storage);
        relay.set_upstream(server.addr);
        relay.cut();
        eprintln!("round {round}: restarted on {}", server.addr);
    }
    tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .expect("the producer finishes")
        .expect("the producer task ends")
        .expect("every message is committed");
    tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .expect("the consumer finishes")
        .expect("the consumer task ends")
        .expect("the consumer reads every message");
    let printed = printed.lock().expect("the lines").clone();
    let names: Vec<String> = printed
        .iter()
        .map(|line| line.split('"').nth(1).unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("message_{n}")).collect();
    assert_eq!(names, expected, "every message once, in order");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_example_survives_crashes_of_a_file_store_server() {
    let dir = TempDir::new("data");
    survive_crashes(vec![
        "--data-dir".into(),
        dir.0.to_string_lossy().into_owned(),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_example_survives_crashes_of_a_redis_server() {
    let redis = RedisProcess::start();
    survive_crashes(vec![
        "--redis".into(),
        format!("redis://127.0.0.1:{}/0", redis.port),
    ])
    .await;
}
