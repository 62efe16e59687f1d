//! Limit and runtime flags of the `odb-server` binary take effect, and nonsense values stop it
//! at start.

mod processes;

use futures::StreamExt;
use odb_wire::{Refusal, ServerMessage};
use processes::{server_binary, ServerProcess};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

const TOKEN: &str = "server-flags-test";

#[odb::schema]
pub mod flags {
    /// A note one client writes and another reads.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Note {
        /// What it says.
        pub text: String,
    }
}

use flags::Note;

async fn connect(server: &ServerProcess, name: &str) -> odb::Client {
    odb::Client::builder(format!("odb://127.0.0.1:{}", server.port()))
        .token(TOKEN)
        .name(name)
        .connect()
        .await
        .expect("connect to odb-server")
}

/// With `--worker-threads 1` the whole server runs on one worker thread: a commit is answered
/// and pushed to a subscriber as with the default.
#[tokio::test]
async fn one_worker_thread_serves_commits_and_subscribers() {
    let server = ServerProcess::start(TOKEN, &["--worker-threads", "1"]).await;
    let reader = connect(&server, "flags-reader").await;
    reader.subscribe_type::<Note>().await.expect("subscribe");
    let writer = connect(&server, "flags-writer").await;
    let note = writer
        .transaction(|tx| {
            Note::create(
                tx,
                Note {
                    text: "one thread".into(),
                },
            )
        })
        .await
        .expect("commit");
    reader
        .wait_for(|v| note.exists(v), Duration::from_secs(30))
        .await
        .expect("the reader sees the writer's note");
    assert_eq!(reader.view(|v| note.text(v)).expect("read"), "one thread");
}

/// `--worker-threads 0` is a usage error naming the flag.
#[test]
fn zero_worker_threads_is_a_usage_error() {
    let output = Command::new(server_binary())
        .args([
            "--service-token",
            TOKEN,
            "--worker-threads",
            "0",
            "127.0.0.1",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run odb-server");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}

/// With `--max-hello-per-address 1`, a second connection from the same address while the first
/// has not said hello yet is refused, with the limit in the reason.
#[tokio::test]
async fn max_hello_per_address_caps_connections_in_their_hello() {
    let server = ServerProcess::start(TOKEN, &["--max-hello-per-address", "1"]).await;
    let _idle = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect");
    // The server counts the first connection once it has accepted it, which the client cannot
    // see: connect again until a refusal comes (each try that got in is closed again).
    let refusal = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let second = TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .expect("connect");
            let mut frames = FramedRead::new(second, odb_wire::framing(1 << 20));
            let first = tokio::time::timeout(Duration::from_millis(500), frames.next()).await;
            if let Ok(Some(Ok(frame))) = first {
                return odb_wire::decode_server_message(&frame).expect("a server message");
            }
        }
    })
    .await
    .expect("the second connection is refused");
    assert_eq!(
        refusal,
        ServerMessage::Rejected {
            reason: Refusal::TooManyFromAddress { limit: 1 }
        }
    );
}

/// A zero for either new limit is refused at start with a one-line error.
#[test]
fn zero_limits_are_refused_at_start() {
    for flag in ["--max-hello-per-address", "--max-outbound-total-bytes"] {
        let output = Command::new(server_binary())
            .args(["--service-token", TOKEN, flag, "0", "127.0.0.1", "0"])
            .stdin(Stdio::null())
            .output()
            .expect("run odb-server");
        assert_eq!(output.status.code(), Some(1), "{flag} 0");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{flag} must be at least 1")),
            "{flag} 0: {stderr}"
        );
    }
}
