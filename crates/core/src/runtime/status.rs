//! The watchable status of a running node.

use std::collections::BTreeMap;

use crate::membership::MembershipConfig;
use crate::raft::progress::Progress;
use crate::raft::{Role, Status};
use crate::types::{Index, LogId, NodeId, Term};

/// What a node reports about itself; watch it with [`crate::runtime::Node::watch_status`].
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: Index,
    /// Index the state machine applied.
    pub applied: Index,
    /// Last log entry.
    pub last_log_id: LogId,
    /// Latest snapshot.
    pub snapshot: LogId,
    /// Configuration in force.
    pub membership: MembershipConfig,
    /// Per-peer replication progress (leader only).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Set when the node stopped: why (shutdown, or the error that stopped it).
    pub stopped: Option<String>,
}

impl NodeStatus {
    pub(crate) fn from_protocol(s: Status) -> Self {
        Self {
            id: s.id,
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: s.applied,
            last_log_id: s.last_log_id,
            snapshot: s.snapshot,
            membership: s.membership,
            progress: s.progress,
            stopped: None,
        }
    }

    /// True if this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}
