//! What a benchmark client talks to: a node in this process (the embedded user's view) or a
//! cluster over gRPC (a remote client's view).

use std::sync::Arc;

use bytes::Bytes;
use lockstep::{Client, Node, ReadLevel};

/// The system under test, as the benchmark's clients see it.
#[derive(Clone)]
pub enum Target {
    /// A node running in this process: calls go straight to its handle.
    Node(Node),
    /// A cluster reached over gRPC: worker `w` uses client `w % len`, each client with one
    /// request in flight (as one application thread would).
    Remote(Arc<[Client]>),
}

impl Target {
    /// Replicates `command`; the answer once it is committed and applied.
    pub async fn propose(&self, worker: usize, command: Bytes) -> Result<Bytes, String> {
        match self {
            Target::Node(n) => n.propose(command).await.map_err(|e| e.to_string()),
            Target::Remote(c) => c[worker % c.len()]
                .propose(command)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Runs a read-only query at `level`.
    pub async fn read(
        &self,
        worker: usize,
        query: Bytes,
        level: ReadLevel,
    ) -> Result<Bytes, String> {
        match self {
            Target::Node(n) => n.read(query, level).await.map_err(|e| e.to_string()),
            Target::Remote(c) => c[worker % c.len()]
                .read(query, level)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
