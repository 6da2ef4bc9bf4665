//! An in-process network of channels: every node's messages go straight into the receiver's
//! inbox. Links can be cut (partitions, isolated nodes) to test failures.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Transport, TransportError};
use crate::message::Message;
use crate::runtime::NodeInbox;
use crate::storage::SnapshotReader;
use crate::types::NodeId;

#[derive(Default)]
struct Net {
    inboxes: HashMap<NodeId, NodeInbox>,
    /// Cut links, as (from, to).
    blocked: HashSet<(NodeId, NodeId)>,
}

/// The shared in-process network. Clones refer to the same network.
#[derive(Clone, Default)]
pub struct ChannelNetwork {
    net: Arc<Mutex<Net>>,
}

impl ChannelNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport node `from` sends with.
    pub fn transport(&self, from: NodeId) -> Arc<ChannelTransport> {
        Arc::new(ChannelTransport {
            from,
            network: self.clone(),
        })
    }

    /// Connects a node: messages for `inbox.id()` go to it.
    pub fn register(&self, inbox: NodeInbox) {
        if let Ok(mut n) = self.net.lock() {
            n.inboxes.insert(inbox.id(), inbox);
        }
    }

    /// Disconnects a node (it crashed or stopped).
    pub fn unregister(&self, id: NodeId) {
        if let Ok(mut n) = self.net.lock() {
            n.inboxes.remove(&id);
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        if let Ok(mut n) = self.net.lock() {
            let ids: Vec<NodeId> = n.inboxes.keys().copied().collect();
            for other in ids {
                if other != id {
                    n.blocked.insert((id, other));
                    n.blocked.insert((other, id));
                }
            }
        }
    }

    /// Cuts every link between nodes of different groups; links inside a group stay.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        if let Ok(mut n) = self.net.lock() {
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in a.iter() {
                            for y in b.iter() {
                                n.blocked.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut n) = self.net.lock() {
            n.blocked.clear();
        }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<NodeInbox, TransportError> {
        let n = self
            .net
            .lock()
            .map_err(|_| TransportError::Other("network lock poisoned".into()))?;
        if n.blocked.contains(&(from, to)) {
            return Err(TransportError::Unreachable(to, "link is cut".into()));
        }
        n.inboxes
            .get(&to)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable(to, "not connected".into()))
    }
}

/// One node's sending side of a [`ChannelNetwork`].
pub struct ChannelTransport {
    from: NodeId,
    network: ChannelNetwork,
}

#[async_trait]
impl Transport for ChannelTransport {
    fn send(&self, msg: Message) {
        if let Ok(inbox) = self.network.route(self.from, msg.to) {
            let _ = inbox.deliver(msg);
        }
    }

    async fn send_snapshot(
        &self,
        msg: Message,
        data: SnapshotReader,
    ) -> Result<(), TransportError> {
        let to = msg.to;
        let inbox = self.network.route(self.from, to)?;
        super::stream_snapshot(&inbox, msg, data, || {
            self.network.route(self.from, to).map(|_| ())
        })
        .await
    }
}
