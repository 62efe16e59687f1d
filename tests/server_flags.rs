//! Limit flags of the `odb-server` binary take effect, and nonsense values stop it at start.

mod processes;

use futures::StreamExt;
use odb_wire::{Refusal, ServerMessage};
use processes::{server_binary, ServerProcess};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

const TOKEN: &str = "server-flags-test";

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
