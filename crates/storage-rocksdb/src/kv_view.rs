//! [`RocksKvView`]: a point-in-time view of a [`crate::RocksKvStateMachine`], for snapshots
//! written while applies go on.
//!
//! A RocksDB snapshot borrows the database (`SnapshotWithThreadMode<'a, _>`), and the
//! workspace forbids `unsafe` code, so the snapshot cannot be stored next to the `Arc` of
//! the database it borrows. Instead a dedicated thread owns a clone of the `Arc`, takes the
//! snapshot on its own stack, reports back ("captured") before
//! [`crate::RocksKvStateMachine::view`] returns, and later streams the snapshot's bytes to
//! [`SnapshotView::write_to`] through a bounded channel.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use lockstep_core::error::{StateMachineError, StorageError};
use lockstep_core::state_machine::SnapshotView;
use lockstep_core::LogId;

use crate::error::{Result, RocksStoreError};
use crate::kv::{capture, stream_snapshot, Db};

/// Pieces of snapshot output in flight between the view's thread and the writer: with the
/// writer's 64 KiB pieces, at most about 256 KiB are buffered whatever the state's size.
const CHANNEL_PIECES: usize = 4;

/// What the view's thread reports once its snapshot is taken: key count and last applied
/// id, or why it could not take it.
type CapturedReport = Result<(u64, Option<LogId>)>;

/// A point-in-time view of a [`crate::RocksKvStateMachine`]: a RocksDB snapshot taken by
/// [`crate::RocksKvStateMachine::view`] (or [`lockstep_core::StateMachine::snapshot_view`]).
///
/// [`SnapshotView::write_to`] writes exactly the bytes [`lockstep_core::StateMachine::snapshot`]
/// would have written at the moment the view was taken, whatever was applied (or restored)
/// since, in the [`lockstep_core::KvStateMachine`] snapshot format.
///
/// Costs while the view lives: one thread, parked until `write_to` (or the view's drop);
/// RocksDB keeps the versions the snapshot sees (overwritten and deleted keys are not
/// compacted away) and the database stays open even if the machine is dropped. Memory in
/// `write_to` is bounded (a few 64 KiB pieces in flight).
pub struct RocksKvView {
    count: u64,
    last_applied: Option<LogId>,
    /// One message starts the stream; dropping it unsent ends the thread.
    start: SyncSender<()>,
    pieces: Receiver<Vec<u8>>,
    thread: JoinHandle<std::result::Result<(), StateMachineError>>,
}

impl std::fmt::Debug for RocksKvView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKvView")
            .field("count", &self.count)
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

/// Hands each write to the view's reader as one piece.
struct ChannelWriter {
    tx: SyncSender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx.send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the snapshot view's reader stopped",
            )
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RocksKvView {
    /// Starts the view's thread and waits until it has taken its snapshot. The caller holds
    /// the machine's state lock.
    pub(crate) fn start(db: Arc<Db>, path: PathBuf) -> Result<Self> {
        let (captured_tx, captured_rx) = mpsc::sync_channel::<CapturedReport>(1);
        let (start_tx, start_rx) = mpsc::sync_channel::<()>(1);
        let (piece_tx, piece_rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_PIECES);
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("rocks-kv-view".into())
            .spawn(move || -> std::result::Result<(), StateMachineError> {
                let path = thread_path;
                // `db` outlives everything borrowed from it below.
                let db = db;
                let captured = match capture(&db, &path) {
                    Ok(c) => {
                        let _ = captured_tx.send(Ok((c.count, c.last_applied)));
                        c
                    }
                    Err(e) => {
                        let _ = captured_tx.send(Err(e));
                        return Ok(());
                    }
                };
                drop(captured_tx);
                if start_rx.recv().is_err() {
                    // The view was dropped without being written.
                    return Ok(());
                }
                let mut out = ChannelWriter { tx: piece_tx };
                stream_snapshot(&path, &captured, &mut out)
            })
            .map_err(|e| RocksStoreError::Io {
                op: "spawning the snapshot view thread for",
                path: path.clone(),
                source: e,
            })?;
        match captured_rx.recv() {
            Ok(Ok((count, last_applied))) => Ok(Self {
                count,
                last_applied,
                start: start_tx,
                pieces: piece_rx,
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let why = panic_text(thread.join().err());
                Err(RocksStoreError::ViewThread {
                    path,
                    detail: format!("it stopped before taking its snapshot: {why}"),
                })
            }
        }
    }

    /// Number of keys in the view.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the view holds no key.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last entry applied when the view was taken (the entry its state includes).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }
}

fn panic_text(p: Option<Box<dyn std::any::Any + Send>>) -> String {
    match p {
        None => "no panic".into(),
        Some(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
    }
}

impl SnapshotView for RocksKvView {
    fn write_to(self: Box<Self>, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        let RocksKvView {
            start,
            pieces,
            thread,
            ..
        } = *self;
        // The thread waits for this (it cannot have gone: it only ends on its own after a
        // failed capture, and then no view exists).
        let _ = start.send(());
        drop(start);
        let mut failed = None;
        for piece in pieces.iter() {
            if let Err(e) = out.write_all(&piece) {
                failed = Some(e);
                break;
            }
        }
        // Dropping the receiver makes a thread still writing stop with a broken pipe.
        drop(pieces);
        let streamed = thread.join().map_err(|p| {
            StateMachineError::Other(format!(
                "the snapshot view thread panicked: {}",
                panic_text(Some(p))
            ))
        })?;
        if let Some(e) = failed {
            return Err(StorageError::io("writing the kv snapshot", e).into());
        }
        streamed?;
        out.flush()
            .map_err(|e| StorageError::io("writing the kv snapshot", e))?;
        Ok(())
    }
}
