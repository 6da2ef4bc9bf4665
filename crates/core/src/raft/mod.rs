//! The Raft protocol as a deterministic, synchronous state machine: [`Event`]s in,
//! [`Action`]s out. No I/O, no clock, no threads; the only randomness is a seeded [`Rng`].
//!
//! The code is split by concern: election.rs, replication.rs,
//! commit.rs, membership.rs, snapshot.rs, read.rs and transfer.rs. This file holds the
//! node's state, the term rules shared by every message (§5.1) and the dispatcher.

mod commit;
mod election;
pub(crate) mod log;
mod membership;
pub mod progress;
mod read;
mod replication;
mod snapshot;
mod transfer;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::config::{ConfigError, RaftConfig};
use crate::event::{Action, ClientError, Event, Reply};
use crate::membership::MembershipConfig;
use crate::message::{Message, MessageBody};
use crate::rng::Rng;
use crate::types::{
    Entry, EntryPayload, HardState, Index, LogId, NodeId, RequestId, SnapshotMeta, Term,
};

use self::log::RaftLog;
use self::membership::MembershipLog;
use self::progress::Progress;
use self::read::ReadState;
use self::transfer::Transfer;

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are always followers.
    Follower,
    /// Runs a pre-vote round (thesis §9.6) before becoming a candidate.
    PreCandidate,
    /// Campaigns for leadership (§5.2).
    Candidate,
    /// Leads the cluster.
    Leader,
}

/// What a node recovered from stable storage at start-up.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// Durable term, vote and (optionally) commit index.
    pub hard_state: HardState,
    /// The latest durable snapshot (the default, at log id (0, 0) with an empty
    /// configuration, if there is none). A node joining an existing cluster starts with an
    /// empty configuration and learns it from the leader; see [`InitialState::bootstrap`]
    /// for the founding members.
    pub snapshot: SnapshotMeta,
    /// The entry just before `entries` (the purge point, at most the snapshot's last id).
    pub log_offset: LogId,
    /// Durable log entries after `log_offset`, in order.
    pub entries: Vec<Entry>,
    /// Last index the state machine already holds (for state machines that persist themselves).
    pub applied: Index,
}

impl InitialState {
    /// The state of a founding member of a new cluster: the initial configuration is the
    /// first log entry (index 1, term 0), identical on every founding member, so nodes that
    /// join later receive it like any other configuration entry. Persist it (as a durable
    /// log entry) before starting the node, and bootstrap a cluster exactly once.
    pub fn bootstrap(membership: MembershipConfig) -> Self {
        Self {
            entries: vec![Self::bootstrap_entry(membership)],
            ..Self::default()
        }
    }

    /// The first log entry of a new cluster.
    pub fn bootstrap_entry(membership: MembershipConfig) -> Entry {
        Entry {
            log_id: LogId::new(0, 1),
            payload: EntryPayload::Membership(membership),
        }
    }
}

/// The recovered state does not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The protocol configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log entries are not contiguous after the offset.
    #[error(
        "log entry {found} does not follow {expected_after}: the log has a gap or is out of order"
    )]
    LogGap {
        /// The entry that should have followed.
        expected_after: LogId,
        /// The entry found instead.
        found: LogId,
    },
    /// The log offset is ahead of the snapshot (entries were purged that no snapshot covers).
    #[error("log purged up to {offset} but the snapshot only covers {snapshot}")]
    PurgedBeyondSnapshot {
        /// Purge point.
        offset: LogId,
        /// Snapshot's last entry.
        snapshot: LogId,
    },
}

