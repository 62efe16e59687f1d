//! Following a new database: a reconnection found a server whose database is not the one the
//! session followed (an in-memory server restarted). Its type and field ids may differ, so
//! the client defines its schemas again into a registry of its own, restores the
//! subscriptions on it, and only when their data has arrived replaces registry and replica in
//! one step. Until then views read the old database's last state, as while disconnected, and
//! transactions wait.

use super::*;
use crate::registry::Registry;

/// A switch to a new database in progress.
pub(super) struct Switch {
    /// The new database's ids, filled as the schemas are defined again.
    pub registry: Registry,
    database: DatabaseId,
    /// The new database's tid at the welcome.
    tid: Tid,
    /// Id blocks the new database granted.
    pub granted: Vec<IdBlock>,
    /// What [`ClientCore::status`] reports meanwhile: still reconnecting.
    pub attempt: u32,
    pub since: Instant,
}

impl Switch {
    pub fn new(database: DatabaseId, tid: Tid, attempt: u32, since: Instant) -> Switch {
        Switch {
            registry: Registry::default(),
            database,
            tid,
            granted: Vec::new(),
            attempt,
            since,
        }
    }
}

impl ClientCore {
    /// Runs `f` with the registry holding the server's ids: the new database's while
    /// switching to it, else the one views read.
    pub(super) fn server_registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        match &self.switch {
            Some(switch) => f(&switch.registry),
            None => f(&self.shared.registry.read()),
        }
    }

    /// On a connection to another database: nothing of the old one carries over. Unsettled
    /// commits cannot be settled; schemas are defined again and the subscriptions restored
    /// once they are.
    pub(super) fn new_database(&mut self) {
        tracing::warn!("the server's database changed (an in-memory server restarted?); fetching everything again");
        let unsettled: Vec<RequestId> = self
            .requests
            .iter()
            .filter_map(|(&rid, p)| {
                matches!(
                    p,
                    Pending::Commit {
                        unsettled: true,
                        ..
                    }
                )
                .then_some(rid)
            })
            .collect();
        for rid in unsettled {
            self.requests.remove(&rid);
            self.answer(
                rid,
                Err(Error::CommitOutcomeUnknown {
                    reason: "the server restarted without its data, so whether the commit was applied before cannot be known".into(),
                }),
            );
        }
        self.redefining = self.schemas.len();
        for schema in self.schemas.clone() {
            let pending = Pending::Schema {
                schema,
                internal: true,
            };
            let id = self.next_id();
            if self.send_request(id, &pending).is_ok() {
                self.requests.insert(id, pending);
            } else {
                self.redefining -= 1;
            }
        }
        if self.redefining == 0 {
            self.send_resume(false);
        }
    }

    /// One schema was defined again (or could not be): the restore goes out after the last.
    pub(super) fn schema_redefined(&mut self) {
        self.redefining = self.redefining.saturating_sub(1);
        if self.redefining == 0 && self.switch.is_some() {
            self.send_resume(false);
        }
    }

    /// The new database's data (`objects` at `tid`, of `types`) arrived: registry and replica
    /// are replaced together, the client is connected again, and what waited goes out.
    pub(super) fn switch_over(&mut self, objects: Vec<ObjectList>, types: &[TypeId], tid: Tid) {
        let Some(switch) = self.switch.take() else {
            return;
        };
        self.shared
            .replace_database(switch.registry, objects, types, tid);
        self.generation += 1;
        self.database = Some(switch.database);
        self.granted = switch.granted;
        self.shared.set_connected(true);
        self.events
            .push_back(Event::Status(ConnectionStatus::Connected));
        self.send_waiting();
    }

    /// The server refused the restore on the new database: follow it without the data.
    pub(super) fn switch_without_data(&mut self) {
        let Some(tid) = self.switch.as_ref().map(|s| s.tid) else {
            return;
        };
        let types = Vec::new();
        self.switch_over(Vec::new(), &types, tid);
    }
}
