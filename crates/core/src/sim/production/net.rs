//! The simulated network as a production [`Transport`]: every message and snapshot goes
//! through the nodes' real inboxes, after a seeded delay, unless dropped or cut off.

use std::collections::BTreeMap;
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