/// A snapshot of a node's protocol state, for status reporting and for checkers.
#[derive(Clone, Debug)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: Index,
    /// Applied index reported by the state machine.
    pub applied: Index,
    /// Last entry in the log.
    pub last_log_id: LogId,
    /// Last entry known durable.
    pub durable: Index,
    /// Latest snapshot.
    pub snapshot: LogId,
    /// Log purged up to here.
    pub purged: LogId,
    /// Configuration in force (the latest in the log).
    pub membership: MembershipConfig,
    /// Per-peer replication progress (leaders only).
    pub progress: BTreeMap<NodeId, Progress>,
    /// The protocol's clock, in ticks (for [`Progress::ticks_since_contact`]).
    pub now: u64,
}

/// State kept only while leader.
#[derive(Debug)]
pub(crate) struct LeaderState {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) reads: ReadState,
    pub(crate) transfer: Option<Transfer>,
    /// A membership request waiting for its final configuration to commit: (index or 0 while
    /// still joint, request).
    pub(crate) membership_waiter: Option<(Index, RequestId)>,
    pub(crate) check_quorum_elapsed: u64,
    pub(crate) heartbeat_elapsed: u64,
    /// Lease reads are served while `now < lease_until`.
    pub(crate) lease_until: u64,
    /// Set when a transfer that sent TimeoutNow was abandoned: the target may still campaign
    /// (ignoring leader stickiness) whenever that message arrives, so no lease is safe for
    /// the rest of this term; reads fall back to ReadIndex.
    pub(crate) lease_revoked: bool,
}

/// One Raft node's protocol state. Feed it [`Event`]s with [`Raft::step`], execute the
/// [`Action`]s from [`Raft::take_actions`] in order.
#[derive(Debug)]
pub struct Raft {
    pub(crate) cfg: RaftConfig,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) commit: Index,
    /// `Apply` actions were emitted up to here.
    pub(crate) applying: Index,
    pub(crate) applied: Index,
    /// Entries up to here are durable locally.
    pub(crate) durable: Index,
    /// True when the current term and vote are known durable.
    pub(crate) hs_durable: bool,
    /// Messages held until the hard state is durable.
    pub(crate) gated: Vec<Message>,
    pub(crate) membership: MembershipLog,
    pub(crate) snapshot: SnapshotMeta,
    pub(crate) installing: Option<SnapshotMeta>,
    pub(crate) rng: Rng,
    /// Logical clock: ticks since start.
    pub(crate) now: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) randomized_timeout: u64,
    /// Right after start the node behaves as if it just heard from a leader, so a restart
    /// cannot be used to cut a leader's lease short.
    pub(crate) sticky_after_start: bool,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) leader_state: Option<LeaderState>,
    /// Follower: highest index known identical to the current leader's log.
    pub(crate) verified_match: Index,
    /// Follower: highest durable index acknowledged to the current leader.
    pub(crate) acked_durable: Index,
    /// Log writes (appends and truncations) issued so far in this process.
    pub(crate) log_writes: u64,
    /// Write number of the latest truncation: durability reports from before it are void.
    pub(crate) last_truncation_write: u64,
    /// Local clients waiting for entries: index -> (term, request).
    pub(crate) proposals: BTreeMap<Index, (Term, RequestId)>,
    /// Reads confirmed at an index, waiting for the state machine to reach it.
    pub(crate) ready_reads: Vec<(Index, Vec<RequestId>)>,
    pub(crate) actions: Vec<Action>,
}

