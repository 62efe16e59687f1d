//! The sequencer's side of the metrics: what a batch held and how long its commits took.

use super::Request;
use crate::metrics::Metrics;
use odb_wire::{ClientMessage, CommitOutcome};
use tokio::time::Instant;

/// Records a batch's size and how long each of its commits waited in the queue; returns when
/// each commit's frame was read, for [`answered`].
pub(super) fn batch(metrics: &Metrics, batch: &[Request]) -> Vec<Instant> {
    let now = Instant::now();
    let arrivals: Vec<Instant> = batch
        .iter()
        .filter_map(|request| match request {
            Request::Message {
                message: ClientMessage::Commit { .. },
                received,
                ..
            } => Some(*received),
            _ => None,
        })
        .collect();
    for received in &arrivals {
        metrics.queue_wait(now.saturating_duration_since(*received));
    }
    metrics.batch(batch.len(), arrivals.len());
    arrivals
}

/// Records one commit's outcome and how long validating and applying it took.
pub(super) fn applied(metrics: &Metrics, started: Instant, outcome: &CommitOutcome) {
    metrics.apply(started.elapsed());
    metrics.commit_outcome(outcome);
}

/// Records the whole time in the server of a batch's commits, whose answers have just been
/// released.
pub(super) fn answered(metrics: &Metrics, arrivals: &mut Vec<Instant>) {
    let now = Instant::now();
    for received in arrivals.drain(..) {
        metrics.commit_total(now.saturating_duration_since(received));
    }
}
