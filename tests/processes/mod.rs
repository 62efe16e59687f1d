//! Real processes for end-to-end tests: the `odb-server` binary of this build and a private
//! `redis-server`, each stopped when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A port that was free a moment ago. Servers that must be told their port before they bind
/// (standbys bind only once they lead) get one of these.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name contains `what`.
    pub fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("odb-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `odb-server` binary of this build, built first if needed. Tests of the root package
/// cannot name another package's binary, so it is found next to the test executable (in
/// `target/<profile>/`), and cargo is asked to build it (a no-op when it is up to date).
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test executable lies in target/<profile>/deps");
            let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            // Cargo runs a test with its package's variables set (CARGO_PKG_NAME,
            // CARGO_MANIFEST_DIR, ...). Some build scripts (ring's) run again when those
            // change, so a build started with them would redo what a build from a shell did,
            // and the next build from a shell would redo it once more: start it without them.
            for (name, _) in std::env::vars_os() {
                if name.to_str().is_some_and(set_by_cargo_for_tests) {
                    build.env_remove(name);
                }
            }
            let status = build
                .args(["build", "-q", "-p", "odb-server", "--bin", "odb-server"])
                .arg("--profile")
                .arg(&profile)
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for odb-server");
            assert!(status.success(), "cargo build of odb-server failed");
            let binary = profile_dir.join(format!("odb-server{}", std::env::consts::EXE_SUFFIX));
            assert!(binary.exists(), "{} is missing", binary.display());
            binary
        })
        .clone()
}

/// Whether cargo sets the variable `name` for the test it runs, and not for a build started from
/// a shell.
fn set_by_cargo_for_tests(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name)
}

/// A reconnect policy that retries within tens of milliseconds, so that tests of failures do not
/// wait for the default backoff.
pub fn quick_reconnect() -> odb::ReconnectPolicy {
    odb::ReconnectPolicy::default()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
}

/// Whether something accepts TCP connections on the loopback port.
pub async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Starts `redis-server` with the arguments `args` gives for a port, on a free port, and waits
/// until that very process answers there. `redis-server` cannot pick a port itself and report
/// it, so a port free a moment ago is handed over; if another process takes it first, this one
/// exits at start (address in use) and another port is tried. Answers are checked to come from
/// this process (the pid in `INFO server`), not from another server that took the port.
pub async fn spawn_redis(args: impl Fn(u16) -> Vec<String>) -> (Child, u16) {
    const ATTEMPTS: usize = 10;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port();
        match spawn_redis_on(port, &args(port)).await {
            Ok(child) => return (child, port),
            Err(why) => last = why,
        }
    }
    panic!("redis-server did not start in {ATTEMPTS} attempts: {last}");
}

/// Starts `redis-server` with `args`, which make it listen on `port`, and waits until it
/// answers there; `Err` if it exited at start (its port taken, most likely).
async fn spawn_redis_on(port: u16, args: &[String]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (install it, e.g. apt-get install redis-server)");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server on port {port} exited at start with {status}"
            ));
        }
        if redis_pid(port).await == Some(pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on port {port} did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid of the Redis server (or sentinel) answering on a loopback port, if one does.
async fn redis_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// A private `redis-server` with append-only persistence, fsynced on every write.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    extra: Vec<String>,
}

impl Redis {
    /// Starts one on a free port (see [`spawn_redis`]) and waits until it answers.
    pub async fn start() -> Redis {
        Redis::start_with(&[]).await
    }

    /// Starts one with extra arguments (such as `--replicaof HOST PORT`).
    pub async fn start_with(extra: &[String]) -> Redis {
        let dir = TempDir::new("redis");
        let (child, port) = spawn_redis(|port| Redis::args(&dir, port, extra)).await;
        Redis {
            child: Some(child),
            port,
            dir,
            extra: extra.to_vec(),
        }
    }

    fn args(dir: &TempDir, port: u16, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.path().display().to_string(),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(extra);
        args
    }

    /// Its URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts again on the same port and directory, after [`Redis::stop`]; fails the test if
    /// it cannot (the port was taken meanwhile).
    pub async fn restart(&mut self) {
        let args = Redis::args(&self.dir, self.port, &self.extra);
        match spawn_redis_on(self.port, &args).await {
            Ok(child) => self.child = Some(child),
            Err(why) => panic!("redis-server did not restart: {why}"),
        }
    }

    /// Sends it a signal (`-STOP`, `-CONT`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection for reading keys directly.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `odb-server` process of this build listening on a port it picked itself, killed when
/// dropped.
pub struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    /// Starts the binary on 127.0.0.1 port 0 with `--print-address` and the given flags, and
    /// reads the port it bound from its first line of output.
    pub async fn start(token: &str, flags: &[impl AsRef<std::ffi::OsStr>]) -> ServerProcess {
        let mut child = Command::new(server_binary())
            .args(["--service-token", token, "--print-address"])
            .args(flags)
            .args(["127.0.0.1", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start odb-server");
        let stdout = child.stdout.take().expect("the server's standard output");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .expect("odb-server reports its address in time")
            .expect("read the server's output");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("odb-server did not report its address: {line:?}"));
        ServerProcess { child, port }
    }

    /// A server started otherwise, on a port chosen beforehand (a standby binds its port only
    /// once it leads, so it cannot report one).
    pub fn from_child(child: Child, port: u16) -> ServerProcess {
        ServerProcess { child, port }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends SIGTERM and waits for the process to exit by itself; returns its status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for odb-server") {
                return status;
            }
            assert!(Instant::now() < deadline, "odb-server did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its resident memory now, in bytes (`VmRSS` of /proc/<pid>/status).
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the server's /proc status"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
