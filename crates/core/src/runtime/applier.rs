//! The applier: a task that owns the state machine handler's write path, so a slow `apply`
//! never stalls heartbeats. Jobs arrive in log order; reads run after every apply queued
//! before them; snapshots are built on their own task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::Instrument;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::input::{Input, Reply};
use super::log_writer::LogOp;
use crate::error::NodeError;
use crate::event::{ClientError, Event};
use crate::handler::StateMachineHandler;
use crate::types::{Entry, Index, SnapshotMeta};

/// Work for the applier.
pub(crate) enum ApplyJob {
    /// Apply committed entries and answer the local clients waiting for them.
    Entries {
        entries: Vec<Entry>,
        waiters: Vec<(Index, Reply<Bytes>)>,
    },
    /// Run reads whose read index is applied (everything queued before them).
    Reads(Vec<(Bytes, Reply<Bytes>)>),
    /// Install the snapshot received from the leader.
    Install { meta: SnapshotMeta, reset_log: bool },
    /// Build a snapshot now.
    Build(Reply<Option<SnapshotMeta>>),
    /// Finish queued work and stop.
    Stop(oneshot::Sender<()>),
}

pub(crate) struct Applier {
    pub(crate) handler: Arc<dyn StateMachineHandler>,
    pub(crate) jobs: mpsc::UnboundedReceiver<ApplyJob>,
    pub(crate) core: mpsc::UnboundedSender<Input>,
    pub(crate) log: mpsc::UnboundedSender<LogOp>,
    pub(crate) building: Arc<AtomicBool>,
    pub(crate) lease: Arc<super::lease::LeaseCell>,
    pub(crate) metrics: Arc<super::metrics::NodeMetrics>,
    /// This node, for the spans.
    pub(crate) node: crate::types::NodeId,
    /// The node's tasks: snapshot builds are registered here, so a crash stops them.
    pub(crate) tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Passed before each job (the simulator's stalls).
    pub(crate) gate: super::env::StallGate,
}

impl Applier {
    pub(crate) async fn run(mut self) {
        while let Some(job) = self.jobs.recv().await {
            self.gate.passed().await;
            match job {
                ApplyJob::Entries { entries, waiters } => {
                    if !self.apply(entries, waiters).await {
                        return;
                    }
                }
                ApplyJob::Reads(reads) => {
                    for (q, reply) in reads {
                        let _ = reply.send(self.handler.query(&q).map_err(NodeError::Rejected));
                    }
                }
                ApplyJob::Install { meta, reset_log } => {
                    let span = tracing::debug_span!(
                        "snapshot_install",
                        node = self.node,
                        term = meta.last_log_id.term,
                        index = meta.last_log_id.index
                    );
                    match self.handler.install_snapshot(&meta).instrument(span).await {
                        Ok(()) => {
                            self.lease.set_applied(meta.last_log_id.index);
                            let _ = self.log.send(LogOp::SnapshotInstalled { meta, reset_log });
                        }
                        Err(crate::error::HandlerError::Storage(e)) => {
                            // A failed write or fsync of the snapshot store is fail-stop,
                            // as in the log store: after it, what the disk holds is unknown
                            // (and further syncs may fail too), so the node restarts from
                            // what is durable rather than retry on top of it.
                            let reason = format!(
                                "installing snapshot {}: snapshot store: {e}",
                                meta.last_log_id
                            );
                            tracing::error!(%reason, "stopping the node");
                            let _ = self.core.send(Input::Fatal(reason));
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(snapshot = %meta.last_log_id, error = %e, "snapshot install failed; old state kept");
                            let _ = self
                                .core
                                .send(Input::Event(Event::SnapshotInstallFailed(meta)));
                        }
                    }
                }
                ApplyJob::Build(reply) => {
                    self.building.store(true, Ordering::Release);
                    self.spawn_build(Some(reply));
                }
                ApplyJob::Stop(done) => {
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Applies entries; false if the node must stop.
    async fn apply(&mut self, entries: Vec<Entry>, waiters: Vec<(Index, Reply<Bytes>)>) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return true;
        };
        let span = tracing::debug_span!(
            "apply",
            node = self.node,
            term = last.log_id.term,
            first = first.log_id.index,
            index = last.log_id.index
        );
        let last = last.log_id.index;
        match self.handler.apply(&entries).instrument(span).await {
            Ok(results) => {
                // Before any reply: a lease read after an acknowledged write sees it.
                self.lease.set_applied(last);
                let mut results = results.into_iter().peekable();
                for (idx, reply) in waiters {
                    while results.next_if(|(i, _)| *i < idx).is_some() {}
                    let out = match results.next_if(|(i, _)| *i == idx) {
                        Some((_, r)) => r.map_err(NodeError::Rejected),
                        None => Err(NodeError::Client(ClientError::ProposalDropped)),
                    };
                    let _ = reply.send(out);
                }
                let _ = self.core.send(Input::Event(Event::Applied(last)));
                if !self.building.load(Ordering::Acquire) && self.handler.wants_snapshot() {
                    self.building.store(true, Ordering::Release);
                    self.spawn_build(None);
                }
                true
            }
            Err(e) => {
                let reason = format!("state machine failed to apply up to {last}: {e}");
                tracing::error!(%reason, "stopping the node");
                for (_, reply) in waiters {
                    let _ = reply.send(Err(NodeError::Stopped(reason.clone())));
                }
                let _ = self.core.send(Input::Fatal(reason));
                false
            }
        }
    }

    fn spawn_build(&self, reply: Option<Reply<Option<SnapshotMeta>>>) {
        let handler = self.handler.clone();
        let log = self.log.clone();
        let core = self.core.clone();
        let building = self.building.clone();
        let metrics = self.metrics.clone();
        let span = tracing::debug_span!("snapshot_build", node = self.node);
        let task = tokio::spawn(async move {
            let start = std::time::Instant::now();
            match handler.build_snapshot().instrument(span).await {
                Ok(Some(meta)) => {
                    metrics
                        .snapshot_build_duration
                        .record(start.elapsed().as_secs_f64());
                    if let Ok(r) = handler.snapshot_reader(&meta).await {
                        metrics.snapshot_bytes.set(r.len() as f64);
                    }
                    // `building` is cleared when the log store recorded it (core side).
                    let _ = log.send(LogOp::SnapshotBuilt(meta.clone()));
                    if let Some(r) = reply {
                        let _ = r.send(Ok(Some(meta)));
                    }
                }
                Ok(None) => {
                    building.store(false, Ordering::Release);
                    if let Some(r) = reply {
                        let _ = r.send(Ok(None));
                    }
                }
                Err(e) => {
                    let reason = format!("building a snapshot failed: {e}");
                    if let Some(r) = reply {
                        let _ = r.send(Err(NodeError::Stopped(reason.clone())));
                    }
                    let _ = core.send(Input::Fatal(reason));
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|t| !t.is_finished());
            t.push(task);
        }
    }
}
