//! The simulated network as a production [`Transport`]: every message and snapshot goes
//! through the nodes' real inboxes, after a seeded delay, unless dropped or cut off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::super::network::Network;
use crate::message::Message;
use crate::rng::Rng;
use crate::runtime::NodeInbox;
use crate::storage::SnapshotReader;
use crate::transport::{Transport, TransportError};
use crate::types::NodeId;

/// Links, fates and the running nodes' inboxes, shared by every node's transport.
pub(crate) struct Net {
    pub(crate) links: Network,
    pub(crate) rng: Rng,
    pub(crate) inboxes: BTreeMap<NodeId, NodeInbox>,
    /// Nodes whose AppendEntries are lost (a script's way to let a node win an election
    /// without its first entries reaching anyone).
    pub(crate) muted: BTreeSet<NodeId>,
    /// A leader whose entries of its own term are lost (its entries of earlier terms still
    /// travel): Figure 8 (c), where only an old-term entry reaches a majority.
    pub(crate) hold_own_term: Option<NodeId>,
    /// Probability that a node granting a vote loses power right after.
    pub(crate) cut_after_vote: f64,
    /// Votes granted since the world last looked: (voter, candidate, term).
    pub(crate) votes: Vec<(NodeId, NodeId, crate::types::Term)>,
    /// Power cuts due: (node, when).
    pub(crate) power_cuts: Vec<(NodeId, tokio::time::Instant)>,
}

pub(crate) type SharedNet = Arc<Mutex<Net>>;

fn lock(net: &SharedNet) -> std::sync::MutexGuard<'_, Net> {
    net.lock().unwrap_or_else(|p| p.into_inner())
}

/// Node `from`'s transport.
pub(crate) struct SimTransport {
    pub(crate) from: NodeId,
    pub(crate) net: SharedNet,
}

impl SimTransport {
    /// The inbox of `to`, if the link is up and `to` runs.
    fn route(&self, to: NodeId) -> Result<NodeInbox, TransportError> {
        let net = lock(&self.net);
        if net.links.is_blocked(self.from, to) {
            return Err(TransportError::Unreachable(to, "partitioned".into()));
        }
        net.inboxes
            .get(&to)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable(to, "not running".into()))
    }
}

#[async_trait]
impl Transport for SimTransport {
    fn send(&self, msg: Message) {
        let plan = {
            let mut net = lock(&self.net);
            if let crate::message::MessageBody::AppendEntries { entries, .. } = &msg.body {
                let own_term = entries.iter().any(|e| e.log_id.term == msg.term);
                if net.muted.contains(&self.from)
                    || (own_term && net.hold_own_term == Some(self.from))
                {
                    return;
                }
            }
            let granted = matches!(
                msg.body,
                crate::message::MessageBody::VoteResponse {
                    pre_vote: false,
                    granted: true
                }
            );
            if granted {
                net.votes.push((self.from, msg.to, msg.term));
                let p = net.cut_after_vote;
                if net.rng.chance(p) {
                    let at = tokio::time::Instant::now()
                        + Duration::from_micros(net.rng.range(0, 1_000));
                    net.power_cuts.push((self.from, at));
                }
            }
            let Net { links, rng, .. } = &mut *net;
            links.plan(rng, self.from, msg.to)
        };
        for micros in plan {
            let (net, msg) = (self.net.clone(), msg.clone());
            let from = self.from;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(micros)).await;
                let inbox = {
                    let n = lock(&net);
                    if n.links.is_blocked(from, msg.to) {
                        return;
                    }
                    n.inboxes.get(&msg.to).cloned()
                };
                if let Some(inbox) = inbox {
                    let _ = inbox.deliver(msg);
                }
            });
        }
    }

    async fn send_snapshot(
        &self,
        msg: Message,
        data: SnapshotReader,
    ) -> Result<(), TransportError> {
        let delay = {
            let mut net = lock(&self.net);
            Network::delay(&mut net.rng)
        };
        tokio::time::sleep(Duration::from_micros(delay)).await;
        let inbox = self.route(msg.to)?;
        let to = msg.to;
        crate::transport::stream_snapshot(&inbox, msg, data, || self.route(to).map(|_| ())).await
    }
}
