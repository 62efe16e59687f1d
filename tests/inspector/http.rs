//! A minimal HTTP/1.1 client for the tests: one request per connection, the whole answer, or
//! a live feed read until a condition holds.

use crate::support::WAIT;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The header lines, as received.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A request: method, path, extra header lines and a body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<String>,
    pub body: &'a str,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            headers: Vec::new(),
            body: "",
        }
    }

    pub fn post_form(path: &'a str, body: &'a str) -> Self {
        Request {
            method: "POST",
            path,
            headers: vec!["Content-Type: application/x-www-form-urlencoded".into()],
            body,
        }
    }

    pub fn bearer(mut self, token: &str) -> Self {
        self.headers.push(format!("Authorization: Bearer {token}"));
        self
    }

    pub fn cookie(mut self, cookie: &str) -> Self {
        self.headers.push(format!("Cookie: {cookie}"));
        self
    }
}

async fn send(addr: SocketAddr, request: &Request<'_>) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    for header in &request.headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(request.body);
    stream.write_all(text.as_bytes()).await?;
    Ok(stream)
}

fn parse(response: &str) -> anyhow::Result<Answer> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Sends a request and reads the whole answer.
pub async fn fetch(addr: SocketAddr, request: Request<'_>) -> anyhow::Result<Answer> {
    let mut stream = send(addr, &request).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    parse(&String::from_utf8(response)?)
}

/// Reads a live feed opened with [`open`], appending to `received`, until `received`
/// satisfies `done`. Fails if that takes longer than [`WAIT`].
pub async fn read_until(
    stream: &mut TcpStream,
    received: &mut String,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let read = async {
        let mut buf = [0u8; 4096];
        while !done(received) {
            let n = stream.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "the feed ended; received:\n{received}");
            received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(())
    };
    tokio::time::timeout(WAIT, read)
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}; received:\n{received}"))?
}

/// Opens a live feed; returns the connection to read with [`read_until`].
pub async fn open(addr: SocketAddr, request: Request<'_>) -> anyhow::Result<TcpStream> {
    send(addr, &request).await
}
