//! Messages exchanged between Raft peers (Figure 2 and thesis chapter 3).

use crate::types::{Entry, Index, LogId, NodeId, SnapshotMeta, Term};

/// A protocol message. The transport delivers it to `to`; the cluster id check happens in
/// the transport, before the message reaches the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// The content.
    pub body: MessageBody,
}

/// The kinds of protocol messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote RPC (§5.2) or its pre-vote form (thesis §9.6).
    VoteRequest {
        /// True for a pre-vote: nobody changes term or vote because of it.
        pre_vote: bool,
        /// Candidate's last log entry, for the up-to-date check (§5.4.1).
        last_log_id: LogId,
        /// Set when the election was started by a leader transfer (thesis §3.10): voters
        /// grant even if they heard from a leader recently.
        transfer: bool,
    },
    /// Answer to a vote request.
    VoteResponse {
        /// Echoes the request kind.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC (§5.3).
    AppendEntries {
        /// Entry preceding `entries`, for the consistency check.
        prev_log_id: LogId,
        /// Entries to store (empty for a pure probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: Index,
    },
    /// Answer to AppendEntries.
    AppendResponse(AppendResult),
    /// Heartbeat: keeps followers from campaigning and confirms leadership for reads
    /// (thesis §6.4). `leader_commit` is at most what this follower is known to have.
    Heartbeat {
        /// Commit index the follower may adopt.
        leader_commit: Index,
        /// Read round being confirmed.
        read_seq: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResponse {
        /// Echo of the read round.
        read_seq: u64,
        /// The follower's durable acknowledgement for this leader (as in
        /// [`AppendResult::Success::durable`]), so a lost acknowledgement is repaired by the
        /// next heartbeat.
        durable: Index,
    },
    /// InstallSnapshot RPC (§7). Only the metadata travels in the protocol; the transport
    /// streams the snapshot data that belongs to it.
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
    },
    /// Tells the receiver to start an election at once (leader transfer, thesis §3.10).
    TimeoutNow,
}

/// Outcome of an AppendEntries (or of a snapshot install) on a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The consistency check passed.
    Success {
        /// Last index known to match the leader's log.
        last_accepted: Index,
        /// Last index that matches the leader's log **and** is durable on the follower; only
        /// this counts toward commitment.
        durable: Index,
    },
    /// The consistency check failed at `rejected` (the `prev_log_id.index` sent).
    Conflict {
        /// The rejected `prev_log_id.index`.
        rejected: Index,
        /// Hint for fast backtracking: the follower's last entry at or below `rejected` whose
        /// term is at most the term the leader sent.
        hint: LogId,
    },
}

impl MessageBody {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "PreVoteRequest",
            MessageBody::VoteRequest { .. } => "VoteRequest",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
