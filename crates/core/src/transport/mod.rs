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

/// Streams `data` into `inbox` for the `InstallSnapshot` message `msg`, one chunk in flight
/// at a time, for an in-process transport; `link` is asked before every chunk whether the
/// link still stands (a cut mid-transfer breaks it, as a network would).
pub async fn stream_snapshot(
    inbox: &crate::runtime::NodeInbox,
    msg: Message,
    mut data: SnapshotReader,
    link: impl Fn() -> Result<(), TransportError> + Send + Sync,
) -> Result<(), TransportError> {
    let to = msg.to;
    let refused = |e: crate::runtime::SnapshotReceiveError| {
        TransportError::Unreachable(to, format!("snapshot refused: {e}"))
    };
    let Some(mut receiver) = inbox.snapshot_receiver(msg).await.map_err(refused)? else {
        // The receiver already holds this snapshot.
        return Ok(());
    };
    while let Some(chunk) = data
        .next_chunk(SNAPSHOT_CHUNK_BYTES)
        .await
        .map_err(|e| TransportError::Other(format!("reading the snapshot: {e}")))?
    {
        link()?;
        receiver.write(chunk).await.map_err(refused)?;
    }
    receiver.finish().await.map_err(refused)
}
