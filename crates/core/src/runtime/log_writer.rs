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

/// What a log writer owns.
pub(crate) struct Writer {
    pub(crate) id: u64,
    pub(crate) store: Box<dyn LogStore>,
    pub(crate) ops: mpsc::UnboundedReceiver<LogOp>,
    pub(crate) core: mpsc::UnboundedSender<Input>,
    pub(crate) killed: Arc<AtomicBool>,
    pub(crate) metrics: Arc<super::metrics::NodeMetrics>,
}

impl Writer {
    /// Moves everything queued behind `first` into `batch`.
    fn gather(&mut self, first: LogOp, batch: &mut Vec<LogOp>) {
        batch.push(first);
        while let Ok(op) = self.ops.try_recv() {
            batch.push(op);
        }
    }

    /// Writes and syncs a batch and reports its completions; false once the writer must
    /// exit (asked to, crashed or failed).
    fn run(&mut self, batch: &mut Vec<LogOp>) -> bool {
        if self.killed.load(Ordering::Acquire) {
            // A simulated crash: whatever was not synced is lost.
            return false;
        }
        match run_batch(self.store.as_mut(), batch, &self.killed, &self.metrics) {
            Ok((events, stop)) => {
                self.report(events);
                !stop
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn report(&self, events: Vec<Event>) {
        for e in events {
            let _ = self.core.send(Input::Event(e));
        }
    }

    fn fail(&self, e: crate::error::StorageError) {
        tracing::error!(node = self.id, error = %e, "log store failed; stopping the node");
        let _ = self.core.send(Input::Fatal(format!("log store: {e}")));
    }
}

/// Starts the writer thread.
pub(crate) fn spawn(mut w: Writer) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lockstep-log-{}", w.id))
        .spawn(move || {
            let mut batch = Vec::new();
            while let Some(op) = w.ops.blocking_recv() {
                w.gather(op, &mut batch);
                if !w.run(&mut batch) {
                    return;
                }
            }
        })
}

/// Starts the writer as a task of a simulated runtime: each batch takes `latency()` of
/// simulated time (the writes and their sync) before its completions are reported; writes
/// queued meanwhile wait for the next batch, as they do behind a thread's `fsync`.
pub(crate) fn spawn_task(
    mut w: Writer,
    latency: Arc<dyn Fn() -> std::time::Duration + Send + Sync>,
    gate: super::env::StallGate,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(op) = w.ops.recv().await {
            w.gather(op, &mut batch);
            gate.passed().await;
            if w.killed.load(Ordering::Acquire) {
                return;
            }
            // The writes land in the page cache at once; the sync takes the time (a crash
            // meanwhile leaves them written and not durable).
            let done = match write_batch(w.store.as_mut(), &mut batch, &w.killed) {
                Ok(done) => done,
                Err(e) => {
                    w.fail(e);
                    return;
                }
            };
            if done.killed {
                return;
            }
            let stop = done.stop;
            let planted = super::env::planted().durable_before_sync;
            let events = if planted {
                // Planted bug: the batch is reported durable, then synced.
                w.report(done.events());
                None
            } else {
                Some(done.events())
            };
            tokio::time::sleep(latency()).await;
            gate.passed().await;
            if w.killed.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = w.store.sync() {
                w.fail(e);
                return;
            }
            if let Some(events) = events {
                w.report(events);
            }
            if stop {
                return;
            }
        }
    })
}

/// A batch written but not yet synced.
pub(crate) struct Written {
    hs: Option<HardState>,
    entries: usize,
    write: Option<(u64, LogId)>,
    snaps: Vec<Event>,
    stop: bool,
    killed: bool,
}

impl Written {
    /// The completions to report once the batch is durable.
    fn events(self) -> Vec<Event> {
        let mut events = Vec::with_capacity(2 + self.snaps.len());
        if let Some(h) = self.hs {
            events.push(Event::HardStateSaved(h));
        }
        if let Some((write, last)) = self.write {
            events.push(Event::LogDurable { last, write });
        }
        events.extend(self.snaps);
        events
    }
}

/// Executes a batch of writes and one sync; returns the completions to report.
pub(crate) fn run_batch(
    store: &mut dyn LogStore,
    batch: &mut Vec<LogOp>,
    killed: &AtomicBool,
    metrics: &super::metrics::NodeMetrics,
) -> Result<(Vec<Event>, bool), crate::error::StorageError> {
    let done = write_batch(store, batch, killed)?;
    if done.killed || killed.load(Ordering::Acquire) {
        return Ok((Vec::new(), true));
    }
    let _span = tracing::debug_span!(
        "log_sync",
        node = metrics.node_id(),
        entries = done.entries,
        index = store.bounds().1.index,
        term = store.bounds().1.term
    )
    .entered();
    let synced = std::time::Instant::now();
    store.sync()?;
    metrics
        .log_sync_duration
        .record(synced.elapsed().as_secs_f64());
    metrics.log_sync_entries.record(done.entries as f64);
    let stop = done.stop;
    Ok((done.events(), stop))
}

