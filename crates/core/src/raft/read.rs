//! Linearizable reads without log writes: ReadIndex with batched confirmation rounds
//! (thesis §6.4) and leader leases (thesis §6.4.1).

use std::collections::VecDeque;

use super::Raft;
use crate::event::{Action, ReadConsistency};
use crate::types::{Index, RequestId};

/// One confirmation round: every read in it is served at `index` once a quorum has
/// answered a heartbeat carrying `seq`.
#[derive(Debug)]
pub(crate) struct Round {
    seq: u64,
    index: Index,
    ids: Vec<RequestId>,
    sent_at: u64,
}

/// The leader's pending reads.
#[derive(Debug, Default)]
pub(crate) struct ReadState {
    /// Last round number handed out.
    seq: u64,
    /// Rounds sent and not yet confirmed, oldest first.
    rounds: VecDeque<Round>,
    /// Reads waiting for the next round.
    queued: Vec<RequestId>,
    /// Reads that arrived before the leader committed an entry of its term.
    before_commit: Vec<(RequestId, ReadConsistency)>,
}

impl ReadState {
    /// Every read not yet confirmed (they fail when leadership is lost).
    pub(crate) fn drain_unconfirmed(&mut self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self.rounds.drain(..).flat_map(|r| r.ids).collect();
        ids.append(&mut self.queued);
        ids.extend(self.before_commit.drain(..).map(|(id, _)| id));
        ids
    }
}

impl Raft {
    /// A read request. Followers refuse (the client goes to the leader); the leader serves
    /// it at its commit index once leadership is confirmed.
    pub(crate) fn read(&mut self, id: RequestId, consistency: ReadConsistency) {
        if !self.is_leader() {
            let err = self.not_leader();
            return self.respond(id, Err(err));
        }
        if !self.committed_in_current_term() {
            if let Some(ls) = self.leader_state.as_mut() {
                ls.reads.before_commit.push((id, consistency));
            }
            return;
        }
        if consistency == ReadConsistency::Lease && self.lease_valid() {
            let index = self.commit;
            return self.read_ready(index, vec![id]);
        }
        #[cfg(any(test, feature = "testing"))]
        if self.cfg.bugs.read_index_without_heartbeat {
            let index = self.commit;
            return self.read_ready(index, vec![id]);
        }
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        ls.reads.queued.push(id);
        if ls.reads.rounds.is_empty() {
            self.start_read_round();
        }
    }

    /// True while the leader's lease holds: a quorum confirmed a heartbeat sent less than
    /// `election_ticks - lease_drift_ticks` ago, and no transfer is under way.
    pub(crate) fn lease_valid(&self) -> bool {
        self.cfg.lease_reads
            && self.leader_state.as_ref().is_some_and(|ls| {
                ls.transfer.is_none() && !ls.lease_revoked && self.now < ls.lease_until
            })
    }

    /// While a lease read would be served at once (leader, an entry of this term committed,
    /// lease valid, thesis §6.4.1): how many more ticks the lease holds, and the commit index
    /// the state machine must have applied. Lets the runtime serve lease reads without
    /// stepping the protocol.
    pub fn lease_read(&self) -> Option<(u64, Index)> {
        if !self.is_leader() || !self.committed_in_current_term() || !self.lease_valid() {
            return None;
        }
        let ls = self.leader_state.as_ref()?;
        Some((ls.lease_until.saturating_sub(self.now), self.commit))
    }

    /// Starts a round with every queued read, confirmed by a heartbeat to all followers.
    pub(crate) fn start_read_round(&mut self) {
        let (commit, now) = (self.commit, self.now);
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        ls.reads.seq += 1;
        let seq = ls.reads.seq;
        let ids = std::mem::take(&mut ls.reads.queued);
        ls.reads.rounds.push_back(Round {
            seq,
            index: commit,
            ids,
            sent_at: now,
        });
        self.broadcast_heartbeat(seq);
        self.check_read_rounds();
    }

    /// Serves every round a quorum has confirmed; extends the lease.
    pub(crate) fn check_read_rounds(&mut self) {
        let me = self.id;
        let lease_ticks = self.cfg.lease_ticks();
        let mut ready = Vec::new();
        {
            let Some(ls) = self.leader_state.as_mut() else {
                return;
            };
            let config = self.membership.effective();
            while let Some(round) = ls.reads.rounds.front() {
                let seq = round.seq;
                let confirmed = config.is_quorum(|id| {
                    id == me || ls.progress.get(&id).is_some_and(|p| p.read_ack >= seq)
                });
                if !confirmed {
                    break;
                }
                let Some(round) = ls.reads.rounds.pop_front() else {
                    break;
                };
                ls.lease_until = ls.lease_until.max(round.sent_at + lease_ticks);
                if !round.ids.is_empty() {
                    ready.push((round.index, round.ids));
                }
            }
        }
        for (index, ids) in ready {
            self.read_ready(index, ids);
        }
        let start_next = self
            .leader_state
            .as_ref()
            .is_some_and(|ls| ls.reads.rounds.is_empty() && !ls.reads.queued.is_empty());
        if start_next {
            self.start_read_round();
        }
    }

    /// Reads that waited for the leader's first commit in its term.
    pub(crate) fn serve_reads_waiting_for_commit(&mut self) {
        if !self.committed_in_current_term() {
            return;
        }
        let waiting = match self.leader_state.as_mut() {
            Some(ls) if !ls.reads.before_commit.is_empty() => {
                std::mem::take(&mut ls.reads.before_commit)
            }
            _ => return,
        };
        for (id, consistency) in waiting {
            self.read(id, consistency);
        }
    }

    fn read_ready(&mut self, index: Index, ids: Vec<RequestId>) {
        if self.applied >= index {
            self.actions.push(Action::ReadReady { ids, index });
        } else {
            self.ready_reads.push((index, ids));
        }
    }

    /// Emits reads whose index the state machine has reached.
    pub(crate) fn release_ready_reads(&mut self) {
        let applied = self.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.ready_reads = later;
        for (index, ids) in now {
            self.actions.push(Action::ReadReady { ids, index });
        }
    }
}