impl Raft {
    /// Builds a node from its configuration, recovered state and RNG seed.
    pub fn new(cfg: RaftConfig, init: InitialState, seed: u64) -> Result<Self, InitError> {
        cfg.validate()?;
        let mut prev = init.log_offset;
        for e in &init.entries {
            if e.log_id.index != prev.index + 1 || e.log_id.term < prev.term {
                return Err(InitError::LogGap {
                    expected_after: prev,
                    found: e.log_id,
                });
            }
            prev = e.log_id;
        }
        if init.log_offset.index > init.snapshot.last_log_id.index {
            return Err(InitError::PurgedBeyondSnapshot {
                offset: init.log_offset,
                snapshot: init.snapshot.last_log_id,
            });
        }
        let log = RaftLog::new(init.log_offset, init.entries);
        let membership = MembershipLog::restore(&init.snapshot, log.iter());
        let snap_index = init.snapshot.last_log_id.index;
        let last = log.last_index();
        let applied = init.applied.max(snap_index).min(last.max(snap_index));
        let commit = init.hard_state.commit.min(last).max(applied);
        let mut raft = Self {
            id: cfg.id,
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            commit,
            applying: applied,
            applied,
            durable: last.max(snap_index),
            hs_durable: true,
            gated: Vec::new(),
            membership,
            snapshot: init.snapshot,
            installing: None,
            rng: Rng::new(seed ^ cfg.id.wrapping_mul(0x9E37_79B9)),
            now: 0,
            election_elapsed: 0,
            randomized_timeout: 0,
            sticky_after_start: true,
            votes: BTreeMap::new(),
            leader_state: None,
            verified_match: 0,
            acked_durable: 0,
            log_writes: 0,
            last_truncation_write: 0,
            proposals: BTreeMap::new(),
            ready_reads: Vec::new(),
            actions: Vec::new(),
            cfg,
        };
        raft.reset_election_timer();
        raft.maybe_apply();
        Ok(raft)
    }

