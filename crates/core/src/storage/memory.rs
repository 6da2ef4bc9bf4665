//! In-memory [`LogStore`] and [`SnapshotStore`]: no durability across processes, but they
//! keep a "durable" image that survives a simulated crash ([`MemLogStore::crash_copy`]),
//! which is what tests of the runtime need.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{LogStore, SnapshotReader, SnapshotStore, SnapshotWriter, StagedSnapshot, StoredLog};
use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, LogId, SnapshotMeta, Term};

#[derive(Clone, Debug, Default)]
struct Image {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    offset: LogId,
    entries: VecDeque<Entry>,
}

impl Image {
    fn last(&self) -> LogId {
        self.entries.back().map_or(self.offset, |e| e.log_id)
    }

    /// Applies `op`, taking its entries (the durable image, from the pending queue).
    fn apply_owned(&mut self, op: Op) {
        match op {
            Op::Append(entries) => self.entries.extend(entries),
            other => self.apply(&other),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => self.entries.extend(entries.iter().cloned()),
            Op::Truncate(from) => {
                let keep = from.saturating_sub(self.offset.index + 1) as usize;
                self.entries.truncate(keep);
            }
            Op::Purge(up_to) => {
                if up_to.index > self.offset.index {
                    let n = ((up_to.index - self.offset.index) as usize).min(self.entries.len());
                    self.entries.drain(..n);
                    self.offset = *up_to;
                }
            }
            Op::HardState(hs) => self.hard_state = *hs,
            Op::Snapshot(m) => self.snapshot = Some(m.clone()),
        }
    }
}

/// A mutation not yet synced.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    Truncate(Index),
    Purge(LogId),
    HardState(HardState),
    Snapshot(SnapshotMeta),
}

/// An in-memory log store. `sync` copies the working image into a shared "durable" image;
/// [`MemLogStore::crash_copy`] opens a new store on that durable image only, as a restarted
/// process would find it.
#[derive(Debug, Default)]
pub struct MemLogStore {
    work: Image,
    /// Mutations since the last sync, replayed onto the durable image by `sync`.
    pending: Vec<Op>,
    durable: Arc<Mutex<Image>>,
    /// Test hook: the next `sync` fails (to exercise fail-stop).
    fail_sync: Arc<Mutex<bool>>,
}

/// The "disk" under a [`MemLogStore`]: what its last successful `sync` made durable. Opening
/// it again gives the store a restarted process would find after a crash.
#[derive(Clone, Debug, Default)]
pub struct MemDisk(Arc<Mutex<Image>>);

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// The term and vote this disk holds durably (for the simulator's vote check).
    #[cfg(any(test, feature = "testing"))]
    pub fn durable_hard_state(&self) -> HardState {
        self.0.lock().map(|img| img.hard_state).unwrap_or_default()
    }

    /// What this disk holds durably at `index` (for the simulator's durability check).
    #[cfg(any(test, feature = "testing"))]
    pub fn durable_at(&self, index: Index) -> crate::sim::production::Held {
        use crate::sim::production::Held;
        let Ok(img) = self.0.lock() else {
            return Held::Nothing;
        };
        if img
            .snapshot
            .as_ref()
            .is_some_and(|s| s.last_log_id.index >= index)
        {
            return Held::Snapshot;
        }
        index
            .checked_sub(img.offset.index + 1)
            .and_then(|p| img.entries.get(p as usize))
            .map_or(Held::Nothing, |e| Held::Entry(e.log_id.term))
    }

    /// Opens a store on this disk, recovering only what was synced.
    pub fn open(&self) -> MemLogStore {
        let img = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        MemLogStore {
            work: img,
            pending: Vec::new(),
            durable: self.0.clone(),
            fail_sync: Arc::default(),
        }
    }
}

impl MemLogStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, op: Op) {
        self.work.apply(&op);
        self.pending.push(op);
    }

    /// The disk under this store.
    pub fn disk(&self) -> MemDisk {
        MemDisk(self.durable.clone())
    }

    /// A store that recovers the durable image of this one (what survives a crash).
    pub fn crash_copy(&self) -> Self {
        self.disk().open()
    }

    /// A handle that makes the next `sync` fail, for fail-stop tests.
    pub fn sync_failure_switch(&self) -> Arc<Mutex<bool>> {
        self.fail_sync.clone()
    }

    fn pos(&self, index: Index) -> Option<usize> {
        index
            .checked_sub(self.work.offset.index + 1)
            .map(|p| p as usize)
            .filter(|p| *p < self.work.entries.len())
    }
}

impl LogStore for MemLogStore {
    fn load(&mut self) -> Result<StoredLog, StorageError> {
        Ok(StoredLog {
            hard_state: self.work.hard_state,
            snapshot: self.work.snapshot.clone(),
            log_offset: self.work.offset,
            entries: self.work.entries.iter().cloned().collect(),
        })
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.work.last();
        if first.log_id.index != last.index + 1 {
            return Err(StorageError::NotContiguous {
                last,
                found: first.log_id,
            });
        }
        self.record(Op::Append(entries.to_vec()));
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        self.record(Op::Truncate(from));
        Ok(())
    }

    fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.record(Op::Purge(up_to));
        Ok(())
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.record(Op::HardState(*hs));
        Ok(())
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.record(Op::Snapshot(meta.clone()));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if let Ok(mut f) = self.fail_sync.lock() {
            if std::mem::take(&mut *f) {
                return Err(StorageError::io(
                    "memory log store: injected sync failure",
                    std::io::Error::other("injected"),
                ));
            }
        }
        match self.durable.lock() {
            Ok(mut d) => {
                for op in self.pending.drain(..) {
                    d.apply_owned(op);
                }
                Ok(())
            }
            Err(_) => Err(StorageError::Other("memory log store lock poisoned".into())),
        }
    }

    fn entries(&mut self, from: Index, to: Index) -> Result<Vec<Entry>, StorageError> {
        if from > to {
            return Ok(Vec::new());
        }
        if from <= self.work.offset.index {
            return Err(StorageError::Compacted {
                index: from,
                first_kept_after: self.work.offset.index,
            });
        }
        match (self.pos(from), self.pos(to)) {
            (Some(a), Some(b)) => Ok(self.work.entries.range(a..=b).cloned().collect()),
            _ => Err(StorageError::Unavailable {
                index: to,
                last: self.work.last().index,
            }),
        }
    }

    fn term(&mut self, index: Index) -> Result<Option<Term>, StorageError> {
        if index == self.work.offset.index {
            return Ok(Some(self.work.offset.term));
        }
        Ok(self.pos(index).map(|p| self.work.entries[p].log_id.term))
    }

    fn bounds(&self) -> (LogId, LogId) {
        (self.work.offset, self.work.last())
    }

    fn never_blocks(&self) -> bool {
        true
    }
}

/// An in-memory snapshot store. Clones share the same snapshots (so a "restarted" node in a
/// test finds them).
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    snaps: Arc<Mutex<Snapshots>>,
}

type Snapshots = BTreeMap<LogId, (SnapshotMeta, Bytes)>;

impl MemSnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Snapshots>, StorageError> {
        self.snaps
            .lock()
            .map_err(|_| StorageError::Other("memory snapshot store lock poisoned".into()))
    }
}

impl SnapshotStore for MemSnapshotStore {
    fn writer(&self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::new(MemSnapshotWriter {
            store: self.clone(),
            meta: meta.clone(),
            buf: Vec::new(),
        }))
    }

    fn reader(&self, last: LogId) -> Result<Option<SnapshotReader>, StorageError> {
        Ok(self
            .lock()?
            .get(&last)
            .map(|(_, d)| SnapshotReader::from_bytes(d.clone())))
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        Ok(self.lock()?.values().map(|(m, _)| m.clone()).collect())
    }

    fn retain(&self, keep: usize) -> Result<(), StorageError> {
        let mut s = self.lock()?;
        while s.len() > keep {
            s.pop_first();
        }
        Ok(())
    }

    fn remove(&self, last: LogId) -> Result<(), StorageError> {
        self.lock()?.remove(&last);
        Ok(())
    }
}

/// A snapshot being written into a [`MemSnapshotStore`].
struct MemSnapshotWriter {
    store: MemSnapshotStore,
    meta: SnapshotMeta,
    buf: Vec<u8>,
}

impl Write for MemSnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SnapshotWriter for MemSnapshotWriter {
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedSnapshot>, StorageError> {
        let w = *self;
        Ok(Box::new(MemStaged {
            store: w.store,
            meta: w.meta,
            data: Bytes::from(w.buf),
        }))
    }
}

/// A complete snapshot not yet in its [`MemSnapshotStore`].
struct MemStaged {
    store: MemSnapshotStore,
    meta: SnapshotMeta,
    data: Bytes,
}

impl StagedSnapshot for MemStaged {
    fn reader(&self) -> Result<SnapshotReader, StorageError> {
        Ok(SnapshotReader::from_bytes(self.data.clone()))
    }

    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let s = *self;
        s.store.lock()?.insert(s.meta.last_log_id, (s.meta, s.data));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn e(term: Term, index: Index) -> Entry {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn only_synced_writes_survive_a_crash() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2)]).unwrap();
        s.sync().unwrap();
        s.append(&[e(1, 3)]).unwrap();
        let mut c = s.crash_copy();
        assert_eq!(c.load().unwrap().entries, vec![e(1, 1), e(1, 2)]);
    }

    #[test]
    fn purge_beyond_the_end_leaves_an_empty_log_after_the_point() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2)]).unwrap();
        s.purge(LogId::new(3, 10)).unwrap();
        assert_eq!(s.bounds(), (LogId::new(3, 10), LogId::new(3, 10)));
        s.append(&[e(3, 11)]).unwrap();
        assert!(matches!(
            s.entries(5, 11),
            Err(StorageError::Compacted { .. })
        ));
        assert_eq!(s.entries(11, 11).unwrap(), vec![e(3, 11)]);
    }

    #[test]
    fn a_gap_in_appends_is_refused() {
        let mut s = MemLogStore::new();
        let err = s.append(&[e(1, 2)]).unwrap_err();
        assert!(matches!(err, StorageError::NotContiguous { .. }), "{err}");
    }
}
