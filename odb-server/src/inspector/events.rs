//! The live feed of the overview page, as server-sent events: a `commit` event with one line
//! per commit saying what changed, a `stats` event every second with the figures that are
//! cheap to read (no request to the sequencer), and a `lag` event when the follower fell
//! behind the feed and commits were skipped.

use super::HttpState;
use crate::http::ask;
use crate::sequencer::feed::{ChangeKind, FeedCommit, FeedValue, Follower};
use crate::sequencer::inspect::{Answer, Query};
use bytes::Bytes;
use odb_wire::catalog::{Catalog, Decoded};
use odb_wire::TypeId;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often the figures are sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// The most commit events sent in one write.
const BATCH: usize = 64;

/// The longest text shown for one field value in a commit line.
const VALUE_CHARS: usize = 120;

/// The shortest interval a rate of commits is measured over.
const RATE_INTERVAL: Duration = Duration::from_millis(500);

/// One follower of the feed.
pub(crate) struct Stream {
    state: HttpState,
    commits: Follower,
    ticks: Interval,
    catalog: Catalog,
    /// Types still unknown after the schemas were asked for again: not asked for twice.
    missing: HashSet<TypeId>,
    last: (Instant, u64),
    rate: f64,
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
            missing: HashSet::new(),
            last: (Instant::now(), tid),
            rate: 0.0,
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
            received = self.commits.recv() => {
                let mut events = self.received(received).await?;
                // Whatever else has arrived goes out in the same write: under a steady flow of
                // commits, one write per batch rather than per commit.
                for _ in 1..BATCH {
                    match self.commits.try_recv() {
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        Ok(commit) => events.push_str(&self.received(Ok(commit)).await?),
                        Err(TryRecvError::Lagged(n)) => {
                            events.push_str(&self.received(Err(RecvError::Lagged(n))).await?)
                        }
                    }
                }
                Some(Bytes::from(events))
            }
        }
    }

    /// The event for what the feed gave; `None` once it is closed.
    async fn received(&mut self, received: Result<Arc<FeedCommit>, RecvError>) -> Option<String> {
        match received {
            Ok(commit) => Some(self.commit_event(&commit).await),
            Err(RecvError::Lagged(n)) => Some(event(
                "lag",
                &format!("{n} commits not shown: the feed fell behind"),
            )),
            Err(RecvError::Closed) => None,
        }
    }

    fn stats(&mut self) -> String {
        let status = &self.state.status;
        let tid = status.tid.load(Ordering::Acquire);
        let now = Instant::now();
        let (then, before) = self.last;
        let elapsed = now.saturating_duration_since(then);
        if elapsed >= RATE_INTERVAL {
            self.rate = tid.saturating_sub(before) as f64 / elapsed.as_secs_f64();
            self.last = (now, tid);
        }
        let rate = self.rate;
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
        // A type defined since the schemas were read: read them again, once per such type.
        let unknown = |catalog: &Catalog, missing: &HashSet<TypeId>| {
            commit
                .objects
                .iter()
                .any(|o| catalog.type_name(o.ty).is_none() && !missing.contains(&o.ty))
        };
        if unknown(&self.catalog, &self.missing) {
            self.catalog = catalog(&self.state).await;
            for object in &commit.objects {
                if self.catalog.type_name(object.ty).is_none() {
                    self.missing.insert(object.ty);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::feed::FeedObject;
    use odb_wire::{FieldId, FieldInfo, IndexId, ObjectId, SchemaInfo, Tid, TypeDesc, TypeInfo};

    fn catalog() -> Catalog {
        Catalog::new(vec![SchemaInfo {
            name: "s".into(),
            types: vec![TypeInfo {
                name: "T".into(),
                type_id: TypeId(1),
                exists_field: FieldId(10),
                all_index: IndexId(20),
                count: 0,
                fields: vec![FieldInfo {
                    name: "a".into(),
                    id: FieldId(11),
                    desc: Some(TypeDesc::String),
                }],
                indices: Vec::new(),
            }],
        }])
    }

    #[test]
    fn a_commit_line_says_what_changed_in_bounded_size() {
        let object = |id, kind, fields| FeedObject {
            id: ObjectId(id),
            ty: TypeId(1),
            kind,
            fields,
        };
        let value = odb_wire::encode_exact("x\ny").unwrap();
        let commit = FeedCommit {
            tid: Tid(9),
            objects: vec![
                object(
                    5,
                    ChangeKind::Created,
                    vec![
                        (FieldId(10), FeedValue::Bytes(Bytes::new())),
                        (FieldId(11), FeedValue::Bytes(value)),
                    ],
                ),
                object(
                    6,
                    ChangeKind::Updated,
                    vec![(FieldId(11), FeedValue::Long(5000))],
                ),
                object(
                    7,
                    ChangeKind::Updated,
                    vec![(FieldId(11), FeedValue::Removed)],
                ),
                object(8, ChangeKind::Deleted, Vec::new()),
            ],
            total: 14,
        };
        let line = commit_line(&catalog(), &commit);
        assert_eq!(
            line,
            "tid 9: create #5 s.T a=\"x\\ny\"; update #6 s.T a=(5000 bytes); \
             update #7 s.T a=(removed); delete #8 s.T; and 10 more objects"
        );
        let sent = event("commit", "one\ntwo");
        assert_eq!(sent, "event: commit\ndata: one two\n\n");
    }
}
