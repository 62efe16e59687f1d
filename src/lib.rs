//! The quick example's schema and its producer and consumer loops, shared by the `producer`,
//! `consumer` and `quickstart` examples.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The quick example's schema: messages with a timestamp.
#[odb::schema]
pub mod hello_world {
    /// One message, as written by the producer.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Message {
        /// Seconds since the Unix epoch when it was created.
        pub timestamp: f64,
        /// `message_N`.
        pub message: String,
    }
}

use hello_world::Message;

/// Connects to `ODB_URL` (default `odb://127.0.0.1:8000`) with `ODB_TOKEN` (default `TOKEN`);
/// for an `odbs://` URL, `ODB_TLS_CA` names a PEM file of certificates to trust instead of the
/// system's (a CA, or the server's self-signed certificate).
pub async fn connect_from_env() -> odb::Result<odb::Client> {
    let url = std::env::var("ODB_URL").unwrap_or_else(|_| "odb://127.0.0.1:8000".to_string());
    let token = std::env::var("ODB_TOKEN").unwrap_or_else(|_| "TOKEN".to_string());
    let mut builder = odb::Client::builder(url).token(token);
    if let Some(ca) = std::env::var_os("ODB_TLS_CA").filter(|ca| !ca.is_empty()) {
        builder = builder.tls_ca_file(ca);
    }
    let db = builder.connect().await?;
    report_reconnects(&db);
    Ok(db)
}

/// Prints a one-line note on stderr when the client loses its connection and when it is back
/// (the client reconnects by itself; the program goes on).
pub fn report_reconnects(db: &odb::Client) {
    let mut status = db.status();
    tokio::spawn(async move {
        let mut lost = false;
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            match now {
                odb::ConnectionStatus::Reconnecting { .. } if !lost => {
                    lost = true;
                    eprintln!("connection to the server lost; reconnecting");
                }
                odb::ConnectionStatus::Connected if lost => {
                    lost = false;
                    eprintln!("reconnected");
                }
                _ => {}
            }
        }
    });
}

/// Runs an example's body; on error prints it on one line and exits with status 1.
pub async fn exit_on_error(body: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = body.await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Creates `message_0`, `message_1`, … one per transaction, every `interval` (back to back
/// when it is zero); stops after `count` messages when given.
pub async fn produce(db: &odb::Client, count: Option<u64>, interval: Duration) -> odb::Result<()> {
    let mut ticker = (!interval.is_zero()).then(|| tokio::time::interval(interval));
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        let text = format!("message_{n}");
        db.transaction(|tx| {
            Message::create(
                tx,
                Message {
                    timestamp: now(),
                    message: text.clone(),
                },
            )
        })
        .await?;
        n += 1;
    }
    Ok(())
}

/// Subscribes to messages and calls `print` with each one as `("message_N", timestamp)`,
/// exactly once each, however many producers write at once; returns after `count` messages
/// when given.
///
/// Messages are remembered by object id, text and timestamp rather than counted: producers
/// create objects with ids from their own id blocks, so a message created later can have a
/// smaller id than one already printed; and an in-memory server that restarted hands out the
/// same ids again, for other messages. Each round prints the messages not printed yet, oldest
/// first.
pub async fn consume(
    db: &odb::Client,
    count: Option<usize>,
    mut print: impl FnMut(&str),
) -> odb::Result<()> {
    db.subscribe(hello_world::schema()).await?;
    type Key = (odb::ObjectId, String, u64);
    let key = |id, m: &Message| (id, m.message.clone(), m.timestamp.to_bits());
    let mut printed = std::collections::HashSet::new();
    let unprinted = |v: &odb::View<'_>, printed: &std::collections::HashSet<Key>| {
        let mut fresh = Vec::new();
        for handle in Message::lookup_all(v)? {
            let m = handle.get(v)?;
            if !printed.contains(&key(handle.id(), &m)) {
                fresh.push((handle.id(), m));
            }
        }
        Ok::<_, odb::Error>(fresh)
    };
    while count.is_none_or(|c| printed.len() < c) {
        db.wait_for(
            |v| Ok(!unprinted(v, &printed)?.is_empty()),
            Duration::from_secs(24 * 3600),
        )
        .await?;
        let mut fresh = db.view(|v| unprinted(v, &printed))?;
        fresh.sort_by(|(a, x), (b, y)| x.timestamp.total_cmp(&y.timestamp).then(a.cmp(b)));
        for (id, m) in fresh {
            if count.is_some_and(|c| printed.len() >= c) {
                break;
            }
            print(&format!("{:?}", (&m.message, m.timestamp)));
            printed.insert(key(id, &m));
        }
    }
    Ok(())
}

/// The user guide's chapters, compiled as documentation tests so that every Rust block in the
/// book builds (and, where it needs no outside server, runs) with `cargo test`.
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../book/src/introduction.md")]
    mod introduction {}
    #[doc = include_str!("../book/src/getting-started.md")]
    mod getting_started {}
    #[doc = include_str!("../book/src/schemas.md")]
    mod schemas {}
    #[doc = include_str!("../book/src/api.md")]
    mod api {}
    #[doc = include_str!("../book/src/server.md")]
    mod server {}
    #[doc = include_str!("../book/src/security.md")]
    mod security {}
    #[doc = include_str!("../book/src/persistence.md")]
    mod persistence {}
    #[doc = include_str!("../book/src/sessions.md")]
    mod sessions {}
    #[doc = include_str!("../book/src/operations.md")]
    mod operations {}
}