/// Executes a batch of writes, without the final sync.
fn write_batch(
    store: &mut dyn LogStore,
    batch: &mut Vec<LogOp>,
    killed: &AtomicBool,
) -> Result<Written, crate::error::StorageError> {
    let mut w = Written {
        hs: None,
        entries: 0,
        write: None,
        snaps: Vec::new(),
        stop: false,
        killed: false,
    };
    for op in batch.drain(..) {
        match op {
            LogOp::HardState(h) => {
                store.save_hard_state(&h)?;
                w.hs = Some(h);
            }
            LogOp::Truncate { from, write } => {
                store.truncate(from)?;
                w.write = Some((write, store.bounds().1));
            }
            LogOp::Append { entries, write } => {
                store.append(&entries)?;
                w.entries += entries.len();
                w.write = Some((write, store.bounds().1));
            }
            LogOp::Purge(up_to) => store.purge(up_to)?,
            LogOp::SnapshotBuilt(meta) => {
                store.save_snapshot_meta(&meta)?;
                w.snaps.push(Event::SnapshotBuilt(meta));
            }
            LogOp::SnapshotInstalled { meta, reset_log } => {
                if super::env::planted().purge_before_snapshot_meta {
                    // Planted bug: the log goes before the snapshot that replaces it is
                    // recorded.
                    if reset_log {
                        let (offset, _) = store.bounds();
                        store.truncate(offset.index + 1)?;
                    }
                    store.purge(meta.last_log_id)?;
                    store.save_snapshot_meta(&meta)?;
                    w.snaps.push(Event::SnapshotInstalled(meta));
                    continue;
                }
                // The snapshot is recorded durably before any entry goes: a crash in
                // between must never leave a log purged past the snapshot it names (which
                // no start can recover from). A crash after the record and before the log
                // is fixed up is completed at the next start (`recovery::complete_install`).
                store.save_snapshot_meta(&meta)?;
                if killed.load(Ordering::Acquire) {
                    w.killed = true;
                    return Ok(w);
                }
                store.sync()?;
                if reset_log {
                    let (offset, _) = store.bounds();
                    store.truncate(offset.index + 1)?;
                }
                store.purge(meta.last_log_id)?;
                w.snaps.push(Event::SnapshotInstalled(meta));
            }
            LogOp::Stop => w.stop = true,
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MembershipConfig;
    use crate::storage::{MemDisk, MemLogStore, StoredLog};
    use crate::types::{EntryPayload, Term};

    /// A store whose purges and truncations are durable at once (as a file store's unlink of
    /// whole segments is), and which keeps what a crash right after each of them would leave.
    struct EagerDeletes {
        inner: MemLogStore,
        crashes: Vec<StoredLog>,
    }

    impl EagerDeletes {
        fn crash_now(&mut self) -> Result<(), crate::error::StorageError> {
            // Only what was already synced, plus this deletion, survives.
            let disk: MemDisk = self.inner.disk();
            self.crashes.push(disk.open().load()?);
            Ok(())
        }
    }

    impl LogStore for EagerDeletes {
        fn load(&mut self) -> Result<StoredLog, crate::error::StorageError> {
            self.inner.load()
        }
        fn append(&mut self, e: &[Entry]) -> Result<(), crate::error::StorageError> {
            self.inner.append(e)
        }
        fn truncate(&mut self, from: Index) -> Result<(), crate::error::StorageError> {
            // Durable at once: a copy that syncs only the deletion.
            let mut d = self.inner.disk().open();
            d.truncate(from)?;
            d.sync()?;
            self.inner.truncate(from)?;
            self.crash_now()
        }
        fn purge(&mut self, up_to: LogId) -> Result<(), crate::error::StorageError> {
            let mut d = self.inner.disk().open();
            d.purge(up_to)?;
            d.sync()?;
            self.inner.purge(up_to)?;
            self.crash_now()
        }
        fn save_hard_state(&mut self, hs: &HardState) -> Result<(), crate::error::StorageError> {
            self.inner.save_hard_state(hs)
        }
        fn save_snapshot_meta(
            &mut self,
            m: &SnapshotMeta,
        ) -> Result<(), crate::error::StorageError> {
            self.inner.save_snapshot_meta(m)
        }
        fn sync(&mut self) -> Result<(), crate::error::StorageError> {
            self.inner.sync()
        }
        fn entries(
            &mut self,
            from: Index,
            to: Index,
        ) -> Result<Vec<Entry>, crate::error::StorageError> {
            self.inner.entries(from, to)
        }
        fn term(&mut self, index: Index) -> Result<Option<Term>, crate::error::StorageError> {
            self.inner.term(index)
        }
        fn bounds(&self) -> (LogId, LogId) {
            self.inner.bounds()
        }
    }

    fn e(term: Term, index: Index) -> Entry {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    /// Regression (a crash during snapshot install bricked the node): the log writer made
    /// the purge durable before the snapshot record, so a crash in between left "log purged
    /// up to 1-120 but the snapshot only covers 0-0" and every start failed with
    /// `PurgedBeyondSnapshot`. Every crash point must leave a log that starts at or before
    /// the snapshot it names.
    #[test]
    fn a_crash_at_any_point_of_a_snapshot_install_leaves_a_startable_log_7() {
        for reset_log in [false, true] {
            let mut inner = MemLogStore::new();
            inner.append(&[e(1, 1), e(1, 2), e(1, 3)]).unwrap();
            inner.sync().unwrap();
            let mut store = EagerDeletes {
                inner,
                crashes: Vec::new(),
            };
            let meta = SnapshotMeta {
                last_log_id: LogId::new(1, 120),
                membership: MembershipConfig::default(),
            };
            let mut batch = vec![LogOp::SnapshotInstalled {
                meta: meta.clone(),
                reset_log,
            }];
            let (events, _) = run_batch(
                &mut store,
                &mut batch,
                &AtomicBool::new(false),
                &crate::runtime::metrics::NodeMetrics::new(1),
            )
            .unwrap();
            assert!(matches!(events.as_slice(), [Event::SnapshotInstalled(m)] if *m == meta));
            assert!(!store.crashes.is_empty());
            for crashed in &store.crashes {
                let named = crashed.snapshot.as_ref().map_or(0, |m| m.last_log_id.index);
                assert!(
                    crashed.log_offset.index <= named,
                    "log purged up to {} but the snapshot only covers {named} (reset_log: {reset_log})",
                    crashed.log_offset
                );
            }
        }
    }
}
