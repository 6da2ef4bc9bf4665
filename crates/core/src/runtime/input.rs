//! Everything that reaches a node's core task, and the requests it keeps until answered.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::event::{Event, ReadConsistency};
use crate::membership::{MembershipChange, MembershipConfig};
use crate::message::Message;
use crate::types::{ClientSession, NodeId, SnapshotMeta};

/// Answer channel of a request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// An input of the core task.
pub(crate) enum Input {
    /// A protocol message from a peer, with the share of its sender's inbox budget it holds
    /// until processed (see `peer_budget`).
    Peer(Message, Option<tokio::sync::OwnedSemaphorePermit>),
    /// A client command.
    Propose {
        session: Option<ClientSession>,
        data: Bytes,
        reply: Reply<Bytes>,
    },
    /// A read through the protocol.
    Read {
        query: Bytes,
        consistency: ReadConsistency,
        reply: Reply<Bytes>,
    },
    /// A membership change.
    Membership {
        change: MembershipChange,
        reply: Reply<MembershipConfig>,
    },
    /// A leader transfer.
    Transfer { to: NodeId, reply: Reply<NodeId> },
    /// Take a snapshot now.
    Snapshot { reply: Reply<Option<SnapshotMeta>> },
    /// An I/O completion for the protocol.
    Event(Event),
    /// A storage or state-machine failure: stop.
    Fatal(String),
    /// Graceful shutdown.
    Shutdown(oneshot::Sender<()>),
}

/// A request waiting for the protocol.
pub(crate) enum Pending {
    Write(Reply<Bytes>),
    Read(Bytes, Reply<Bytes>),
    Membership(Reply<MembershipConfig>),
    Transfer(Reply<NodeId>),
}

impl Pending {
    /// Fails the request.
    pub(crate) fn fail(self, e: NodeError) {
        match self {
            Pending::Write(r) | Pending::Read(_, r) => {
                let _ = r.send(Err(e));
            }
            Pending::Membership(r) => {
                let _ = r.send(Err(e));
            }
            Pending::Transfer(r) => {
                let _ = r.send(Err(e));
            }
        }
    }
}
