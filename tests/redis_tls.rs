//! Redis over TLS end to end: a private certificate authority made here, a real `redis-server`
//! serving TLS only (its plain port closed), and the real `odb-server` binary storing its data
//! there with `--redis rediss://... --redis-ca-file CA`. A commit survives a restart of the
//! server, and a `--standby` server takes the leader lease and serves through the same TLS
//! connection settings; without the CA the server refuses to start with a one-line certificate
//! error, and a CA file that is not a certificate, or one given for a plain `redis://` URL, is
//! refused at startup.

mod processes;

use odb::{Client, ReconnectPolicy};
use processes::{accepts, free_port, server_binary, ServerProcess, TempDir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "redis-tls-test-token";

/// How long a test waits for one process to be ready.
const WAIT: Duration = Duration::from_secs(30);

#[odb::schema]
pub mod tls_store {
    /// A note that must survive restarts.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Note {
        #[index]
        pub title: String,
        pub body: String,
    }
}

use tls_store::Note;

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`, written as PEM files.
struct Pki {
    dir: TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("redis-tls");
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "odb test Redis CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_params.self_signed(&ca_key).expect("a CA").pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate().expect("a server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "redis test server");
        let server_pem = server_params
            .signed_by(&server_key, &issuer)
            .expect("a server certificate")
            .pem();

        let pki = Pki { dir, ca_pem };
        std::fs::write(pki.ca(), &pki.ca_pem).expect("write the CA");
        std::fs::write(pki.path("redis.crt"), server_pem).expect("write the certificate");
        std::fs::write(pki.path("redis.key"), server_key.serialize_pem()).expect("write the key");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate's file.
    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

/// A private `redis-server` that speaks only TLS, with append-only persistence.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsRedis {
    /// Starts one on a free port and waits until it answers `PING` over TLS.
    async fn start(pki: &Pki) -> TlsRedis {
        let port = free_port();
        let dir = TempDir::new("redis-tls-data");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(pki.path("redis.crt"))
            .arg("--tls-key-file")
            .arg(pki.path("redis.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.ca())
            // The server checks Redis's certificate; Redis does not ask for one from it.
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (install it, e.g. apt-get install redis-server)");
        let mut redis = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        redis.wait_ready(pki).await;
        redis
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// A client of Redis's own that trusts the test CA.
    fn client(&self, pki: &Pki) -> redis::Client {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pki.ca_pem.clone().into_bytes()),
        };
        redis::Client::build_with_tls(self.url(), certificates).expect("a TLS Redis client")
    }

    async fn wait_ready(&mut self, pki: &Pki) {
        let client = self.client(pki);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server exited at start with {status} (is it built with TLS?)");
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the server process, subscribed to the test's schema.
async fn connect(server: &ServerProcess) -> Client {
    let db = Client::builder(format!("odb://127.0.0.1:{}", server.port()))
        .token(TOKEN)
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .expect("connect to odb-server");
    db.subscribe(tls_store::schema()).await.expect("subscribe");
    db
}

/// Runs the binary with these flags, expecting it to fail at startup; returns its error line.
fn startup_error(flags: &[String]) -> String {
    let output = Command::new(server_binary())
        .args(["--service-token", TOKEN])
        .args(flags)
        .args(["--redis-timeout-ms", "3000", "127.0.0.1", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run odb-server");
    assert!(
        !output.status.success(),
        "odb-server started with {flags:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("odb-server: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
        .to_string();
    println!("{line}");
    line
}

fn flags(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_stored_over_tls_survives_a_restart() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).await;
    let ca = pki.ca().display().to_string();
    let storage = flags(&["--redis", &redis.url(), "--redis-ca-file", &ca]);

    let server = ServerProcess::start(TOKEN, &storage).await;
    let db = connect(&server).await;
    let note = db
        .transaction(|tx| {
            Note::create(
                tx,
                Note {
                    title: "over tls".into(),
                    body: "stored in a Redis that speaks only TLS".into(),
                },
            )
        })
        .await
        .expect("commit");
    let committed = db.current_tid();

    // What the server acknowledged is in Redis, read back over TLS with Redis's own client.
    let mut conn = redis
        .client(&pki)
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis over TLS");
    let stored_tid: u64 = redis::cmd("GET")
        .arg("odb:tid")
        .query_async(&mut conn)
        .await
        .expect("read the stored tid");
    assert_eq!(stored_tid, committed.0);
    db.close();
    drop(server);

    let server = ServerProcess::start(TOKEN, &storage).await;
    let db = connect(&server).await;
    let back = db
        .view(|v| Note::lookup_one_by_title(v, "over tls"))
        .expect("the note is back");
    assert_eq!(back, note);
    assert_eq!(
        db.view(|v| back.body(v)).expect("read the body"),
        "stored in a Redis that speaks only TLS"
    );
    assert!(db.current_tid() >= committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_unusable_ca_is_refused_at_startup() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).await;

    // The system's roots do not include the test CA: the certificate is not trusted.
    let line = startup_error(&flags(&["--redis", &redis.url()]));
    assert!(line.contains("cannot connect to Redis"), "{line}");
    assert!(line.contains("certificate is not trusted"), "{line}");
    assert!(line.contains("--redis-ca-file"), "{line}");

    // Another CA does not make it trusted either.
    let other = Pki::new();
    let other_ca = other.ca().display().to_string();
    let line = startup_error(&flags(&[
        "--redis",
        &redis.url(),
        "--redis-ca-file",
        &other_ca,
    ]));
    assert!(line.contains("certificate is not trusted"), "{line}");

    // A file that holds no certificate is named as such.
    let not_pem = pki.path("not-a-ca.txt");
    std::fs::write(&not_pem, "hello").expect("write a file");
    let line = startup_error(&flags(&[
        "--redis",
        &redis.url(),
        "--redis-ca-file",
        &not_pem.display().to_string(),
    ]));
    assert!(line.contains("holds no PEM certificate"), "{line}");

    // A CA for a plain URL is a mistake, not silently ignored.
    let ca = pki.ca().display().to_string();
    let line = startup_error(&flags(&[
        "--redis",
        "redis://127.0.0.1:6379/0",
        "--redis-ca-file",
        &ca,
    ]));
    assert!(line.contains("does not use TLS"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_server_takes_the_lease_over_tls() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).await;
    let ca = pki.ca().display().to_string();
    // A standby binds its port only once it leads, so it is told a free one beforehand.
    let port = free_port();
    let child = Command::new(server_binary())
        .args(["--service-token", TOKEN, "--standby", "--lease-ms", "1000"])
        .args(["--redis", &redis.url(), "--redis-ca-file", &ca])
        .args(["127.0.0.1", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start odb-server --standby");
    let server = ServerProcess::from_child(child, port);
    let deadline = Instant::now() + WAIT;
    while !accepts(port).await {
        assert!(
            Instant::now() < deadline,
            "the standby did not start leading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let db = connect(&server).await;
    db.transaction(|tx| {
        Note::create(
            tx,
            Note {
                title: "led over tls".into(),
                body: String::new(),
            },
        )
    })
    .await
    .expect("commit through the leader");

    // The lease and the commit are in Redis.
    let mut conn = redis
        .client(&pki)
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis over TLS");
    let lease: Option<String> = redis::cmd("GET")
        .arg("odb:leader")
        .query_async(&mut conn)
        .await
        .expect("read the lease");
    let lease = lease.expect("the leader holds the lease");
    assert!(lease.contains(&format!("127.0.0.1:{port}")), "{lease}");
    let stored_tid: u64 = redis::cmd("GET")
        .arg("odb:tid")
        .query_async(&mut conn)
        .await
        .expect("read the stored tid");
    assert_eq!(stored_tid, db.current_tid().0);
}
