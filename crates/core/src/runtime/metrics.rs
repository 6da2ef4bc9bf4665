//! A node's metrics, through the [`metrics`] facade: whichever recorder the application
//! installs (the facade's `[metrics]` endpoint installs a Prometheus one) receives them;
//! with none installed every update is a no-op.
//!
//! Every metric carries the label `node` (the node id), so nodes sharing a process stay
//! apart. Handles are registered once when the node starts: the hot path only updates
//! atomics. The names:
//!
//! | Name | Kind | Meaning |
//! |---|---|---|
//! | `lockstep_term` | gauge | current term |
//! | `lockstep_is_leader` | gauge | 1 while this node leads |
//! | `lockstep_commit_index` | gauge | commit index |
//! | `lockstep_applied_index` | gauge | index the state machine applied |
//! | `lockstep_leader_changes_total` | counter | times the known leader changed |
//! | `lockstep_proposals_total{outcome}` | counter | proposals by outcome (`ok`, `not_leader`, `rejected`, `error`) |
//! | `lockstep_proposal_duration_seconds` | histogram | propose to answer, successful proposals |
//! | `lockstep_read_duration_seconds{level}` | histogram | reads by level (`linearizable`, `lease`, `eventual`) |
//! | `lockstep_log_sync_duration_seconds` | histogram | one log sync (fsync) |
//! | `lockstep_log_sync_entries` | histogram | entries made durable per sync |
//! | `lockstep_snapshot_build_duration_seconds` | histogram | building one snapshot |
//! | `lockstep_snapshot_bytes` | gauge | size of the latest snapshot built |
//! | `lockstep_peer_match_index{peer}` | gauge | leader only: highest index durable on each peer |
//! | `lockstep_peer_messages_rejected_total{reason}` | counter | peer messages refused (transport) |
//! | `lockstep_pending_requests` | gauge | requests waiting in the core (proposals, reads) |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::types::NodeId;

/// Every metric name, for exporters and tests.
pub const METRIC_NAMES: [&str; 15] = [
    "lockstep_term",
    "lockstep_is_leader",
    "lockstep_commit_index",
    "lockstep_applied_index",
    "lockstep_leader_changes_total",
    "lockstep_proposals_total",
    "lockstep_proposal_duration_seconds",
    "lockstep_read_duration_seconds",
    "lockstep_log_sync_duration_seconds",
    "lockstep_log_sync_entries",
    "lockstep_snapshot_build_duration_seconds",
    "lockstep_snapshot_bytes",
    "lockstep_peer_match_index",
    "lockstep_peer_messages_rejected_total",
    "lockstep_pending_requests",
];

/// How a proposal ended, for `lockstep_proposals_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Applied and answered.
    Ok,
    /// Refused: this node does not lead.
    NotLeader,
    /// The state machine rejected it.
    Rejected,
    /// Anything else (timeout, overload, stopped).
    Error,
}

/// The metric handles of one node.
pub struct NodeMetrics {
    node: String,
    /// `lockstep_term`.
    pub term: Gauge,
    /// `lockstep_is_leader`.
    pub is_leader: Gauge,
    /// `lockstep_commit_index`.
    pub commit: Gauge,
    /// `lockstep_applied_index`.
    pub applied: Gauge,
    /// `lockstep_leader_changes_total`.
    pub leader_changes: Counter,
    proposals: [Counter; 4],
    /// `lockstep_proposal_duration_seconds`.
    pub proposal_duration: Histogram,
    reads: [Histogram; 3],
    /// `lockstep_log_sync_duration_seconds`.
    pub log_sync_duration: Histogram,
    /// `lockstep_log_sync_entries`.
    pub log_sync_entries: Histogram,
    /// `lockstep_snapshot_build_duration_seconds`.
    pub snapshot_build_duration: Histogram,
    /// `lockstep_snapshot_bytes`.
    pub snapshot_bytes: Gauge,
    /// `lockstep_pending_requests`.
    pub pending: Gauge,
    peers: Mutex<BTreeMap<NodeId, Gauge>>,
}

