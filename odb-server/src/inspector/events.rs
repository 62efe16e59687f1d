//! The live feed of the overview page, as server-sent events: a `commit` event with one line
//! per commit saying what changed, a `stats` event every second with the figures that are
//! cheap to read (no request to the sequencer), and a `lag` event when the follower fell
//! behind the feed and commits were skipped.

use super::HttpState;
use crate::http::ask;
use crate::sequencer::feed::{ChangeKind, FeedCommit, FeedValue};
use crate::sequencer::inspect::{Answer, Query};
use bytes::Bytes;
use odb_wire::catalog::{Catalog, Decoded};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often the figures are sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// The longest text shown for one field value in a commit line.
const VALUE_CHARS: usize = 120;

/// How often the schemas may be asked for again when a commit names a type not known yet.
const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// One follower of the feed.
pub(crate) struct Stream {
    state: HttpState,
    commits: broadcast::Receiver<Arc<FeedCommit>>,
    ticks: Interval,
    catalog: Catalog,
    refreshed: Instant,
    last: (Instant, u64),
    started: bool,
    /// Its place among the streams allowed at once, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

impl Stream {
    /// Follows the feed from now on.
    pub async fn start(state: HttpState, slot: OwnedSemaphorePermit) -> Stream {
        let commits = state.status.feed.follow();
        let catalog = catalog(&state).await;
        let mut ticks = tokio::time::interval(STATS_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let tid = state.status.tid.load(Ordering::Acquire);
        Stream {
            state,
            commits,
            ticks,
            catalog,
            refreshed: Instant::now(),
            last: (Instant::now(), tid),
            started: false,
            _slot: slot,
        }
    }

    /// The next event; `None` once the server stops.
    pub async fn next(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            // Sent at once, so the response's head goes out and the page knows it is live.
            return Some(Bytes::from(format!("retry: 2000\n\n{}", self.stats())));
        }
        let stop = self.state.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => None,
            _ = self.ticks.tick() => Some(Bytes::from(self.stats())),
            received = self.commits.recv() => match received {
                Ok(commit) => Some(Bytes::from(self.commit_event(&commit).await)),
                Err(RecvError::Lagged(n)) => Some(Bytes::from(event(
                    "lag",
                    &format!("{n} commits not shown: the feed fell behind"),
                ))),
                Err(RecvError::Closed) => None,
            },
        }
    }

    fn stats(&mut self) -> String {
        let status = &self.state.status;
        let tid = status.tid.load(Ordering::Acquire);
        let now = Instant::now();
        let (then, before) = self.last;
        let seconds = now.saturating_duration_since(then).as_secs_f64();
        let rate = if seconds > 0.0 {
            tid.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        };
        self.last = (now, tid);
        // Numbers only: nothing here needs escaping.
        let data = format!(
            "{{\"tid\":{tid},\"commits_per_second\":{rate:.1},\"connections\":{},\
             \"objects\":{},\"outbound_bytes\":{}}}",
            status.connections.load(Ordering::Acquire),
            status.objects.load(Ordering::Acquire),
            self.state.queues.bytes.load(Ordering::Acquire),
        );
        event("stats", &data)
    }

    async fn commit_event(&mut self, commit: &FeedCommit) -> String {
        let unknown = commit
            .objects
            .iter()
            .any(|o| self.catalog.type_name(o.ty).is_none());
        if unknown && self.refreshed.elapsed() >= CATALOG_REFRESH {
            self.catalog = catalog(&self.state).await;
            self.refreshed = Instant::now();
        }
        event("commit", &commit_line(&self.catalog, commit))
    }
}

async fn catalog(state: &HttpState) -> Catalog {
    match ask(state, Query::Schemas).await {
        Some(Answer::Schemas(schemas)) => Catalog::new(schemas),
        _ => Catalog::default(),
    }
}

/// One server-sent event. Its data is one line: line breaks in it become spaces.
fn event(name: &str, data: &str) -> String {
    let data: String = data
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("event: {name}\ndata: {data}\n\n")
}

/// `tid 12: create #5 app.Item name="x" count=1; delete #3 app.Item`.
pub(crate) fn commit_line(catalog: &Catalog, commit: &FeedCommit) -> String {
    let mut parts: Vec<String> = commit
        .objects
        .iter()
        .map(|object| {
            let op = match object.kind {
                ChangeKind::Created => "create",
                ChangeKind::Updated => "update",
                ChangeKind::Deleted => "delete",
            };
            let ty = catalog.type_name(object.ty).unwrap_or("?");
            let mut part = format!("{op} #{} {ty}", object.id.0);
            for (field, value) in &object.fields {
                if catalog.is_exists_field(*field) {
                    continue;
                }
                let (name, shown) = match value {
                    FeedValue::Bytes(bytes) => {
                        let (name, decoded) = catalog.field(*field, bytes);
                        (name, decoded_text(&decoded))
                    }
                    FeedValue::Removed => (catalog.field(*field, &[]).0, "(removed)".into()),
                    FeedValue::Long(len) => {
                        (catalog.field(*field, &[]).0, format!("({len} bytes)"))
                    }
                };
                part.push_str(&format!(" {name}={shown}"));
            }
            part
        })
        .collect();
    let hidden = commit.total.saturating_sub(commit.objects.len());
    if hidden > 0 {
        parts.push(format!("and {hidden} more objects"));
    }
    if parts.is_empty() {
        parts.push("(no objects)".into());
    }
    format!("tid {}: {}", commit.tid.0, parts.join("; "))
}

fn decoded_text(decoded: &Decoded) -> String {
    super::html::shorten(&decoded.to_string(), VALUE_CHARS)
}
