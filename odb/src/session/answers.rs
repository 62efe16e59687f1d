//! What the server's messages do to the session: each answer settles its request, pushed
//! commits reach the replica.

use super::*;

impl ClientCore {
    /// About how many values handling `message` would apply to the replica: the field and
    /// index writes of a pushed commit, the kept writes of a commit answered as sent, the
    /// objects of a subscription's data and of the data buffered for its completion. The
    /// driver hands a batch whose work is large to a thread of its own, so that the runtime's
    /// worker stays free for other connections meanwhile.
    pub fn work(&self, message: &ServerMessage) -> usize {
        let buffered = |request_id: &RequestId| {
            self.buffers
                .get(request_id)
                .map_or(0, |lists| lists.iter().map(ObjectList::len).sum())
        };
        match message {
            ServerMessage::Commit(data) => {
                data.writes.len() + data.index_writes.len() + data.deletes.len()
            }
            ServerMessage::CommitResult {
                request_id,
                outcome: CommitOutcome::CommittedAsSent { .. },
            } => match self.requests.get(request_id) {
                Some(Pending::Commit {
                    writes: Some(writes),
                    ..
                }) => writes.len(),
                _ => 0,
            },
            ServerMessage::SubscriptionData { objects, .. } => objects.len(),
            ServerMessage::SubscriptionComplete { request_id, .. }
            | ServerMessage::Resumed { request_id, .. } => buffered(request_id),
            _ => 0,
        }
    }

    /// Handles one message from the server.
    pub fn on_message(&mut self, message: ServerMessage, now: Instant) {
        self.last_received = now;
        match message {
            ServerMessage::Welcome {
                protocol_version,
                connection,
                ids,
                tid,
                heartbeat_interval_ms,
                max_frame,
                database,
            } => {
                self.as_sent = protocol_version >= COMMITTED_AS_SENT_VERSION;
                self.welcome(
                    connection,
                    ids,
                    tid,
                    heartbeat_interval_ms,
                    max_frame,
                    database,
                    now,
                )
            }
            ServerMessage::Rejected { reason } => {
                let message = crate::refusal::refusal_error(&reason).to_string();
                self.on_connect_failed(message, reason.is_permanent(), now);
            }
            ServerMessage::Commit(data) => match &mut self.restoring {
                Some(held) => held.push(data),
                None => self.shared.apply_commit(data, CommitKind::Pushed),
            },
            ServerMessage::SubscriptionData {
                request_id,
                objects,
            } => self.buffers.entry(request_id).or_default().push(objects),
            ServerMessage::SubscriptionComplete { request_id, tid } => {
                let objects = self.buffers.remove(&request_id).unwrap_or_default();
                if let Some(Pending::Subscribe { types, .. }) = self.requests.remove(&request_id) {
                    self.shared.apply_snapshot(objects, &types, tid);
                    self.answer(request_id, Ok(Reply::Subscribed(tid)));
                }
            }
            ServerMessage::Resumed {
                request_id,
                tid,
                delta,
                visible,
            } => {
                let objects = self.buffers.remove(&request_id).unwrap_or_default();
                if let Some(Pending::Resume { answers }) = self.requests.remove(&request_id) {
                    self.resumed(objects, tid, delta.then_some(visible), answers);
                }
            }
            ServerMessage::Unsubscribed {
                request_id,
                tid,
                dropped,
            } => {
                if self.requests.remove(&request_id).is_some() {
                    // Objects no longer sent are removed, so nothing stale stays readable.
                    self.shared.apply_commit(
                        odb_wire::CommitData {
                            tid,
                            deletes: dropped,
                            ..odb_wire::CommitData::default()
                        },
                        CommitKind::Dropped,
                    );
                    self.answer(request_id, Ok(Reply::Unsubscribed(tid)));
                }
            }
            ServerMessage::CommitResult {
                request_id,
                outcome,
            } => {
                if let Some(pending) = self.requests.remove(&request_id) {
                    if let CommitOutcome::CommittedAsSent { tid } = outcome {
                        self.apply_as_sent(pending, tid, now);
                    }
                    let result = self.commit_outcome(outcome);
                    self.answer(request_id, result);
                }
            }
            ServerMessage::CommitStatuses {
                request_id,
                statuses,
            } => self.commit_statuses(request_id, statuses),
            ServerMessage::Flushed { request_id, tid } => {
                if self.requests.remove(&request_id).is_some() {
                    self.shared.advance(tid);
                    self.answer(request_id, Ok(Reply::Flushed(tid)));
                }
            }
            ServerMessage::SchemaDefined { request_id, schema } => {
                self.schema_defined(request_id, schema)
            }
            ServerMessage::Ids { request_id, block } => {
                if self.requests.remove(&request_id).is_some() {
                    self.add_ids(block);
                    self.answer(request_id, Ok(Reply::Ids));
                }
            }
            ServerMessage::RequestFailed {
                request_id,
                reason,
                limit,
            } => self.request_failed(request_id, reason, limit),
            ServerMessage::Closing { reason } => self.closing = Some(reason),
            ServerMessage::Heartbeat => {}
            // Answers to requests of tools (the `odb` command), which a client never sends.
            ServerMessage::Stats { .. } | ServerMessage::Schemas { .. } => {}
        }
    }

