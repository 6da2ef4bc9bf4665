//! The watchable status of a running node.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::membership::MembershipConfig;
use crate::raft::progress::ReplicationState;
use crate::raft::{Role, Status};
use crate::types::{Index, LogId, NodeId, Term};

/// What a node reports about itself; watch it with [`crate::runtime::Node::watch_status`].
/// Serializes (serde) for tools: `lockstep client -o json status` prints it.
#[derive(Clone, Debug, serde::Serialize)]
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
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// Set when the node stopped: why (shutdown, or the error that stopped it).
    pub stopped: Option<String>,
}

/// How far the leader has replicated to one peer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerProgress {
    /// Highest index known to be durable and identical on the peer.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    /// Replication mode: probing, pipelining, or sending a snapshot.
    pub state: ReplicationState,
    /// Messages sent and not yet answered.
    pub in_flight: usize,
    /// Bytes of entries sent and not yet answered.
    pub in_flight_bytes: usize,
    /// Milliseconds since the peer last answered, as of this status (`None`: never).
    pub last_contact_ms: Option<u64>,
}

impl NodeStatus {
    /// The status of protocol state `s`, whose clock ticks every `tick`.
    pub(crate) fn from_protocol(s: Status, tick: Duration) -> Self {
        let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX);
        let progress = s
            .progress
            .iter()
            .map(|(id, p)| {
                (
                    *id,
                    PeerProgress {
                        matched: p.matched,
                        next: p.next,
                        state: p.state,
                        in_flight: p.in_flight(),
                        in_flight_bytes: p.in_flight_bytes(),
                        last_contact_ms: p
                            .ticks_since_contact(s.now)
                            .map(|t| t.saturating_mul(tick_ms)),
                    },
                )
            })
            .collect();
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
            progress,
            stopped: None,
        }
    }

    /// True if this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}
