//! The log writer: a dedicated thread that owns the [`LogStore`] and executes the protocol's
//! log writes in order with group commit — everything queued is written, then made durable
//! with one `sync`, and only then reported durable. An error stops the node (fail-stop):
//! nothing is acknowledged after a failed write or sync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::input::Input;
use crate::event::Event;
use crate::storage::LogStore;
use crate::types::{Entry, HardState, Index, LogId, SnapshotMeta};

/// A write for the log writer.
#[derive(Debug)]
pub(crate) enum LogOp {
    HardState(HardState),
    Truncate {
        from: Index,
        write: u64,
    },
    Append {
        entries: Vec<Entry>,
        write: u64,
    },
    Purge(LogId),
    /// A snapshot was built: record it, then report [`Event::SnapshotBuilt`].
    SnapshotBuilt(SnapshotMeta),
    /// A snapshot was installed in the state machine: fix up the log, record it, then report
    /// [`Event::SnapshotInstalled`].
    SnapshotInstalled {
        meta: SnapshotMeta,
        reset_log: bool,
    },
    /// Make everything durable and exit.
    Stop,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    id: u64,
    mut store: Box<dyn LogStore>,
    mut ops: mpsc::UnboundedReceiver<LogOp>,
    core: mpsc::UnboundedSender<Input>,
    killed: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lockstep-log-{id}"))
        .spawn(move || {
            let mut batch = Vec::new();
            while let Some(op) = ops.blocking_recv() {
                batch.push(op);
                while let Ok(op) = ops.try_recv() {
                    batch.push(op);
                }
                if killed.load(Ordering::Acquire) {
                    // A simulated crash: whatever was not synced is lost.
                    return;
                }
                match run_batch(store.as_mut(), &mut batch, &killed) {
                    Ok((events, stop)) => {
                        for e in events {
                            let _ = core.send(Input::Event(e));
                        }
                        if stop {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(node = id, error = %e, "log store failed; stopping the node");
                        let _ = core.send(Input::Fatal(format!("log store: {e}")));
                        return;
                    }
                }
            }
        })
}

/// Executes a batch of writes and one sync; returns the completions to report.
pub(crate) fn run_batch(
    store: &mut dyn LogStore,
    batch: &mut Vec<LogOp>,
    killed: &AtomicBool,
) -> Result<(Vec<Event>, bool), crate::error::StorageError> {
    let mut hs = None;
    let mut write = None;
    let mut snaps = Vec::new();
    let mut stop = false;
    for op in batch.drain(..) {
        match op {
            LogOp::HardState(h) => {
                store.save_hard_state(&h)?;
                hs = Some(h);
            }
            LogOp::Truncate { from, write: w } => {
                store.truncate(from)?;
                write = Some((w, store.bounds().1));
            }
            LogOp::Append { entries, write: w } => {
                store.append(&entries)?;
                write = Some((w, store.bounds().1));
            }
            LogOp::Purge(up_to) => store.purge(up_to)?,
            LogOp::SnapshotBuilt(meta) => {
                store.save_snapshot_meta(&meta)?;
                snaps.push(Event::SnapshotBuilt(meta));
            }
            LogOp::SnapshotInstalled { meta, reset_log } => {
                if reset_log {
                    let (offset, _) = store.bounds();
                    store.truncate(offset.index + 1)?;
                }
                store.purge(meta.last_log_id)?;
                store.save_snapshot_meta(&meta)?;
                snaps.push(Event::SnapshotInstalled(meta));
            }
            LogOp::Stop => stop = true,
        }
    }
    if killed.load(Ordering::Acquire) {
        return Ok((Vec::new(), true));
    }
    store.sync()?;
    let mut events = Vec::with_capacity(2 + snaps.len());
    if let Some(h) = hs {
        events.push(Event::HardStateSaved(h));
    }
    if let Some((write, last)) = write {
        events.push(Event::LogDurable { last, write });
    }
    events.extend(snaps);
    Ok((events, stop))
}
