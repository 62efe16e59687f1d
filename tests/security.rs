//! Security through the public API: TLS with a pinned self-signed certificate and the errors a
//! client gets when verification fails or the transport is wrong, limits reported as
//! `Error::LimitExceeded`, and the connection limit. The server keeps serving throughout.

#[allow(unused_macros)]
mod common;

use common::{account, Account, TOKEN};
use odb::server::{RunningServer, Server, ServerConfig, TlsConfig};
use odb::{Client, Error};
use std::path::PathBuf;

/// A PEM file in the temporary directory, removed when dropped.
struct PemFile(PathBuf);

impl PemFile {
    fn new(name: &str, pem: &str) -> PemFile {
        let path =
            std::env::temp_dir().join(format!("odb-security-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, pem).expect("write the certificate");
        PemFile(path)
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn start(config: ServerConfig) -> RunningServer {
    Server::in_memory()
        .config(ServerConfig {
            token: TOKEN.into(),
            ..config
        })
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("server starts")
}

/// A TLS server with a self-signed certificate for `names`, and that certificate in a file.
async fn tls_server(names: &[&str]) -> (RunningServer, PemFile) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let tls = TlsConfig::self_signed(&names).expect("certificate");
    let pem = PemFile::new(&names.join("-"), tls.certificate_pem().unwrap());
    let server = start(ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    })
    .await;
    (server, pem)
}

fn port(server: &RunningServer) -> u16 {
    server.local_addr().unwrap().port()
}

/// A client can write and read back through the connection.
async fn works(db: &Client) {
    db.subscribe(common::bank::schema()).await.unwrap();
    let acc = db
        .transaction(|tx| Account::create(tx, account("tls", 7)))
        .await
        .unwrap();
    assert_eq!(db.view(|v| acc.balance(v)).unwrap(), 7);
}

#[tokio::test]
async fn a_pinned_self_signed_certificate_is_trusted() {
    let names = odb_server::self_signed_names("127.0.0.1", "127.0.0.1".parse().unwrap());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (server, pem) = tls_server(&names).await;
    for host in ["127.0.0.1", "localhost"] {
        let db = Client::builder(format!("odbs://{host}:{}", port(&server)))
            .token(TOKEN)
            .tls_ca_file(&pem.0)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("TLS to {host}: {e}"));
        works(&db).await;
    }
    server.shutdown().await;
}

/// The embedded server's builder sets TLS without replacing the rest of the configuration, and
/// its URL then names the TLS scheme, so connecting with it just works.
#[tokio::test]
async fn the_embedded_builder_serves_tls_and_its_url_says_so() {
    let tls = TlsConfig::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let pem = PemFile::new("builder", tls.certificate_pem().unwrap());
    let server = Server::in_memory()
        .listen("127.0.0.1:0".parse().unwrap())
        .token(TOKEN)
        .tls(tls)
        .start()
        .await
        .unwrap();
    let url = server.url().unwrap();
    assert_eq!(url, format!("odbs://127.0.0.1:{}", port(&server)));
    let db = Client::builder(&url)
        .token(TOKEN)
        .tls_ca_file(&pem.0)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("TLS to {url}: {e}"));
    works(&db).await;
    // The server's figures without reaching for the underlying server.
    assert_eq!(server.current_tid(), db.current_tid());
    let stats = server.stats();
    assert_eq!(stats.tid, server.current_tid());
    assert_eq!(stats.connections, 1);
    // The token set before `tls` still holds: a wrong one is refused.
    let wrong = Client::builder(&url)
        .token("not-the-token")
        .tls_ca_file(&pem.0)
        .connect()
        .await;
    assert!(matches!(wrong, Err(Error::Unauthorized)), "{wrong:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_server_has_an_odb_url() {
    let server = start(ServerConfig::default()).await;
    assert_eq!(
        server.url(),
        Some(format!("odb://127.0.0.1:{}", port(&server)))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_as_an_unknown_issuer() {
    let (server, _pem) = tls_server(&["localhost", "127.0.0.1"]).await;
    let url = format!("odbs://127.0.0.1:{}", port(&server));
    // Trusting another certificate than the server's.
    let other = TlsConfig::self_signed(&["127.0.0.1".into()]).unwrap();
    let other = PemFile::new("other", other.certificate_pem().unwrap());
    match Client::builder(&url)
        .token(TOKEN)
        .tls_ca_file(&other.0)
        .connect()
        .await
    {
        Err(Error::Tls(reason)) => assert!(reason.contains("unknown issuer"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // Trusting the system's roots, which never signed a self-signed certificate (or there are
    // none on this machine).
    match Client::builder(&url).token(TOKEN).connect().await {
        Err(Error::Tls(reason)) => assert!(
            reason.contains("unknown issuer") || reason.contains("no trusted root"),
            "{reason}"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // The server keeps serving.
    let pem = PemFile::new(
        "again",
        &std::fs::read_to_string(&_pem.0).expect("the certificate file"),
    );
    let db = Client::builder(&url)
        .token(TOKEN)
        .tls_ca_file(&pem.0)
        .connect()
        .await
        .unwrap();
    works(&db).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (server, pem) = tls_server(&["db.example"]).await;
    match Client::builder(format!("odbs://127.0.0.1:{}", port(&server)))
        .token(TOKEN)
        .tls_ca_file(&pem.0)
        .connect()
        .await
    {
        Err(Error::Tls(reason)) => {
            assert!(reason.contains("not valid for the name"), "{reason}");
            assert!(reason.contains("127.0.0.1"), "{reason}");
            // The names the certificate holds, as names, not as the TLS library's types.
            assert!(reason.contains("db.example"), "{reason}");
            assert!(!reason.contains("DnsName"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_wrong_transport_gets_a_clear_error() {
    let (tls, pem) = tls_server(&["127.0.0.1"]).await;
    // Plaintext against a TLS port.
    let err = Client::builder(format!("odb://127.0.0.1:{}", port(&tls)))
        .token(TOKEN)
        .connect()
        .await
        .expect_err("plaintext to a TLS port");
    assert!(err.to_string().contains("odbs://"), "{err}");
    assert!(
        matches!(err, Error::Protocol(_) | Error::Disconnected(_)),
        "{err:?}"
    );

    // TLS against a plaintext port.
    let plain = start(ServerConfig::default()).await;
    let err = Client::builder(format!("odbs://127.0.0.1:{}", port(&plain)))
        .token(TOKEN)
        .tls_ca_file(&pem.0)
        .connect()
        .await
        .expect_err("TLS to a plaintext port");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");

    // Both servers keep serving.
    let db = Client::builder(format!("odbs://127.0.0.1:{}", port(&tls)))
        .token(TOKEN)
        .tls_ca_file(&pem.0)
        .connect()
        .await
        .unwrap();
    works(&db).await;
    let db = Client::builder(plain.url().unwrap())
        .token(TOKEN)
        .connect()
        .await
        .unwrap();
    works(&db).await;
    tls.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn limits_are_reported_as_limit_exceeded() {
    let server = start(ServerConfig {
        max_writes_per_commit: 30,
        max_value_bytes: 1024,
        max_subscriptions: 3,
        ..ServerConfig::default()
    })
    .await;
    let db = server.client().await.unwrap();
    db.subscribe(common::bank::schema()).await.unwrap();

    let err = db
        .transaction(|tx| {
            for n in 0..50 {
                Account::create(tx, account(&format!("a{n}"), n))?;
            }
            Ok(())
        })
        .await
        .expect_err("too many writes");
    match err {
        Error::LimitExceeded { what } => assert!(what.starts_with("writes per commit"), "{what}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }

    let err = db
        .transaction(|tx| Account::create(tx, account(&"x".repeat(2000), 1)))
        .await
        .expect_err("too large a value");
    match err {
        Error::LimitExceeded { what } => assert!(what.starts_with("value size"), "{what}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }

    let accounts = db
        .transaction(|tx| {
            (0..5)
                .map(|n| Account::create(tx, account("sub", n)))
                .collect::<odb::Result<Vec<_>>>()
        })
        .await
        .unwrap();
    let other = server.client().await.unwrap();
    let mut refused = None;
    for acc in &accounts {
        if let Err(e) = other.subscribe_object(*acc).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(Error::LimitExceeded { what }) => {
            assert!(what.starts_with("subscriptions per connection"), "{what}")
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // Nothing but the valid commit was applied, and both clients keep working.
    other.flush().await.unwrap();
    assert_eq!(
        db.view(|v| Ok::<_, odb::Error>(Account::lookup_all(v)?.len()))
            .unwrap(),
        5
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let server = start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let url = server.url().unwrap();
    let a = Client::builder(&url).token(TOKEN).connect().await.unwrap();
    let b = Client::builder(&url).token(TOKEN).connect().await.unwrap();
    match Client::builder(&url).token(TOKEN).connect().await {
        Err(Error::Refused(reason)) => {
            assert_eq!(reason, odb_wire::Refusal::ServerFull { limit: 2 });
            assert!(!reason.is_permanent());
            assert!(
                Error::Refused(reason).to_string().contains("server full"),
                "the user sees why"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    works(&a).await;
    b.flush().await.unwrap();
    drop(b);
    // The place is free again once the server has noticed the departure.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        match Client::builder(&url).token(TOKEN).connect().await {
            Ok(c) => {
                c.flush().await.unwrap();
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(matches!(e, Error::Refused(_)), "{e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place was never freed: {e}"),
        }
    }
    server.shutdown().await;
}

/// A client pointed at something that is not an ODB server (here a web server) says so.
#[tokio::test]
async fn a_peer_answering_http_is_not_an_odb_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = web.local_addr().unwrap();
    let answering = tokio::spawn(async move {
        let (mut stream, _) = web.accept().await.unwrap();
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request).await;
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        let _ = stream.shutdown().await;
    });
    match Client::builder(format!("odb://{addr}"))
        .token(TOKEN)
        .max_retries(0)
        .connect()
        .await
    {
        Err(Error::Protocol(reason)) => {
            assert!(reason.starts_with("not an ODB server"), "{reason}");
            assert!(reason.contains("HTTP"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    answering.await.unwrap();
}

/// The server refuses a peer that speaks HTTP to it with a typed, permanent reason.
#[tokio::test]
async fn a_peer_speaking_http_to_the_server_is_refused_with_a_reason() {
    use futures::{SinkExt, StreamExt};
    let server = start(ServerConfig::default()).await;
    let addr = server.local_addr().unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(stream, odb_wire::framing(1 << 20));
    // A web browser's request, framed as if it were a message.
    framed
        .send(bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    let answer = framed.next().await.unwrap().unwrap();
    match odb_wire::decode::<odb_wire::ServerMessage>(&answer).unwrap() {
        odb_wire::ServerMessage::Rejected {
            reason: reason @ odb_wire::Refusal::NotHello { .. },
        } => assert!(reason.is_permanent()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown().await;
}

/// A client builder's `Debug` output, which ends up in logs, never shows the token.
#[test]
fn the_token_is_not_shown_by_debug() {
    let builder = Client::builder("odb://127.0.0.1:1").token("sekrit-token");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("sekrit-token"), "{shown}");
    assert!(shown.contains("127.0.0.1"), "{shown}");
}
