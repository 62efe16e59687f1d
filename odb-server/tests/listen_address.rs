//! The `odb-server` binary's `--print-address`: with port 0 the system picks a free port, and
//! the line printed on standard output is the only way a parent process learns it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

/// Kills the server when the test ends, passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_zero_prints_the_bound_address() {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_odb-server"))
            .args(["--service-token", "t", "--inmem", "--print-address"])
            .args(["127.0.0.1", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start odb-server"),
    );
    let stdout = server.0.stdout.take().expect("piped standard output");
    // The line is printed once the listener is bound; the read returns when it arrives.
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address line");
    let addr: SocketAddr = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?} is not an address: {e}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the printed port must be the bound one");
    TcpStream::connect(addr).expect("the server accepts connections on the printed address");
}
