//! Simulated network between nodes: delay (and so reordering), drops, duplicates, and
//! partitions that may be one-way.

use std::collections::BTreeSet;

use crate::rng::Rng;
use crate::types::NodeId;

/// Link state between nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Network {
    /// Directed links that drop everything: (from, to).
    pub(crate) blocked: BTreeSet<(NodeId, NodeId)>,
    pub(crate) drop_rate: f64,
    pub(crate) duplicate_rate: f64,
}

/// Delivery plan for one message: the delays of each copy delivered.
pub(crate) type Deliveries = Vec<u64>;

impl Network {
    pub(crate) fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Decides how a message fares: no copy, one, or two, each with its own delay.
    pub(crate) fn plan(&self, rng: &mut Rng, from: NodeId, to: NodeId) -> Deliveries {
        if self.is_blocked(from, to) || rng.chance(self.drop_rate) {
            return Vec::new();
        }
        let mut out = vec![Self::delay(rng)];
        if rng.chance(self.duplicate_rate) {
            out.push(Self::delay(rng));
        }
        out
    }

    /// One-way latency in microseconds: mostly short, sometimes slow.
    pub(crate) fn delay(rng: &mut Rng) -> u64 {
        if rng.chance(0.05) {
            rng.range(2_000, 20_000)
        } else {
            rng.range(100, 1_500)
        }
    }

    /// Cuts the cluster into two sides (both directions).
    pub(crate) fn split(&mut self, side: &BTreeSet<NodeId>, all: &[NodeId]) {
        for a in all {
            for b in all {
                if side.contains(a) != side.contains(b) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    /// Blocks one direction only.
    pub(crate) fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }
}
