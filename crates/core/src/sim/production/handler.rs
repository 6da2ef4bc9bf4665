//! A recorder around the production handler: every command's answer, by index, must be the
//! same on every replica (a duplicate filtered by the session table answers the original
//! result everywhere; a replica that applied it again answers differently).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::machines::AppliedLog;
use crate::error::{CommandResult, HandlerError};
use crate::handler::{Opened, SnapshotSink, StateMachineHandler};
use crate::storage::SnapshotReader;
use crate::types::{Entry, Index, NodeId, SnapshotMeta};

/// The answer a self-persisting machine gives for a command it applied before a restart:
/// legitimately different from the others'.
const NOT_RETAINED: &str = "result was not retained";

pub(crate) struct RecordingHandler {
    pub(crate) inner: Arc<dyn StateMachineHandler>,
    pub(crate) node: NodeId,
    pub(crate) answers: Arc<Mutex<AppliedLog>>,
}

fn digest(r: &CommandResult) -> u64 {
    let bytes: &[u8] = match r {
        Ok(b) => b,
        Err(e) => e.0.as_bytes(),
    };
    super::machines::digest(bytes) ^ u64::from(r.is_ok())
}

#[async_trait]
impl StateMachineHandler for RecordingHandler {
    async fn open(&self, snapshot: Option<&SnapshotMeta>) -> Result<Opened, HandlerError> {
        self.inner.open(snapshot).await
    }

    async fn apply(&self, entries: &[Entry]) -> Result<Vec<(Index, CommandResult)>, HandlerError> {
        let out = self.inner.apply(entries).await?;
        if let Ok(mut log) = self.answers.lock() {
            for (i, r) in &out {
                if !matches!(r, Err(e) if e.0.contains(NOT_RETAINED)) {
                    log.record_answer(self.node, *i, digest(r));
                }
            }
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        self.inner.query(query)
    }

    fn queries_through_log(&self) -> bool {
        self.inner.queries_through_log()
    }

    fn applied(&self) -> Index {
        self.inner.applied()
    }

    fn wants_snapshot(&self) -> bool {
        self.inner.wants_snapshot()
    }

    async fn build_snapshot(&self) -> Result<Option<SnapshotMeta>, HandlerError> {
        self.inner.build_snapshot().await
    }

    async fn snapshot_reader(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, HandlerError> {
        self.inner.snapshot_reader(meta).await
    }

    async fn receive_snapshot(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<Box<dyn SnapshotSink>>, HandlerError> {
        self.inner.receive_snapshot(meta).await
    }

    async fn install_snapshot(&self, meta: &SnapshotMeta) -> Result<(), HandlerError> {
        self.inner.install_snapshot(meta).await
    }
}
