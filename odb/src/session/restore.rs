//! Connecting again: the welcome of a new connection, and restoring the session on it (the
//! same database: resume and ask about unsettled commits; another database: define the
//! schemas again first), then the restore's answer.

use super::*;

impl ClientCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn welcome(
        &mut self,
        connection: ObjectId,
        ids: IdBlock,
        tid: Tid,
        heartbeat_interval_ms: u64,
        max_frame: u64,
        database: DatabaseId,
        now: Instant,
    ) {
        if !matches!(self.state, State::Connecting { .. }) {
            self.on_disconnected("the server sent a second welcome".into(), now);
            return;
        }
        let first = self.database.is_none();
        let same = self.database == Some(database);
        self.link += 1;
        self.state = State::Up;
        self.connection = connection;
        self.heartbeat = Duration::from_millis(heartbeat_interval_ms.max(10));
        self.next_heartbeat = now + self.heartbeat;
        self.max_frame = self
            .config
            .max_frame
            .min(usize::try_from(max_frame).unwrap_or(usize::MAX));
        if !same {
            self.granted.clear();
        }
        if first {
            self.shared.local.write().replica.advance(tid);
        }
        self.database = Some(database);
        self.shared.ids.lock().reset(self.link);
        self.add_ids(ids);
        self.shared.set_connection(connection);
        self.shared.set_connected(true);
        self.events
            .push_back(Event::Status(ConnectionStatus::Connected));
        if first {
            self.send_waiting();
            return;
        }
        tracing::info!(%connection, same_database = same, "reconnected to the server");
        self.restoring = Some(Vec::new());
        if same {
            self.restore();
        } else {
            self.new_database();
        }
    }

    /// On a connection to the same database as before: restore the subscriptions, ask about
    /// unsettled commits, then send what waits.
    pub(super) fn restore(&mut self) {
        self.send_resume(true);
        let unsettled: Vec<(RequestId, CommitId, Tid)> = self
            .requests
            .iter()
            .filter_map(|(&rid, p)| match p {
                Pending::Commit {
                    id,
                    base,
                    unsettled: true,
                    ..
                } => Some((rid, *id, *base)),
                _ => None,
            })
            .collect();
        if !unsettled.is_empty() {
            let id = self.next_id();
            let message = ClientMessage::QueryCommits {
                request_id: id,
                commits: unsettled.iter().map(|&(_, c, b)| (c, b)).collect(),
            };
            if let Err(e) = self.queue(Some(id), &message) {
                for (rid, ..) in unsettled {
                    self.requests.remove(&rid);
                    self.answer(
                        rid,
                        Err(Error::CommitOutcomeUnknown {
                            reason: format!("cannot ask the server about it: {e}"),
                        }),
                    );
                }
            } else {
                self.requests.insert(
                    id,
                    Pending::Query {
                        commits: unsettled.iter().map(|&(r, ..)| r).collect(),
                    },
                );
            }
        }
        self.send_waiting();
    }

    /// On a connection to another database (an in-memory server that restarted): nothing of
    /// the old one carries over. Unsettled commits cannot be settled; schemas are defined again
    /// and the subscriptions restored once they are.
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
        *self.shared.registry.write() = crate::registry::Registry::default();
        let schemas = std::mem::take(&mut self.schemas);
        self.redefining = schemas.len();
        for schema in schemas {
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
        self.send_waiting();
    }

    /// Sends the restore: every subscription, the id blocks of earlier connections, and the
    /// tid the replica holds when the server may send only what changed.
    pub(super) fn send_resume(&mut self, same_database: bool) {
        let targets: Vec<Target> = self.targets.iter().cloned().collect();
        let registry = self.shared.registry.read();
        let wire: Vec<_> = targets
            .iter()
            .filter_map(|t| t.wire(&registry).map(|(w, _)| w))
            .collect();
        drop(registry);
        let id = self.next_id();
        // A subscription made or cancelled while away changes what the session sees beyond
        // what changed on the server: only the full data is then right.
        let retargeted = self.requests.values().any(|p| {
            matches!(
                p,
                Pending::Subscribe { link: 0, .. } | Pending::Unsubscribe { link: 0 }
            )
        });
        let since = (same_database && !retargeted).then(|| self.shared.local.read().replica.tid());
        let message = ClientMessage::Resume {
            request_id: id,
            targets: wire,
            own: self.granted.clone(),
            since,
        };
        match self.queue(Some(id), &message) {
            Ok(()) => {
                self.requests.insert(id, Pending::Resume);
            }
            Err(e) => {
                self.fail_waiting_subscriptions(&format!("cannot restore the subscriptions: {e}"))
            }
        }
    }

    /// Sends the schema, id and flush requests that waited for a connection.
    pub(super) fn send_waiting(&mut self) {
        let mut waiting: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p,
                    Pending::Schema {
                        internal: false,
                        ..
                    } | Pending::Ids { .. }
                        | Pending::Flush
                )
            })
            .map(|(&id, _)| id)
            .collect();
        waiting.sort();
        for id in waiting {
            if let Some(pending) = self.requests.remove(&id) {
                match self.send_request(id, &pending) {
                    Ok(()) => {
                        self.requests.insert(id, pending);
                    }
                    Err(e) => self.answer(id, Err(e)),
                }
            }
        }
    }

    /// The restore's data arrived: apply it as one change and answer the subscriptions and
    /// cancellations that waited for it.
    pub(super) fn resumed(
        &mut self,
        objects: Vec<ObjectData>,
        tid: Tid,
        visible: Option<Vec<IdBlock>>,
    ) {
        let registry = self.shared.registry.read();
        let mut types: Vec<TypeId> = self
            .targets
            .iter()
            .filter_map(|t| t.wire(&registry).map(|(_, ty)| ty))
            .collect();
        if let Some(info) = registry.get(<crate::system::Connection as crate::Object>::type_def()) {
            types.push(info.type_id);
        }
        drop(registry);
        self.shared.apply_resync(objects, &types, tid, visible);
        // Commits pushed while the restore was on its way: the snapshot holds those up to its
        // tid.
        for commit in self.restoring.take().unwrap_or_default() {
            if commit.tid > tid {
                self.shared.apply_commit(commit, CommitKind::Pushed);
            }
        }
        let waiting: Vec<(RequestId, bool)> = self
            .requests
            .iter()
            .filter_map(|(&id, p)| match p {
                Pending::Subscribe { link: 0, .. } => Some((id, true)),
                Pending::Unsubscribe { link: 0 } => Some((id, false)),
                _ => None,
            })
            .collect();
        for (id, subscribe) in waiting {
            self.requests.remove(&id);
            let reply = if subscribe {
                Reply::Subscribed(tid)
            } else {
                Reply::Unsubscribed(tid)
            };
            self.answer(id, Ok(reply));
        }
    }

    pub(super) fn fail_waiting_subscriptions(&mut self, reason: &str) {
        let waiting: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p,
                    Pending::Subscribe { link: 0, .. } | Pending::Unsubscribe { link: 0 }
                )
            })
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.requests.remove(&id);
            self.answer(id, Err(Error::Server(reason.to_string())));
        }
    }

    pub(super) fn schema_defined(&mut self, request_id: RequestId, ids: SchemaIds) {
        let Some(Pending::Schema { schema, internal }) = self.requests.remove(&request_id) else {
            return;
        };
        let result = if ids.types.len() != schema.types().len() {
            Err(Error::Protocol(format!(
                "the server answered {} types for schema {}, which has {}",
                ids.types.len(),
                schema.name(),
                schema.types().len()
            )))
        } else {
            let infos = schema
                .types()
                .iter()
                .zip(&ids.types)
                .map(|(def, ids)| TypeInfo::new(def, ids))
                .collect();
            self.shared.registry.write().insert_schema(infos);
            if !self.schemas.iter().any(|s| std::ptr::eq(*s, schema)) {
                self.schemas.push(schema);
            }
            Ok(Reply::Schema)
        };
        if internal {
            if let Err(e) = result {
                tracing::error!("cannot define schema {} again: {e}", schema.name());
            }
            self.schema_redefined();
        } else {
            self.answer(request_id, result);
        }
    }

    pub(super) fn schema_redefined(&mut self) {
        self.redefining = self.redefining.saturating_sub(1);
        if self.redefining == 0 {
            self.send_resume(false);
        }
    }

    pub(super) fn add_ids(&mut self, block: IdBlock) {
        self.shared.ids.lock().add(block);
        match self.granted.last_mut() {
            Some(last) if last.start + last.len == block.start => last.len += block.len,
            _ => self.granted.push(block),
        }
    }
}