    pub(super) fn request_failed(
        &mut self,
        request_id: RequestId,
        reason: String,
        limit: Option<odb_wire::limits::Limit>,
    ) {
        self.buffers.remove(&request_id);
        let Some(pending) = self.requests.remove(&request_id) else {
            return;
        };
        let error = crate::refusal::request_error(reason.clone(), limit);
        match pending {
            Pending::Subscribe { added, .. } => {
                self.targets.remove(&added);
                self.answer(request_id, Err(error));
            }
            Pending::Resume { .. } => {
                tracing::error!(%reason, "the server refused to restore the subscriptions");
                self.switch_without_data();
                for commit in self.restoring.take().unwrap_or_default() {
                    self.shared.apply_commit(commit, CommitKind::Pushed);
                }
                self.fail_waiting_subscriptions(&reason);
            }
            Pending::Query { commits } => {
                for rid in commits {
                    self.requests.remove(&rid);
                    self.answer(
                        rid,
                        Err(Error::CommitOutcomeUnknown {
                            reason: format!("the server could not say: {reason}"),
                        }),
                    );
                }
            }
            Pending::Schema {
                internal: true,
                schema,
            } => {
                tracing::error!(%reason, "cannot define schema {} again", schema.name());
                self.schema_redefined();
            }
            Pending::Commit { .. } => {
                self.answer(request_id, Err(error));
            }
            _ => self.answer(request_id, Err(error)),
        }
    }

    /// Applies a commit of this client's that the server did not push back (see
    /// [`as_sent`](super::as_sent)), in its place in the stream of pushed commits.
    fn apply_as_sent(&mut self, pending: Pending, tid: Tid, now: Instant) {
        let Pending::Commit {
            writes: Some(writes),
            ..
        } = pending
        else {
            // The server answers so only a commit sent on this connection, which speaks a
            // version that allows it. Otherwise the replica would lack the commit: the
            // connection is dropped, and the session's resume brings what changed since the
            // replica's tid, this commit included.
            self.on_disconnected(
                format!(
                    "the server answered a commit (tid {}) as applied as sent, but this client did not keep its writes",
                    tid.0
                ),
                now,
            );
            return;
        };
        let commit = writes.into_commit(tid, &self.shared.registry.read());
        match &mut self.restoring {
            Some(held) => held.push(commit),
            None => self.shared.apply_commit(commit, CommitKind::Pushed),
        }
    }

    /// What the server's answer to a commit means.
    pub(super) fn commit_outcome(&mut self, outcome: CommitOutcome) -> Result<Reply> {
        match outcome {
            CommitOutcome::Committed { tid } | CommitOutcome::CommittedAsSent { tid } => {
                Ok(Reply::Committed(tid))
            }
            CommitOutcome::AlreadyApplied { tid } => {
                self.shared.advance(tid);
                Ok(Reply::Committed(tid))
            }
            CommitOutcome::Conflict { key, written_at } => {
                // Everything this connection can see up to `written_at` has arrived (the stream
                // is FIFO), so the next snapshot may start there even if that commit itself was
                // invisible here; otherwise a retry would reuse the same stale base tid.
                self.shared.advance(written_at);
                let described = self.shared.registry.read().describe(&key);
                Err(Error::Conflict {
                    key: described,
                    written_at,
                    raw: key,
                })
            }
            CommitOutcome::TooOld { base_tid, horizon } => Err(Error::TooOld { base_tid, horizon }),
            other @ (CommitOutcome::Invalid { .. }
            | CommitOutcome::StorageUnavailable { .. }
            | CommitOutcome::OutcomeUnknown { .. }) => Err(crate::refusal::commit_error(other)),
        }
    }

    pub(super) fn commit_statuses(&mut self, request_id: RequestId, statuses: Vec<CommitStatus>) {
        let Some(Pending::Query { commits }) = self.requests.remove(&request_id) else {
            return;
        };
        if statuses.len() != commits.len() {
            tracing::error!(
                asked = commits.len(),
                answered = statuses.len(),
                "the server answered a commit query with the wrong number of statuses"
            );
        }
        for (i, rid) in commits.into_iter().enumerate() {
            if self.requests.remove(&rid).is_none() {
                continue;
            }
            let result = match statuses.get(i) {
                Some(CommitStatus::Applied { tid }) => {
                    // Every commit this connection sees up to the query has arrived.
                    self.shared.advance(*tid);
                    Ok(Reply::Committed(*tid))
                }
                Some(CommitStatus::NotApplied) => Err(Error::CommitNotApplied {
                    reason: "the connection broke before the server received it".into(),
                }),
                Some(CommitStatus::Unknown) | None => Err(Error::CommitOutcomeUnknown {
                    reason: "the server no longer remembers commits that old".into(),
                }),
            };
            self.answer(rid, result);
        }
    }
}
