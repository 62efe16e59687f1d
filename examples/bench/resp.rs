//! A minimal Redis client for the baselines: commands are written in the RESP protocol straight
//! into one buffer and sent with one write, and replies are parsed in place from one read
//! buffer. No task of its own and no channel in between, so that a baseline measures Redis, not
//! a client library's overhead: a pipelined `SET` baseline with it comes within about 15 % of
//! `redis-benchmark`, which is written in C (see the book's performance chapter).

use anyhow::{bail, Context, Result};
use std::io::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+QUEUED`: a simple string.
    Simple(Vec<u8>),
    /// `:n`.
    Int(i64),
    /// `$n`: a bulk string, `None` for the nil reply.
    Bulk(Option<Vec<u8>>),
    /// `*n`: an array, `None` for the nil array (an aborted `EXEC`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply of a successful `SET`, `WATCH` or `MULTI`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == b"OK")
    }

    /// A bulk string or integer read as a number (`None` for nil).
    pub fn number(&self) -> Result<Option<u64>> {
        match self {
            Reply::Bulk(None) => Ok(None),
            Reply::Bulk(Some(b)) => Ok(Some(std::str::from_utf8(b)?.parse()?)),
            Reply::Int(n) => Ok(Some(u64::try_from(*n)?)),
            other => bail!("expected a number, got {other:?}"),
        }
    }
}

/// A connection to `redis-server`.
pub struct Resp {
    stream: TcpStream,
    out: Vec<u8>,
    scratch: Vec<u8>,
    buf: Vec<u8>,
    /// Where the unparsed part of `buf` starts.
    at: usize,
}

impl Resp {
    /// Connects to the server of a `redis://host:port/` URL.
    pub async fn connect(url: &str) -> Result<Resp> {
        let addr = url
            .strip_prefix("redis://")
            .map(|rest| rest.trim_end_matches('/'))
            .with_context(|| format!("not a redis:// URL: {url}"))?;
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to redis-server at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            stream,
            out: Vec::with_capacity(4096),
            scratch: Vec::with_capacity(64),
            buf: Vec::with_capacity(4096),
            at: 0,
        })
    }

    /// Adds a command to the next write. Each argument is formatted once, into a scratch
    /// buffer, since its length goes first; the counts and lengths are written without
    /// `fmt`.
    pub fn command(&mut self, args: &[&dyn std::fmt::Display]) {
        self.out.push(b'*');
        decimal(&mut self.out, args.len());
        self.out.extend_from_slice(b"\r\n");
        for arg in args {
            self.scratch.clear();
            let _ = write!(self.scratch, "{arg}");
            self.out.push(b'$');
            decimal(&mut self.out, self.scratch.len());
            self.out.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&self.scratch);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends the commands added so far, in one write.
    pub async fn send(&mut self) -> Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Sends the commands added so far and reads the first reply: one command's round trip.
    pub async fn roundtrip(&mut self) -> Result<Reply> {
        self.send().await?;
        self.reply().await
    }

    /// The next reply; a Redis error reply is returned as an error.
    pub async fn reply(&mut self) -> Result<Reply> {
        loop {
            if let Some((reply, used)) = parse(&self.buf[self.at..])? {
                self.at += used;
                if self.at == self.buf.len() {
                    self.buf.clear();
                    self.at = 0;
                }
                return Ok(reply);
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("redis-server closed the connection");
            }
        }
    }
}

/// Parses one reply from the start of `buf`: the reply and the bytes it took, or `None` if
/// `buf` does not hold all of it yet.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        bail!("an empty reply line from redis-server");
    };
    let after = end + 2;
    let number = || -> Result<i64> { Ok(std::str::from_utf8(line)?.parse()?) };
    Ok(Some(match kind {
        b'+' => (Reply::Simple(line.to_vec()), after),
        b'-' => bail!("redis-server: {}", String::from_utf8_lossy(line)),
        b':' => (Reply::Int(number()?), after),
        b'$' => match usize::try_from(number()?) {
            Err(_) => (Reply::Bulk(None), after),
            Ok(len) if buf.len() < after + len + 2 => return Ok(None),
            Ok(len) => (
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            ),
        },
        b'*' => match usize::try_from(number()?) {
            Err(_) => (Reply::Array(None), after),
            Ok(n) => {
                let mut items = Vec::with_capacity(n);
                let mut at = after;
                for _ in 0..n {
                    let Some((item, used)) = parse(&buf[at..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                (Reply::Array(Some(items)), at)
            }
        },
        other => bail!(
            "an unknown reply type {:?} from redis-server",
            other as char
        ),
    }))
}

/// Appends `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_match_fmt() {
        for n in [0, 7, 10, 64, 999, 1000, 123_456_789, usize::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let all = b"+OK\r\n:12\r\n$3\r\nabc\r\n$-1\r\n*2\r\n+QUEUED\r\n:1\r\n*-1\r\n";
        let mut at = 0;
        let mut replies = Vec::new();
        while at < all.len() {
            let (reply, used) = parse(&all[at..]).unwrap().unwrap();
            // Any cut short of the whole reply waits for more.
            for cut in 0..used {
                assert!(parse(&all[at..at + cut]).unwrap().is_none());
            }
            replies.push(reply);
            at += used;
        }
        assert_eq!(
            replies,
            [
                Reply::Simple(b"OK".to_vec()),
                Reply::Int(12),
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Simple(b"QUEUED".to_vec()), Reply::Int(1)])),
                Reply::Array(None),
            ]
        );
        assert!(parse(b"-ERR no\r\n").is_err());
    }
}
