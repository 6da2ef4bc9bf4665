//! Log replication (§5.3): the leader's send path with flow control and pipelining, the
//! follower's consistency check with truncation of conflicting suffixes, fast backtracking,
//! and durable acknowledgements.

use super::progress::{Progress, ReplicationState};
use super::{Raft, Role};
use crate::event::{Action, ClientError, Proposal};
use crate::message::{AppendResult, MessageBody};
use crate::types::{Entry, EntryPayload, Index, LogId, NodeId};

impl Raft {
    /// Client commands: appended and replicated by the leader only.
    pub(crate) fn propose(&mut self, proposals: Vec<Proposal>) {
        let refusal = if !self.is_leader() {
            Some(self.not_leader())
        } else if self
            .leader_state
            .as_ref()
            .is_some_and(|l| l.transfer.is_some())
        {
            Some(ClientError::TransferInProgress)
        } else {
            None
        };
        if let Some(err) = refusal {
            for p in proposals {
                self.respond(p.id, Err(err.clone()));
            }
            return;
        }
        let items = proposals
            .into_iter()
            .map(|p| {
                (
                    EntryPayload::Command {
                        session: p.session,
                        data: p.data,
                    },
                    Some(p.id),
                )
            })
            .collect();
        self.append_as_leader(items);
    }

    /// Every node the leader replicates to (empty unless leader).
    fn peers(&self) -> Vec<NodeId> {
        self.leader_state
            .as_ref()
            .map_or_else(Vec::new, |ls| ls.progress.keys().copied().collect())
    }

    /// Sends whatever each follower can take now.
    pub(crate) fn broadcast_append(&mut self) {
        for to in self.peers() {
            self.send_append(to);
        }
    }

    /// Sends AppendEntries to `to` while flow control allows (pipelining in the replicate
    /// state, one probe at a time otherwise), or a snapshot when the entries are purged.
    pub(crate) fn send_append(&mut self, to: NodeId) {
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        loop {
            let last = self.log.last_index();
            let Some(pr) = self.progress(to) else { return };
            if pr.is_blocked(max_msgs, max_bytes) {
                return;
            }
            let next = pr.next;
            if next > last && pr.state == ReplicationState::Replicate {
                return;
            }
            let probe = pr.state == ReplicationState::Probe;
            let prev_index = next - 1;
            let Some(prev_term) = self.log.term(prev_index) else {
                self.send_snapshot(to);
                return;
            };
            let mut entries = self.log.slice(next, last, self.cfg.max_bytes_per_msg);
            entries.truncate(self.cfg.max_entries_per_msg);
            let bytes: usize = entries.iter().map(Entry::size_hint).sum();
            let last_sent = entries.last().map_or(prev_index, |e| e.log_id.index);
            let empty = entries.is_empty();
            self.send(
                to,
                MessageBody::AppendEntries {
                    prev_log_id: LogId::new(prev_term, prev_index),
                    entries,
                    leader_commit: self.commit,
                },
            );
            let commit = self.commit;
            if let Some(pr) = self.progress_mut(to) {
                pr.sent(last_sent, bytes);
                pr.commit_sent = pr.commit_sent.max(commit);
            }
            if probe || empty {
                return;
            }
        }
    }

    /// Tells every caught-up, idle follower the new commit index (followers with appends
    /// in flight get it with the next one), then sends whatever else is due.
    pub(crate) fn broadcast_commit(&mut self) {
        for to in self.peers() {
            self.maybe_send_commit(to);
        }
        self.broadcast_append();
    }

    /// An empty AppendEntries with the commit index, if `to` is idle and behind on it.
    fn maybe_send_commit(&mut self, to: NodeId) {
        let (last, commit) = (self.log.last_log_id(), self.commit);
        let Some(pr) = self.progress_mut(to) else {
            return;
        };
        let idle = pr.state == ReplicationState::Replicate
            && pr.inflight.is_empty()
            && pr.next == last.index + 1;
        if idle && pr.commit_sent < commit {
            pr.commit_sent = commit;
            self.send(
                to,
                MessageBody::AppendEntries {
                    prev_log_id: last,
                    entries: Vec::new(),
                    leader_commit: commit,
                },
            );
        }
    }