impl NodeMetrics {
    /// Registers node `id`'s metrics with the recorder installed now (if any).
    pub fn new(id: NodeId) -> Self {
        let node = id.to_string();
        let n = || node.clone();
        let outcome = |o: &'static str| metrics::counter!("lockstep_proposals_total", "node" => n(), "outcome" => o);
        let read = |l: &'static str| metrics::histogram!("lockstep_read_duration_seconds", "node" => n(), "level" => l);
        let m = Self {
            term: metrics::gauge!("lockstep_term", "node" => n()),
            is_leader: metrics::gauge!("lockstep_is_leader", "node" => n()),
            commit: metrics::gauge!("lockstep_commit_index", "node" => n()),
            applied: metrics::gauge!("lockstep_applied_index", "node" => n()),
            leader_changes: metrics::counter!("lockstep_leader_changes_total", "node" => n()),
            proposals: [
                outcome("ok"),
                outcome("not_leader"),
                outcome("rejected"),
                outcome("error"),
            ],
            proposal_duration: metrics::histogram!("lockstep_proposal_duration_seconds", "node" => n()),
            reads: [read("linearizable"), read("lease"), read("eventual")],
            log_sync_duration: metrics::histogram!("lockstep_log_sync_duration_seconds", "node" => n()),
            log_sync_entries: metrics::histogram!("lockstep_log_sync_entries", "node" => n()),
            snapshot_build_duration: metrics::histogram!(
                "lockstep_snapshot_build_duration_seconds", "node" => n()
            ),
            snapshot_bytes: metrics::gauge!("lockstep_snapshot_bytes", "node" => n()),
            pending: metrics::gauge!("lockstep_pending_requests", "node" => n()),
            peers: Mutex::new(BTreeMap::new()),
            node,
        };
        // Registered at zero, so every reason is listed before the first refusal.
        for reason in REJECT_REASONS {
            metrics::counter!(
                "lockstep_peer_messages_rejected_total",
                "node" => m.node.clone(),
                "reason" => reason
            )
            .absolute(0);
        }
        m
    }

    /// The node these metrics belong to.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Counts a finished proposal and, if it succeeded, its duration.
    pub fn proposal(&self, outcome: ProposalOutcome, took: Duration) {
        let i = match outcome {
            ProposalOutcome::Ok => 0,
            ProposalOutcome::NotLeader => 1,
            ProposalOutcome::Rejected => 2,
            ProposalOutcome::Error => 3,
        };
        if let Some(c) = self.proposals.get(i) {
            c.increment(1);
        }
        if outcome == ProposalOutcome::Ok {
            self.proposal_duration.record(took.as_secs_f64());
        }
    }

    /// Records a successful read at `level` (0 linearizable, 1 lease, 2 eventual).
    pub(crate) fn read(&self, level: usize, took: Duration) {
        if let Some(h) = self.reads.get(level) {
            h.record(took.as_secs_f64());
        }
    }

    /// Sets `lockstep_peer_match_index{peer}` for every peer in `matched`.
    pub(crate) fn peer_matches(&self, matched: impl Iterator<Item = (NodeId, u64)>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for (peer, index) in matched {
            let g = peers.entry(peer).or_insert_with(|| {
                metrics::gauge!("lockstep_peer_match_index", "node" => self.node.clone(), "peer" => peer.to_string())
            });
            g.set(index as f64);
        }
    }
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("node", &self.node)
            .finish()
    }
}

/// The reasons of `lockstep_peer_messages_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 5] = [
    "wrong_cluster_or_version",
    "unknown_peer",
    "malformed",
    "too_large",
    "other",
];

/// Counts one peer message refused for `reason` (one of [`REJECT_REASONS`]) on node
/// `node` (`lockstep_peer_messages_rejected_total{reason}`); for transports.
pub fn peer_message_rejected(node: NodeId, reason: &'static str) {
    metrics::counter!(
        "lockstep_peer_messages_rejected_total",
        "node" => node.to_string(),
        "reason" => reason
    )
    .increment(1);
}