    /// Feeds one event. The resulting actions accumulate until [`Raft::take_actions`].
    pub fn step(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick(1),
            Event::Ticks(n) => self.tick(n),
            Event::Message(m) => self.step_message(m),
            Event::Propose(ps) => self.propose(ps),
            Event::Read { id, consistency } => self.read(id, consistency),
            Event::ChangeMembership { id, change } => self.change_membership(id, change),
            Event::TransferLeader { id, to } => self.transfer_leader(id, to),
            Event::HardStateSaved(hs) => self.on_hard_state_saved(hs),
            Event::LogDurable { last, write } => self.on_log_durable(last, write),
            Event::Applied(index) => self.on_applied(index),
            Event::SnapshotBuilt(meta) => self.on_snapshot_built(meta),
            Event::SnapshotInstalled(meta) => self.on_snapshot_installed(meta),
            Event::SnapshotSendFailed(to) => self.on_snapshot_send_failed(to),
            Event::SnapshotInstallFailed(meta) => self.on_snapshot_install_failed(meta),
        }
    }

    /// Takes the actions produced so far; execute them in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// True if actions are waiting to be taken.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Current protocol status.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            last_log_id: self.log.last_log_id(),
            durable: self.durable,
            snapshot: self.snapshot.last_log_id,
            purged: self.log.offset(),
            membership: self.membership.effective().clone(),
            progress: self
                .leader_state
                .as_ref()
                .map(|l| l.progress.clone())
                .unwrap_or_default(),
            now: self.now,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Known leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Commit index.
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    /// Applied index.
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// Last log entry.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }
    /// Entry just before the first one kept in memory.
    pub fn log_offset(&self) -> LogId {
        self.log.offset()
    }
    /// The entry at `index`, if kept.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.get(index)
    }
    /// Configuration in force.
    pub fn membership(&self) -> &MembershipConfig {
        self.membership.effective()
    }
    /// Latest snapshot.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }
    /// Configuration as of `index` (for building a snapshot at that index).
    pub fn membership_at(&self, index: Index) -> MembershipConfig {
        self.membership.at(index).clone()
    }

    /// The hard state to persist. Its commit index never exceeds the locally durable log:
    /// the hard state and the log are synced separately, and a crash that kept the hard state
    /// but lost log writes must not make stale entries look committed after restart.
    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit.min(self.durable),
        }
    }

    /// Persists term and vote; replies wait until they are durable.
    pub(crate) fn save_hard_state(&mut self) {
        self.hs_durable = false;
        self.actions.push(Action::SaveHardState(self.hard_state()));
    }

    fn on_hard_state_saved(&mut self, hs: HardState) {
        if hs.term != self.term || hs.vote != self.vote {
            return;
        }
        self.hs_durable = true;
        for m in std::mem::take(&mut self.gated) {
            self.actions.push(Action::Send(m));
        }
        if self.role == Role::Candidate {
            self.maybe_win_election();
        }
    }

    /// Sends a message in the current term.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    /// Sends a message; held back while the current term/vote is not yet durable, because
    /// every reply may depend on it (persistence ordering, Figure 2).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        #[cfg(any(test, feature = "testing"))]
        if self.cfg.bugs.vote_before_durable && matches!(m.body, MessageBody::VoteResponse { .. }) {
            self.actions.push(Action::Send(m));
            return;
        }
        if self.hs_durable {
            self.actions.push(Action::Send(m));
        } else {
            self.gated.push(m);
        }
    }

    /// Numbers the next log write.
    pub(crate) fn next_log_write(&mut self) -> u64 {
        self.log_writes += 1;
        self.log_writes
    }

    pub(crate) fn respond(&mut self, id: RequestId, outcome: Result<Reply, ClientError>) {
        self.actions.push(Action::Respond { id, outcome });
    }

    pub(crate) fn not_leader(&self) -> ClientError {
        ClientError::NotLeader {
            leader: self.leader.filter(|l| *l != self.id),
        }
    }

    /// `n` ticks passed (one, or a whole gap after a stall).
    fn tick(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.now += n;
        if self.role == Role::Leader {
            self.tick_leader(n);
        } else {
            self.tick_election(n);
        }
    }

    /// Applies the term rules of §5.1 to every message, then dispatches it by kind.
    fn step_message(&mut self, m: Message) {
        if let Err(why) = self.validate_message(&m) {
            tracing::warn!(node = self.id, from = m.from, kind = m.body.kind(), %why, "dropping malformed message");
            return;
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::VoteRequest {
                    pre_vote, transfer, ..
                } => {
                    if !transfer && self.in_lease() {
                        tracing::debug!(
                            node = self.id,
                            from = m.from,
                            "ignoring vote request: heard from a leader recently"
                        );
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None, Some(m.from));
                    }
                }
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                // A follower still sticky to a leader ignores higher-term *responses* (a late
                // pre-vote rejection, an answer to an old heartbeat): adopting the term would end its
                // stickiness and let a candidate win while the leader's lease still runs.
                MessageBody::VoteResponse { .. }
                | MessageBody::AppendResponse(_)
                | MessageBody::HeartbeatResponse { .. }
                    if self.role != Role::Leader && self.in_lease() =>
                {
                    return;
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => {
                    self.become_follower(m.term, Some(m.from), Some(m.from))
                }
                _ => self.become_follower(m.term, None, Some(m.from)),
            }
        } else if m.term < self.term {
            self.reply_to_stale(&m);
            return;
        }
        match m.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_id,
                ..
            } => self.handle_vote_request(m.from, m.term, pre_vote, last_log_id),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(m.from, m.term, pre_vote, granted)
            }
            MessageBody::AppendEntries {
                prev_log_id,
                entries,
                leader_commit,
            } => {
                if self.accept_leader(m.from) {
                    self.handle_append_entries(m.from, prev_log_id, entries, leader_commit);
                }
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_seq,
            } => {
                if self.accept_leader(m.from) {
                    self.handle_heartbeat(m.from, leader_commit, read_seq);
                }
            }
            MessageBody::InstallSnapshot { meta } => {
                if self.accept_leader(m.from) {
                    self.handle_install_snapshot(m.from, meta);
                }
            }
            MessageBody::AppendResponse(result) => self.handle_append_response(m.from, result),
            MessageBody::HeartbeatResponse { read_seq, durable } => {
                self.handle_heartbeat_response(m.from, read_seq, durable)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(m.from),
        }
    }

    /// A message from an older term: tell a stale leader or pre-candidate about our term so
    /// it steps down (needed with check-quorum / pre-vote, thesis §9.6).
    fn reply_to_stale(&mut self, m: &Message) {
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.send(
                    m.from,
                    MessageBody::HeartbeatResponse {
                        read_seq: 0,
                        durable: 0,
                    },
                );
            }
            MessageBody::VoteRequest { pre_vote: true, .. } => {
                self.send(
                    m.from,
                    MessageBody::VoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// A message from the leader of the current term: follow it.
    fn accept_leader(&mut self, from: NodeId) -> bool {
        if self.role == Role::Leader {
            tracing::error!(
                node = self.id,
                from,
                term = self.term,
                "two leaders in one term; ignoring"
            );
            return false;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from), None);
        }
        self.election_elapsed = 0;
        true
    }

    /// Becomes a follower of `term` (saving the new term if it grew). `cause` is the node
    /// whose message caused it, used to report a completed leader transfer.
    pub(crate) fn become_follower(
        &mut self,
        term: Term,
        leader: Option<NodeId>,
        cause: Option<NodeId>,
    ) {
        let term_changed = term != self.term;
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.save_hard_state();
        }
        let leader_changed = self.leader != leader;
        if self.role == Role::Leader {
            self.step_down(cause);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        // What a follower verified against a leader only holds for that leader in that term.
        if leader_changed || term_changed {
            self.verified_match = 0;
            self.acked_durable = 0;
        }
        self.reset_election_timer();
    }

    /// Leaves the leader role: answers what only a leader could answer.
    fn step_down(&mut self, cause: Option<NodeId>) {
        let Some(mut ls) = self.leader_state.take() else {
            return;
        };
        let not_leader = ClientError::NotLeader { leader: None };
        for id in ls.reads.drain_unconfirmed() {
            self.respond(id, Err(not_leader.clone()));
        }
        if let Some((_, id)) = ls.membership_waiter.take() {
            self.respond(id, Err(ClientError::LeadershipLost));
        }
        if let Some(t) = ls.transfer.take() {
            let outcome = if cause == Some(t.to) {
                Ok(Reply::LeaderTransferred(t.to))
            } else {
                Err(ClientError::LeadershipLost)
            };
            self.respond(t.id, outcome);
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = u64::from(self.cfg.election_ticks);
        self.randomized_timeout = self.rng.range(base, 2 * base);
    }

    /// Leader stickiness (thesis §6.2 / §9.6): with check-quorum, a node that heard from a
    /// leader within the minimum election timeout ignores vote requests.
    pub(crate) fn in_lease(&self) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        if self.role == Role::Leader {
            return true;
        }
        (self.leader.is_some() || self.sticky_after_start)
            && self.election_elapsed < u64::from(self.cfg.election_ticks)
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// True once an entry of the current term is committed (needed before serving reads and
    /// changing membership, thesis §6.4 and §4.1).
    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.commit) == Some(self.term)
    }

    /// Appends entries to the leader's own log and starts replicating them.
    pub(crate) fn append_as_leader(
        &mut self,
        items: Vec<(EntryPayload, Option<RequestId>)>,
    ) -> Index {
        let mut entries = Vec::with_capacity(items.len());
        let mut index = self.log.last_index();
        let mut new_config = false;
        for (payload, waiter) in items {
            index += 1;
            if let EntryPayload::Membership(c) = &payload {
                self.membership.push(index, c.clone());
                new_config = true;
            }
            if let Some(id) = waiter {
                self.proposals.insert(index, (self.term, id));
            }
            entries.push(Entry {
                log_id: LogId::new(self.term, index),
                payload,
            });
        }
        self.log.append(entries.iter().cloned());
        let write = self.next_log_write();
        self.actions.push(Action::AppendLog { entries, write });
        if new_config {
            self.sync_progress_with_membership();
        }
        self.broadcast_append();
        index
    }
}
