//! How protocol messages and snapshots travel between nodes: the [`Transport`] trait and the
//! in-process [`ChannelNetwork`] used by embedded clusters, tests and benchmarks.

mod channel;

pub use channel::{ChannelNetwork, ChannelTransport};

use async_trait::async_trait;

use crate::message::Message;
use crate::storage::SnapshotReader;
use crate::types::NodeId;

/// Size of the chunks the in-process transport moves a snapshot in.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A transport failed to deliver.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer is unknown or unreachable.
    #[error("node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// Any other failure, described.
    #[error("{0}")]
    Other(String),
}

/// Sends protocol messages to peers. Delivery is best-effort: Raft tolerates loss,
/// duplication and reordering, so `send` never blocks and may drop.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Queues a message for `msg.to`. Must not block.
    fn send(&self, msg: Message);

    /// Sends an `InstallSnapshot` message together with the snapshot's data (the handler's
    /// self-checking envelope), streamed from `data` in chunks (see
    /// [`SnapshotReader::next_chunk`]): a transport never holds the whole snapshot in
    /// memory. Returns once the receiver has it, or with an error.
    async fn send_snapshot(&self, msg: Message, data: SnapshotReader)
        -> Result<(), TransportError>;
}
