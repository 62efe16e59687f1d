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
        let State::Connecting { attempt, since } = self.state else {
            self.on_disconnected("the server sent a second welcome".into(), now);
            return;
        };
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
        if !first && !same {
            // Ids granted from now on are the new database's; see `add_ids`.
            self.switch = Some(Switch::new(database, tid, attempt, since));
        }
        if first {
            self.shared.local.write().replica.advance(tid);
            self.database = Some(database);
        }
        self.shared.ids.lock().reset(self.link);
        self.add_ids(ids);
        self.shared.set_connection(connection);
        if !first {
            tracing::info!(%connection, same_database = same, "reconnected to the server");
            self.restoring = Some(Vec::new());
        }
        if first || same {
            self.shared.set_connected(true);
            self.events
                .push_back(Event::Status(ConnectionStatus::Connected));
        }
        if first {
            self.send_waiting();
        } else if same {
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

    /// Sends the restore: every subscription, the id blocks of earlier connections, and the
    /// tid the replica holds when the server may send only what changed.
    pub(super) fn send_resume(&mut self, same_database: bool) {
        let wire: Vec<_> = self.server_registry(|registry| {
            self.targets
                .iter()
                .filter_map(|t| t.wire(registry).map(|(w, _)| w))
                .collect()
        });
        let id = self.next_id();
        // A subscription made or cancelled while away changes what the session sees beyond
        // what changed on the server: only the full data is then right.
        let answers = self.waiting_for_restore();
        let retargeted = !answers.is_empty();
        let since = (same_database && !retargeted).then(|| self.shared.local.read().replica.tid());
        let message = ClientMessage::Resume {
            request_id: id,
            targets: wire,
            own: self
                .switch
                .as_ref()
                .map_or(&self.granted, |s| &s.granted)
                .clone(),
            since,
        };
        match self.queue(Some(id), &message) {
            Ok(()) => {
                self.requests.insert(id, Pending::Resume { answers });
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

    /// The restore's data arrived: apply it as one change (on a new database, switch to it),
    /// answer the subscriptions and cancellations it covers, and send those made since.
    pub(super) fn resumed(
        &mut self,
        objects: Vec<ObjectList>,
        tid: Tid,
        visible: Option<Vec<IdBlock>>,
        answers: Vec<RequestId>,
    ) {
        let types = self.subscribed_types();
        if self.switch.is_some() {
            self.switch_over(objects, &types, tid);
        } else {
            self.shared.apply_resync(objects, &types, tid, visible);
        }
        // Commits pushed while the restore was on its way: the snapshot holds those up to its
        // tid.
        for commit in self.restoring.take().unwrap_or_default() {
            if commit.tid > tid {
                self.shared.apply_commit(commit, CommitKind::Pushed);
            }
        }
        for id in answers {
            let reply = match self.requests.remove(&id) {
                Some(Pending::Subscribe { .. }) => Reply::Subscribed(tid),
                Some(Pending::Unsubscribe { .. }) => Reply::Unsubscribed(tid),
                Some(other) => {
                    self.requests.insert(id, other);
                    continue;
                }
                None => continue,
            };
            self.answer(id, Ok(reply));
        }
        self.send_held_targets(tid);
    }

    /// The types of the session's subscriptions (and of the connection objects it always
    /// sees), in the server's ids.
    fn subscribed_types(&self) -> Vec<TypeId> {
        self.server_registry(|registry| {
            let mut types: Vec<TypeId> = self
                .targets
                .iter()
                .filter_map(|t| t.wire(registry).map(|(_, ty)| ty))
                .collect();
            if let Some(info) =
                registry.get(<crate::system::Connection as crate::Object>::type_def())
            {
                types.push(info.type_id);
            }
            types
        })
    }

    /// The subscriptions and cancellations waiting for a restore.
    fn waiting_for_restore(&self) -> Vec<RequestId> {
        let mut waiting: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p,
                    Pending::Subscribe { link: 0, .. } | Pending::Unsubscribe { link: 0, .. }
                )
            })
            .map(|(&id, _)| id)
            .collect();
        waiting.sort();
        waiting
    }

    /// Sends, in the order they were made, the subscriptions and cancellations made after the
    /// restore was sent (while switching to a new database, nothing goes out before its data
    /// has arrived). A subscription whose targets the session already had is covered by the
    /// restore.
    fn send_held_targets(&mut self, tid: Tid) {
        for id in self.waiting_for_restore() {
            let Some(pending) = self.requests.remove(&id) else {
                continue;
            };
            match pending {
                Pending::Subscribe { added, .. } if added.is_empty() => {
                    self.answer(id, Ok(Reply::Subscribed(tid)))
                }
                Pending::Subscribe { added, .. } => match self.send_targets(id, true, &added) {
                    Ok(types) => {
                        let link = self.link;
                        self.requests
                            .insert(id, Pending::Subscribe { added, types, link });
                    }
                    Err(e) => {
                        self.targets.remove(&added);
                        self.answer(id, Err(e));
                    }
                },
                Pending::Unsubscribe { targets, .. } => {
                    match self.send_targets(id, false, &targets) {
                        Ok(_) => {
                            let link = self.link;
                            self.requests
                                .insert(id, Pending::Unsubscribe { targets, link });
                        }
                        Err(e) => self.answer(id, Err(e)),
                    }
                }
                other => {
                    self.requests.insert(id, other);
                }
            }
        }
    }

    pub(super) fn fail_waiting_subscriptions(&mut self, reason: &str) {
        for id in self.waiting_for_restore() {
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
            match &mut self.switch {
                Some(switch) => switch.registry.insert_schema(infos),
                None => self.shared.registry.write().insert_schema(infos),
            }
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

    pub(super) fn add_ids(&mut self, block: IdBlock) {
        self.shared.ids.lock().add(block);
        // While switching to a new database, its grants are kept apart: they replace the old
        // database's only once the switch is done, and go if it is not.
        let granted = match &mut self.switch {
            Some(switch) => &mut switch.granted,
            None => &mut self.granted,
        };
        match granted.last_mut() {
            Some(last) if last.start + last.len == block.start => last.len += block.len,
            _ => granted.push(block),
        }
    }
}
