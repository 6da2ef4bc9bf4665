//! What goes into the protocol (events) and what comes out (actions).

use bytes::Bytes;

use crate::membership::{MembershipChange, MembershipConfig, MembershipError};
use crate::message::Message;
use crate::types::{
    ClientSession, Entry, HardState, Index, LogId, NodeId, RequestId, SnapshotMeta,
};

/// A client command offered to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Runtime-chosen id used to answer the client.
    pub id: RequestId,
    /// Optional session for exactly-once application.
    pub session: Option<ClientSession>,
    /// The command.
    pub data: Bytes,
}

/// Consistency level of a read that goes through the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// ReadIndex (thesis §6.4): the leader confirms it is still leader with a heartbeat round.
    Linearizable,
    /// Leader lease (thesis §6.4.1): no round trip while the lease holds, else as `Linearizable`.
    Lease,
}

/// Inputs to [`crate::Raft::step`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One unit of logical time passed.
    Tick,
    /// This many units of logical time passed at once: a runtime that found its node
    /// stalled (descheduled, paused, a long garbage pause in the host) reports the whole
    /// gap, so the protocol's clock, and with it every lease, keeps to real time. Timers
    /// that expired during the gap fire once. `Ticks(0)` does nothing.
    Ticks(u64),
    /// A message from a peer.
    Message(Message),
    /// Client commands (a batch is replicated together).
    Propose(Vec<Proposal>),
    /// A read that must observe every write acknowledged before it.
    Read {
        /// Runtime-chosen id, answered by [`Action::ReadReady`] or [`Action::Respond`].
        id: RequestId,
        /// Required consistency.
        consistency: ReadConsistency,
    },
    /// A membership change request.
    ChangeMembership {
        /// Runtime-chosen id.
        id: RequestId,
        /// The change.
        change: MembershipChange,
    },
    /// Hand leadership to `to` (thesis §3.10).
    TransferLeader {
        /// Runtime-chosen id.
        id: RequestId,
        /// The new leader.
        to: NodeId,
    },
    /// The hard state given in an earlier [`Action::SaveHardState`] is on stable storage.
    HardStateSaved(HardState),
    /// Every log write up to and including write number `write` (see [`Action::AppendLog`])
    /// is on stable storage, and `last` is the last log entry after that write.
    LogDurable {
        /// Last entry of the log as of write `write`.
        last: LogId,
        /// Sequence number of the last write the sync covered.
        write: u64,
    },
    /// The state machine applied every entry up to this index.
    Applied(Index),
    /// A snapshot covering `meta` was built and is durable.
    SnapshotBuilt(SnapshotMeta),
    /// The snapshot of an earlier [`Action::InstallSnapshot`] is installed and durable, and the
    /// log was purged or reset as that action asked.
    SnapshotInstalled(SnapshotMeta),
    /// Sending a snapshot to a peer failed; the leader will retry.
    SnapshotSendFailed(NodeId),
    /// Installing the snapshot of an earlier [`Action::InstallSnapshot`] failed (bad checksum,
    /// I/O error); the old state is intact and the leader will send again.
    SnapshotInstallFailed(SnapshotMeta),
}

/// Outputs of the protocol, to be executed by the runtime **in order**.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Persist the hard state (term, vote and commit, atomically), then report
    /// [`Event::HardStateSaved`].
    SaveHardState(HardState),
    /// Delete every log entry with index `>= from`.
    TruncateLog {
        /// First index removed.
        from: Index,
        /// Sequence number of this log write (writes are numbered 1, 2, ... per process).
        write: u64,
    },
    /// Append entries after the current last entry. Once synced, report
    /// [`Event::LogDurable`] with the number of the last write the sync covered: a sync that
    /// started before a truncation must not be taken for one covering what was re-appended.
    AppendLog {
        /// The entries.
        entries: Vec<Entry>,
        /// Sequence number of this log write.
        write: u64,
    },
    /// Delete log entries up to and including `up_to` (they are covered by a snapshot).
    PurgeLog {
        /// Last entry removed.
        up_to: LogId,
    },
    /// Deliver a message. For `InstallSnapshot`, the transport also streams the latest
    /// snapshot's data.
    Send(Message),
    /// Apply committed entries, in order. Each `(index, request)` in `waiters` is a local
    /// client waiting for the result of the entry at that index.
    Apply {
        /// The committed entries.
        entries: Vec<Entry>,
        /// Local requests answered by these entries.
        waiters: Vec<(Index, RequestId)>,
    },
    /// Install the snapshot received with the `InstallSnapshot` message described by `meta`.
    /// If `reset_log` the whole log is discarded; otherwise entries up to the snapshot are
    /// purged. Report [`Event::SnapshotInstalled`] when done.
    InstallSnapshot {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Discard the whole log (it does not contain the snapshot's last entry).
        reset_log: bool,
    },
    /// These reads may now run against the state machine (applied index is at least `index`).
    ReadReady {
        /// The read requests.
        ids: Vec<RequestId>,
        /// Their read index.
        index: Index,
    },
    /// Answer a client request.
    Respond {
        /// The request.
        id: RequestId,
        /// Outcome.
        outcome: Result<Reply, ClientError>,
    },
}

/// A successful answer that does not come from the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The membership change is committed; this is the configuration now in force.
    MembershipChanged(MembershipConfig),
    /// Leadership moved to this node.
    LeaderTransferred(NodeId),
}

/// Why a request was not carried out (or has an unknown outcome).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This node is not the leader; try the hinted one. The request was not carried out.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The entry was removed from this node's log by a new leader, or a snapshot from the
    /// leader replaced the log before it was applied here. It may have been (or may yet be)
    /// committed: the outcome is unknown, retry with the same session.
    #[error("the proposal was overwritten by a new leader; outcome unknown, retry with the same session")]
    ProposalDropped,
    /// Leadership was lost while the request was pending; outcome unknown.
    #[error("leadership lost while the request was pending; outcome unknown")]
    LeadershipLost,
    /// A membership change is already in progress.
    #[error("a membership change is already in progress")]
    MembershipChangeInProgress,
    /// The change itself is invalid.
    #[error("invalid membership change: {0}")]
    InvalidMembership(#[from] MembershipError),
    /// A leader transfer is in progress; proposals are refused until it ends.
    #[error("a leader transfer is in progress")]
    TransferInProgress,
    /// The transfer target is not a voter.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// The transfer did not complete within an election timeout.
    #[error("leader transfer to {0} timed out")]
    TransferTimedOut(NodeId),
}
