//! Leader election (§5.2), the up-to-date check (§5.4.1), pre-vote (thesis §9.6).

use std::collections::BTreeMap;

use super::read::ReadState;
use super::{LeaderState, Raft, Role};
use crate::message::MessageBody;
use crate::types::{EntryPayload, LogId, NodeId, Term};

impl Raft {
    /// Followers and candidates: start an election when the randomized timeout expires.
    pub(crate) fn tick_election(&mut self, n: u64) {
        self.election_elapsed = self.election_elapsed.saturating_add(n);
        if self.election_elapsed >= u64::from(self.cfg.election_ticks) {
            self.sticky_after_start = false;
        }
        if self.election_elapsed >= self.randomized_timeout {
            self.reset_election_timer();
            if self.is_promotable() {
                self.start_election(false);
            }
        }
    }

    /// Voters campaign; learners never do (thesis §4.2.1). A node that is a voter in the
    /// committed configuration or in any later, uncommitted one may campaign even if the
    /// newest configuration removes it: votes are counted in the configuration in force,
    /// which a leader need not belong to (thesis §4.2.2). Without this, a removed node holding
    /// the longest log could block every election.
    pub(crate) fn is_promotable(&self) -> bool {
        self.membership.may_vote(self.commit, self.id) && self.installing.is_none()
    }

    pub(crate) fn start_election(&mut self, transfer: bool) {
        self.sticky_after_start = false;
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn voters_except_self(&self) -> Vec<NodeId> {
        let c = self.membership.effective();
        c.voters
            .iter()
            .chain(c.outgoing.iter())
            .copied()
            .filter(|id| *id != self.id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.id, true)]);
        self.reset_election_timer();
        let last_log_id = self.log.last_log_id();
        let term = self.term + 1;
        tracing::debug!(node = self.id, term, "starting pre-vote");
        for to in self.voters_except_self() {
            self.send_with_term(
                to,
                term,
                MessageBody::VoteRequest {
                    pre_vote: true,
                    last_log_id,
                    transfer: false,
                },
            );
        }
        self.tally();
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.save_hard_state();
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.id, true)]);
        self.reset_election_timer();
        let last_log_id = self.log.last_log_id();
        tracing::debug!(node = self.id, term = self.term, "starting election");
        for to in self.voters_except_self() {
            self.send(
                to,
                MessageBody::VoteRequest {
                    pre_vote: false,
                    last_log_id,
                    transfer,
                },
            );
        }
        self.tally();
    }

    /// §5.2 / §5.4.1: grant at most one vote per term, and only to a candidate whose log is
    /// at least as up-to-date as ours. Pre-votes change nothing locally.
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last: LogId,
    ) {
        let up_to_date =
            (last.term, last.index) >= (self.log.last_log_id().term, self.log.last_index());
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let granted = up_to_date && can_vote;
        if granted && !pre_vote {
            self.vote = Some(from);
            self.save_hard_state();
            self.reset_election_timer();
        }
        let reply_term = if pre_vote && granted { term } else { self.term };
        tracing::debug!(
            node = self.id,
            from,
            term,
            pre_vote,
            granted,
            "vote request"
        );
        self.send_with_term(
            from,
            reply_term,
            MessageBody::VoteResponse { pre_vote, granted },
        );
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        match (self.role, pre_vote) {
            (Role::PreCandidate, true) if !granted || term == self.term + 1 => {}
            (Role::Candidate, false) => {}
            _ => return,
        }
        self.votes.insert(from, granted);
        self.tally();
    }

    fn tally(&mut self) {
        let c = self.membership.effective();
        let won = c.is_quorum(|id| self.votes.get(&id) == Some(&true));
        let lost = c.is_quorum_impossible(|id| self.votes.get(&id) == Some(&false));
        if won {
            match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate => self.maybe_win_election(),
                _ => {}
            }
        } else if lost {
            let term = self.term;
            self.become_follower(term, None, None);
        }
    }

    /// A candidate becomes leader once a quorum granted **and** its own vote is durable.
    pub(crate) fn maybe_win_election(&mut self) {
        let won = self
            .membership
            .effective()
            .is_quorum(|id| self.votes.get(&id) == Some(&true));
        if self.role == Role::Candidate && won && self.hs_durable {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        tracing::info!(node = self.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.leader_state = Some(LeaderState {
            progress: BTreeMap::new(),
            reads: ReadState::default(),
            transfer: None,
            membership_waiter: None,
            check_quorum_elapsed: 0,
            heartbeat_elapsed: 0,
            lease_until: 0,
            lease_revoked: false,
        });
        self.sync_progress_with_membership();
        // A new leader commits entries of earlier terms only by committing one of its own
        // (§5.4.2); the blank entry also lets it serve reads (thesis §6.4).
        self.append_as_leader(vec![(EntryPayload::Blank, None)]);
    }

    /// TimeoutNow from the current leader: campaign at once, skipping pre-vote (thesis §3.10).
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader == Some(from) && self.is_promotable() && self.role != Role::Leader {
            tracing::info!(node = self.id, from, "leader transfer: campaigning now");
            self.start_election(true);
        }
    }
}
