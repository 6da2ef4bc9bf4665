//! Basic identifiers and log records shared by every layer.

use bytes::Bytes;

use crate::membership::MembershipConfig;

/// Identifies a node in a cluster. `0` is reserved and never a valid node id.
pub type NodeId = u64;
/// A Raft term (§5.1).
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;
/// Identifies a client request inside one node; chosen by the runtime.
pub type RequestId = u64;

/// The position and term of a log entry; `LogId::default()` (0, 0) stands for "before the first entry".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LogId {
    /// Term in which the entry was created by a leader.
    pub term: Term,
    /// Position in the log.
    pub index: Index,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: Term, index: Index) -> Self {
        Self { term, index }
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// A client session attached to a command: a retried command with the same
/// `(client_id, sequence)` is applied at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientSession {
    /// Identifies the client; chosen by the client, unique per cluster.
    pub client_id: u64,
    /// Increases by one for every new command of that client.
    pub sequence: u64,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by every new leader to commit entries of earlier terms (§5.4.2, thesis §6.4).
    Blank,
    /// A user command for the state machine.
    Command {
        /// Optional session for exactly-once application.
        session: Option<ClientSession>,
        /// The opaque command bytes.
        data: Bytes,
    },
    /// A new cluster configuration; takes effect as soon as it is in the log (thesis §4.1).
    Membership(MembershipConfig),
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term and index of the entry.
    pub log_id: LogId,
    /// The content.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate size in bytes, used for flow control and batching limits.
    pub fn size_hint(&self) -> usize {
        let body = match &self.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command { data, .. } => data.len() + 16,
            EntryPayload::Membership(c) => 8 * c.member_count(),
        };
        body + 24
    }

    /// Index of the entry.
    pub fn index(&self) -> Index {
        self.log_id.index
    }

    /// Term of the entry.
    pub fn term(&self) -> Term {
        self.log_id.term
    }
}

/// State that must be on stable storage before the node answers anything that depends on it
/// (Figure 2, "Persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// A commit index known when this state was saved, never above the locally durable log.
    /// Saving it is optional and lazy; it only lets a restarted node apply sooner.
    pub commit: Index,
}

/// Describes a snapshot: the last entry it covers and the configuration as of that entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log entry included in the snapshot.
    pub last_log_id: LogId,
    /// Membership in force at `last_log_id`.
    pub membership: MembershipConfig,
}
