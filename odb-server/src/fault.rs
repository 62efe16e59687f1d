//! The server's own failure: its sequencer ending when nobody asked it to (a panic, in
//! practice: a bug, or a storage backend that panics).
//!
//! Everything a server does goes through its one sequencer, so a server without it can answer
//! nothing: it would accept connections and leave every client waiting. Instead the fault
//! stops the server as a shutdown would, telling every client why
//! ([`odb_wire::Refusal::Internal`], after which clients reconnect), and
//! [`crate::Server::failure`] reports it, so that `odb-server` exits with an error and its
//! supervisor can start it again (a durable server loses no acknowledged commit: they were
//! stored before they were acknowledged).

use futures::FutureExt;
use odb_wire::Refusal;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Why the server failed, once it has.
#[derive(Debug, Default)]
pub(crate) struct Fault {
    reason: OnceLock<String>,
    raised: CancellationToken,
}

impl Fault {
    /// Records the failure; the first reason stays.
    fn raise(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.raised.cancel();
    }

    /// Why the server failed, if it has.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Waits until the server fails, then says why.
    pub async fn raised(&self) -> String {
        self.raised.cancelled().await;
        self.reason().unwrap_or("the server failed").to_string()
    }
}

/// What a supervised task needs to stop the server when it fails.
pub(crate) struct Watch {
    pub fault: Arc<Fault>,
    /// The server's `stop`: cancelled by a shutdown, and here on a fault.
    pub stop: CancellationToken,
    /// The server's `halt`: cancelled when the server stops at once.
    pub halt: CancellationToken,
    /// What connections are told when the server stops.
    pub farewell: Arc<OnceLock<Refusal>>,
}

/// Runs the sequencer; if it panics, or ends while the server is neither shutting down nor
/// halted, raises the fault and stops the server with the reason.
pub(crate) async fn supervise(sequencer: impl Future<Output = ()>, watch: Watch) {
    let ended = AssertUnwindSafe(sequencer).catch_unwind().await;
    let reason = match ended {
        Err(panic) => format!("the sequencer panicked: {}", panic_message(panic.as_ref())),
        Ok(()) if watch.stop.is_cancelled() || watch.halt.is_cancelled() => return,
        Ok(()) => "the sequencer stopped unexpectedly".to_string(),
    };
    tracing::error!("{reason}; the server stops, and must be started again");
    // Set before `stop`: connections read it once they see the server stopping.
    let _ = watch.farewell.set(Refusal::Internal {
        detail: format!("{reason}; the server is stopping"),
    });
    // Stopped before the fault is reported: whoever learns of it finds the server stopping.
    watch.stop.cancel();
    watch.fault.raise(reason);
}

/// The text of a panic's payload (what `panic!` was given).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic without a message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            fault: Arc::default(),
            stop: CancellationToken::new(),
            halt: CancellationToken::new(),
            farewell: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_panic_raises_the_fault_and_stops_the_server() {
        let w = watch();
        let (fault, stop, farewell) = (w.fault.clone(), w.stop.clone(), w.farewell.clone());
        supervise(async { panic!("storage on fire") }, w).await;
        assert!(stop.is_cancelled());
        assert_eq!(
            fault.raised().await,
            "the sequencer panicked: storage on fire"
        );
        match farewell.get() {
            Some(Refusal::Internal { detail }) => assert!(detail.contains("storage on fire")),
            other => panic!("unexpected farewell {other:?}"),
        }
    }

    #[tokio::test]
    async fn ending_unasked_is_a_fault_and_ending_on_shutdown_is_not() {
        let w = watch();
        let fault = w.fault.clone();
        supervise(async {}, w).await;
        assert_eq!(fault.reason(), Some("the sequencer stopped unexpectedly"));

        let w = watch();
        let fault = w.fault.clone();
        w.stop.cancel();
        supervise(async {}, w).await;
        assert_eq!(fault.reason(), None);
    }
}
