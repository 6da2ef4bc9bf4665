//! The bound on what peers may queue in a node's inbox: each peer has a budget of bytes
//! ([`crate::runtime::RuntimeConfig::peer_inbox_bytes`]); a message takes its size from
//! the budget until the core task has processed it. A transport that delivers with
//! [`crate::runtime::NodeInbox::deliver_bounded`] waits while its peer's budget is spent,
//! and so stops reading that peer's stream: back-pressure instead of unbounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::message::{Message, MessageBody};
use crate::types::NodeId;

/// The least a message is charged (its fixed fields and the channel's bookkeeping).
const MIN_COST: usize = 128;

/// Per-peer byte budgets of one node's inbox.
pub(crate) struct PeerBudget {
    per_peer: usize,
    peers: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
}

impl PeerBudget {
    /// Budgets of `per_peer` bytes for every peer.
    pub(crate) fn new(per_peer: usize) -> Self {
        Self {
            per_peer: per_peer.clamp(MIN_COST, Semaphore::MAX_PERMITS),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, peer: NodeId) -> Arc<Semaphore> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_peer)))
            .clone()
    }

    /// What `msg` is charged: its approximate size, at most the whole budget (so one
    /// message larger than the budget still goes through, alone).
    pub(crate) fn cost(&self, msg: &Message) -> u32 {
        let body = match &msg.body {
            MessageBody::AppendEntries { entries, .. } => {
                entries.iter().map(|e| e.size_hint()).sum::<usize>()
            }
            _ => 0,
        };
        let cost = (body + MIN_COST).min(self.per_peer);
        u32::try_from(cost).unwrap_or(u32::MAX)
    }

    /// Waits until `msg`'s sender has room for it and takes it from the budget; the
    /// permit gives it back when dropped (after the core task processed the message).
    /// (`None` only if the budget was closed, which never happens.)
    pub(crate) async fn acquire(&self, msg: &Message) -> Option<OwnedSemaphorePermit> {
        let cost = self.cost(msg);
        self.semaphore(msg.from).acquire_many_owned(cost).await.ok()
    }

    /// Bytes of `peer`'s budget in use.
    #[cfg(test)]
    pub(crate) fn in_use(&self, peer: NodeId) -> usize {
        self.per_peer - self.semaphore(peer).available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryPayload, LogId};
    use bytes::Bytes;

    fn append(from: NodeId, bytes: usize) -> Message {
        Message {
            from,
            to: 1,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![Entry {
                    log_id: LogId::new(1, 1),
                    payload: EntryPayload::Command {
                        session: None,
                        data: Bytes::from(vec![0u8; bytes]),
                    },
                }],
                leader_commit: 0,
            },
        }
    }

    #[tokio::test]
    async fn a_peer_waits_when_its_budget_is_spent_and_others_do_not() {
        let b = Arc::new(PeerBudget::new(10_000));
        let first = b.acquire(&append(2, 6_000)).await.unwrap();
        assert!(b.in_use(2) > 6_000);
        // A second large message from peer 2 must wait ...
        let b2 = b.clone();
        let waiting = tokio::spawn(async move { b2.acquire(&append(2, 6_000)).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ... while peer 3 has a budget of its own.
        let _other = b.acquire(&append(3, 6_000)).await;
        // Processing the first message frees the room.
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        drop(second);
        assert_eq!(b.in_use(2), 0);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_still_goes_alone() {
        let b = PeerBudget::new(1_000);
        let p = b.acquire(&append(2, 50_000)).await.unwrap();
        assert_eq!(b.in_use(2), 1_000);
        drop(p);
    }
}