    pub(crate) fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.leader_state.as_ref()?.progress.get(&id)
    }

    pub(crate) fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.leader_state.as_mut()?.progress.get_mut(&id)
    }

    /// Follower side of AppendEntries (§5.3, Figure 2 receiver rules 2–5).
    pub(crate) fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev: LogId,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if self.installing.is_some() {
            return; // the leader retries once the snapshot is in
        }
        let last_in_msg = prev.index + entries.len() as u64;
        // Entries at or below our commit index are identical on every node (Leader
        // Completeness), so only the part above it needs checking.
        let (prev, entries) = if prev.index < self.commit {
            let skip = ((self.commit - prev.index) as usize).min(entries.len());
            let new_prev = if skip == 0 {
                prev
            } else {
                entries[skip - 1].log_id
            };
            (LogId::new(new_prev.term, prev.index + skip as u64), {
                let mut entries = entries;
                entries.drain(..skip);
                entries
            })
        } else {
            (prev, entries)
        };
        if prev.index > self.commit && !self.log.matches(prev) {
            let hint = self
                .log
                .find_conflict_by_term(prev.index.min(self.log.last_index()), prev.term);
            tracing::debug!(node = self.id, from, %prev, %hint, "append rejected");
            self.send(
                from,
                MessageBody::AppendResponse(AppendResult::Conflict {
                    rejected: prev.index,
                    hint,
                }),
            );
            return;
        }
        let conflict = entries
            .iter()
            .position(|e| self.log.term(e.log_id.index) != Some(e.log_id.term));
        if let Some(pos) = conflict {
            let at = entries[pos].log_id.index;
            if at <= self.commit {
                tracing::error!(
                    node = self.id,
                    from,
                    at,
                    commit = self.commit,
                    "leader tried to overwrite a committed entry; ignoring"
                );
                return;
            }
            if at <= self.log.last_index() {
                self.truncate_log(at);
            }
            let mut entries = entries;
            let rest: Vec<Entry> = entries.split_off(pos);
            for e in &rest {
                if let EntryPayload::Membership(c) = &e.payload {
                    self.membership.push(e.log_id.index, c.clone());
                }
            }
            self.log.append(rest.iter().cloned());
            let write = self.next_log_write();
            self.actions.push(Action::AppendLog {
                entries: rest,
                write,
            });
        }
        self.verified_match = self.verified_match.max(last_in_msg);
        self.commit_to(leader_commit.min(last_in_msg));
        let durable = self.durable_ack();
        self.acked_durable = self.acked_durable.max(durable);
        self.send(
            from,
            MessageBody::AppendResponse(AppendResult::Success {
                last_accepted: last_in_msg,
                durable,
            }),
        );
    }

    /// Highest index we may tell the leader is durable and matching.
    fn durable_ack(&self) -> Index {
        #[cfg(any(test, feature = "testing"))]
        if self.cfg.bugs.ack_before_durable {
            return self.verified_match;
        }
        self.verified_match.min(self.durable)
    }

    /// Removes a conflicting suffix (only uncommitted entries can conflict).
    pub(crate) fn truncate_log(&mut self, from: Index) {
        self.log.truncate(from);
        self.membership.truncate(from);
        self.durable = self.durable.min(from - 1);
        let write = self.next_log_write();
        self.last_truncation_write = write;
        self.actions.push(Action::TruncateLog { from, write });
        let dropped: Vec<Index> = self.proposals.range(from..).map(|(i, _)| *i).collect();
        for i in dropped {
            if let Some((_, id)) = self.proposals.remove(&i) {
                self.respond(id, Err(ClientError::ProposalDropped));
            }
        }
    }

    /// The runtime synced the log up to `id`: a follower acknowledges, a leader may commit.
    pub(crate) fn on_log_durable(&mut self, id: LogId, write: u64) {
        // A sync that started before the latest truncation says nothing about entries
        // re-appended since, even with the same ids.
        if write < self.last_truncation_write || !self.log.matches(id) || id.index <= self.durable {
            return;
        }
        self.durable = id.index;
        match self.role {
            Role::Leader => {
                self.maybe_commit();
                self.maybe_send_timeout_now();
            }
            _ => {
                let ack = self.durable_ack();
                if let Some(leader) = self.leader {
                    if ack > self.acked_durable {
                        self.acked_durable = ack;
                        let last_accepted = self.verified_match;
                        self.send(
                            leader,
                            MessageBody::AppendResponse(AppendResult::Success {
                                last_accepted,
                                durable: ack,
                            }),
                        );
                    }
                }
            }
        }
        self.maybe_apply();
    }

    /// Leader side of AppendEntries responses.
    pub(crate) fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        if !self.is_leader() {
            return;
        }
        let last = self.log.last_index();
        match result {
            AppendResult::Success {
                last_accepted,
                durable,
            } => {
                let (last_accepted, durable) = (last_accepted.min(last), durable.min(last));
                let now = self.now;
                let Some(pr) = self.progress_mut(from) else {
                    return;
                };
                pr.heard_from(now);
                pr.free_upto(last_accepted);
                match pr.state {
                    ReplicationState::Probe => {
                        pr.next = pr.next.max(last_accepted + 1);
                        pr.become_replicate();
                    }
                    ReplicationState::Replicate => pr.next = pr.next.max(last_accepted + 1),
                    ReplicationState::Snapshot(idx) if last_accepted >= idx => {
                        pr.become_probe();
                        pr.next = last_accepted + 1;
                        pr.become_replicate();
                    }
                    ReplicationState::Snapshot(_) => {}
                }
                let advanced = durable > pr.matched;
                if advanced {
                    pr.matched = durable;
                }
                if advanced {
                    self.maybe_commit();
                    self.maybe_send_timeout_now();
                }
                self.send_append(from);
                self.maybe_send_commit(from);
                return;
            }
            AppendResult::Conflict { rejected, hint } => {
                let leader_conflict = if hint.term > 0 {
                    self.log.find_conflict_by_term(hint.index, hint.term).index
                } else {
                    hint.index
                };
                let now = self.now;
                let Some(pr) = self.progress_mut(from) else {
                    return;
                };
                pr.heard_from(now);
                let stale = match pr.state {
                    ReplicationState::Probe => rejected.saturating_add(1) != pr.next,
                    ReplicationState::Replicate => rejected <= pr.matched,
                    ReplicationState::Snapshot(_) => true,
                };
                if stale {
                    return;
                }
                let next = leader_conflict
                    .saturating_add(1)
                    .min(rejected)
                    .max(pr.matched + 1);
                pr.become_probe();
                pr.next = next;
                tracing::debug!(from, rejected, next, "backtracking");
            }
        }
        self.send_append(from);
    }

    /// Heartbeat on a follower: adopt the commit index the leader vouches for (at most what
    /// it knows we have durably) and echo the read round.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, leader_commit: Index, read_seq: u64) {
        if self.installing.is_none() {
            self.commit_to(leader_commit.min(self.log.last_index()));
        }
        let durable = self.durable_ack();
        self.acked_durable = self.acked_durable.max(durable);
        self.send(from, MessageBody::HeartbeatResponse { read_seq, durable });
    }

    /// Leader: a heartbeat answer proves liveness, confirms a read round and detects stalled
    /// replication (lost messages) so it restarts with a probe.
    pub(crate) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        read_seq: u64,
        durable: Index,
    ) {
        if !self.is_leader() {
            return;
        }
        let last = self.log.last_index();
        let now = self.now;
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        pr.heard_from(now);
        pr.read_ack = pr.read_ack.max(read_seq);
        let advanced = durable.min(last) > pr.matched && pr.state == ReplicationState::Replicate;
        if advanced {
            pr.matched = durable.min(last);
        }
        if pr.matched < last {
            match pr.state {
                ReplicationState::Probe => pr.paused = false,
                ReplicationState::Replicate => {
                    // Stalled: for three heartbeats neither the oldest message in flight was
                    // answered nor the durable match moved (a message or answer was lost, or
                    // the follower lost unsynced entries in a crash). Re-probing is harmless
                    // for a follower that is merely slow to fsync.
                    let marker = (pr.inflight.front().map(|(last, _)| *last), pr.matched);
                    if Some(marker) == pr.stall_marker {
                        pr.stalled += 1;
                        if pr.stalled >= 3 {
                            pr.stalled = 0;
                            pr.become_probe();
                        }
                    } else {
                        pr.stalled = 0;
                    }
                    pr.stall_marker = Some(marker);
                }
                ReplicationState::Snapshot(_) => {}
            }
        }
        if advanced {
            self.maybe_commit();
        }
        self.check_read_rounds();
        self.send_append(from);
    }
}
