//! Commitment (§5.3, §5.4.2 and thesis §3.6.2 "Figure 8"), applying committed entries, and
//! the leader's periodic duties.

use super::{Raft, Role};
use crate::event::Action;
use crate::message::MessageBody;
use crate::types::{Index, NodeId};

impl Raft {
    /// Leader: advance the commit index to what a quorum holds durably, but only by counting
    /// replicas of an entry from the current term (§5.4.2).
    pub(crate) fn maybe_commit(&mut self) {
        let Some(ls) = &self.leader_state else { return };
        let me = self.id;
        let durable = self.durable;
        let quorum = self.membership.effective().quorum_index(|id| {
            if id == me {
                durable
            } else {
                ls.progress.get(&id).map_or(0, |p| p.matched)
            }
        });
        if quorum <= self.commit {
            return;
        }
        let current_term = self.log.term(quorum) == Some(self.term);
        #[cfg(any(test, feature = "testing"))]
        let current_term = current_term || self.cfg.bugs.commit_old_term_by_count;
        if current_term {
            self.commit_to(quorum);
        }
    }

    /// Raises the commit index (never lowers it) and applies what became committed.
    pub(crate) fn commit_to(&mut self, index: Index) {
        if index <= self.commit {
            return;
        }
        self.commit = index;
        self.maybe_apply();
        if self.is_leader() {
            self.on_leader_commit();
        }
    }

    /// Emits `Apply` for entries that are committed **and** durable here, so a state machine
    /// that persists itself is never ahead of the local log.
    pub(crate) fn maybe_apply(&mut self) {
        let upto = self.commit.min(self.durable);
        if upto <= self.applying || self.installing.is_some() {
            return;
        }
        let entries = self.log.slice(self.applying + 1, upto, usize::MAX);
        let Some(last) = entries.last().map(|e| e.log_id.index) else {
            return;
        };
        let mut waiters = Vec::new();
        while let Some((&index, &(term, id))) = self.proposals.first_key_value() {
            if index > last {
                break;
            }
            self.proposals.remove(&index);
            if self.log.term(index) == Some(term) {
                waiters.push((index, id));
            } else {
                self.respond(id, Err(crate::event::ClientError::ProposalDropped));
            }
        }
        self.applying = last;
        self.actions.push(Action::Apply { entries, waiters });
    }

    pub(crate) fn on_applied(&mut self, index: Index) {
        if index <= self.applied {
            return;
        }
        self.applied = index.min(self.applying);
        self.release_ready_reads();
    }

    /// Leader bookkeeping after the commit index moved.
    fn on_leader_commit(&mut self) {
        self.on_membership_committed();
        self.serve_reads_waiting_for_commit();
        if self.role != Role::Leader {
            return;
        }
        // Followers with appends in flight learn the new commit index from the next one; tell
        // the idle ones now so they apply without waiting for a heartbeat.
        self.broadcast_commit();
    }

    /// Leader timers: heartbeats (which are also read rounds), check-quorum (thesis §6.2),
    /// snapshot and transfer timeouts.
    pub(crate) fn tick_leader(&mut self, n: u64) {
        let election = u64::from(self.cfg.election_ticks);
        let heartbeat = u64::from(self.cfg.heartbeat_ticks);
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        ls.heartbeat_elapsed = ls.heartbeat_elapsed.saturating_add(n);
        ls.check_quorum_elapsed = ls.check_quorum_elapsed.saturating_add(n);
        let beat = ls.heartbeat_elapsed >= heartbeat;
        if beat {
            ls.heartbeat_elapsed = 0;
        }
        let check = ls.check_quorum_elapsed >= election;
        let mut retry_snapshot: Vec<NodeId> = Vec::new();
        for (id, pr) in ls.progress.iter_mut() {
            if let super::progress::ReplicationState::Snapshot(_) = pr.state {
                pr.snapshot_ticks = pr
                    .snapshot_ticks
                    .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                if u64::from(pr.snapshot_ticks) > 5 * election {
                    retry_snapshot.push(*id);
                }
            }
        }
        for id in retry_snapshot {
            self.on_snapshot_send_failed(id);
        }
        if check {
            if let Some(ls) = self.leader_state.as_mut() {
                ls.check_quorum_elapsed = 0;
            }
            if self.cfg.check_quorum && !self.quorum_active() {
                tracing::info!(
                    node = self.id,
                    term = self.term,
                    "check-quorum failed; stepping down"
                );
                let term = self.term;
                self.become_follower(term, None, None);
                return;
            }
        }
        self.tick_transfer(n);
        if beat && self.is_leader() {
            self.start_read_round();
        }
    }

    /// True if a quorum answered since the last check; resets the flags.
    fn quorum_active(&mut self) -> bool {
        let me = self.id;
        let Some(ls) = self.leader_state.as_mut() else {
            return false;
        };
        let active = self
            .membership
            .effective()
            .is_quorum(|id| id == me || ls.progress.get(&id).is_some_and(|p| p.recent_active));
        for pr in ls.progress.values_mut() {
            pr.recent_active = false;
        }
        active
    }

    /// Sends a heartbeat to every follower carrying the read round `seq`.
    pub(crate) fn broadcast_heartbeat(&mut self, seq: u64) {
        let Some(ls) = &self.leader_state else { return };
        let targets: Vec<(NodeId, Index)> =
            ls.progress.iter().map(|(id, p)| (*id, p.matched)).collect();
        for (to, matched) in targets {
            let leader_commit = self.commit.min(matched);
            self.send(
                to,
                MessageBody::Heartbeat {
                    leader_commit,
                    read_seq: seq,
                },
            );
        }
    }
}
