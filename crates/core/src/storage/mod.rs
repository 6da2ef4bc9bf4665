//! Storage traits: the replicated log ([`LogStore`]) and snapshot files ([`SnapshotStore`]),
//! with in-memory implementations for tests, the simulator-style clusters and benchmarks.
//!
//! # The durability contract
//! Mutations ([`LogStore::append`], [`LogStore::truncate`], [`LogStore::purge`],
//! [`LogStore::save_hard_state`], [`LogStore::save_snapshot_meta`]) may be buffered. When
//! [`LogStore::sync`] returns `Ok`, every mutation made before the call is on stable storage
//! and survives a crash (power loss, SIGKILL). The runtime calls `sync` once per group of
//! queued writes (group commit) and reports entries durable only after it returns. A store
//! that fails a sync must not be used again: the runtime stops the node (fail-stop).
//!
//! After a crash, a store recovers a state in which every mutation up to the last
//! successful `sync` is present, and any later ones are either fully present or absent, in
//! order: the log is a prefix of what was written, never a log with holes.

mod dir;
mod memory;

pub use dir::{create_dir_all_synced, sync_dir};
pub use memory::{MemDisk, MemLogStore, MemSnapshotStore};

use std::io::{Read, Write};

use bytes::Bytes;

use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, LogId, SnapshotMeta, Term};

/// What a [`LogStore`] recovered when it was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredLog {
    /// Last saved hard state (the default if none was saved).
    pub hard_state: HardState,
    /// Metadata of the latest snapshot recorded with [`LogStore::save_snapshot_meta`].
    pub snapshot: Option<SnapshotMeta>,
    /// The purge point: the entry just before `entries` (`LogId::default()` if never purged).
    pub log_offset: LogId,
    /// Every entry after the purge point, in order.
    pub entries: Vec<Entry>,
}

/// The replicated log, hard state and snapshot metadata of one node.
///
/// Methods are blocking; the runtime calls them from a dedicated thread (unless
/// [`LogStore::never_blocks`]).
pub trait LogStore: Send + 'static {
    /// Reads everything recovered from stable storage.
    fn load(&mut self) -> Result<StoredLog, StorageError>;

    /// Appends entries; the first must directly follow the last entry (or the purge point
    /// when the log is empty), else [`StorageError::NotContiguous`].
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Deletes every entry with index `>= from` (a conflicting suffix).
    fn truncate(&mut self, from: Index) -> Result<(), StorageError>;

    /// Deletes every entry with index `<= up_to.index` and records `up_to` as the purge
    /// point. `up_to` may lie beyond the last entry: the log is then empty and continues
    /// after `up_to` (used when a snapshot replaces the whole log).
    fn purge(&mut self, up_to: LogId) -> Result<(), StorageError>;

    /// Saves term, vote and commit, atomically (never a mix of old and new fields).
    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError>;

    /// Records the latest durable snapshot's metadata.
    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError>;

    /// Makes every earlier mutation durable (see the module docs).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Entries with index in `from..=to`. Below the purge point:
    /// [`StorageError::Compacted`]; beyond the last entry: [`StorageError::Unavailable`].
    fn entries(&mut self, from: Index, to: Index) -> Result<Vec<Entry>, StorageError>;

    /// Term of the entry at `index` (the purge point's term for the purge point itself);
    /// `None` if the index is not in the log.
    fn term(&mut self, index: Index) -> Result<Option<Term>, StorageError>;

    /// The purge point and the last entry (the purge point if the log is empty).
    fn bounds(&self) -> (LogId, LogId);

    /// True if no method ever blocks on I/O (an in-memory store). The runtime then writes
    /// on the node's core task instead of a writer thread, saving two thread hand-offs per
    /// batch. Default: false.
    fn never_blocks(&self) -> bool {
        false
    }
}

/// A stored (or received) snapshot opened for reading: its length in bytes and a reader of
/// exactly that many bytes.
///
/// Reads are blocking (files); async code moves chunks off the runtime with
/// [`SnapshotReader::next_chunk`]. The reader checks the announced length: input that ends
/// early, or goes on past it, is an error rather than a silently short snapshot.
pub struct SnapshotReader {
    len: u64,
    pos: u64,
    inner: Box<dyn Read + Send>,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// A reader of `len` bytes from `inner`.
    pub fn new(len: u64, inner: Box<dyn Read + Send>) -> Self {
        Self { len, pos: 0, inner }
    }

    /// A reader over bytes already in memory.
    pub fn from_bytes(data: Bytes) -> Self {
        Self::new(data.len() as u64, Box::new(std::io::Cursor::new(data)))
    }

    /// Total length of the snapshot in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty snapshot.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Reads the next chunk of at most `max` bytes on a blocking thread (so a file read never
    /// stalls the async runtime); `None` at the end. Must be called inside a tokio runtime.
    /// If this future is dropped before it completes, the reader is unusable (later reads
    /// fail rather than skip data).
    pub async fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        if self.pos >= self.len {
            // Still ask the source: more bytes than announced are an error.
            return self.read_more(1).await.map(|_| None);
        }
        let want = (self.len - self.pos).min(max.max(1) as u64) as usize;
        let chunk = self.read_more(want).await?;
        Ok(Some(chunk))
    }

    /// Reads exactly `want` bytes (or checks for the end when past `len`).
    async fn read_more(&mut self, want: usize) -> std::io::Result<Bytes> {
        let inner = std::mem::replace(&mut self.inner, Box::new(Poisoned));
        let (inner, got) = crate::runtime::env::blocking(move || {
            let mut inner = inner;
            let mut buf = vec![0u8; want];
            let got = read_full(&mut inner, &mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (inner, got)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("snapshot reader task failed: {e}")))?;
        self.inner = inner;
        let buf = got?;
        if self.pos >= self.len {
            if !buf.is_empty() {
                return Err(self.too_long());
            }
            return Ok(Bytes::new());
        }
        self.pos += buf.len() as u64;
        if buf.len() < want {
            return Err(self.too_short());
        }
        Ok(Bytes::from(buf))
    }

    fn too_short(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the snapshot ends after {} of its {} bytes",
                self.pos, self.len
            ),
        )
    }

    fn too_long(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the snapshot goes on past its {} bytes", self.len),
        )
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            let mut probe = [0u8; 1];
            return match read_full(&mut self.inner, &mut probe)? {
                0 => Ok(0),
                _ => Err(self.too_long()),
            };
        }
        let max = (self.len - self.pos).min(buf.len() as u64) as usize;
        let n = loop {
            match self.inner.read(&mut buf[..max]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            return Err(self.too_short());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The stand-in for a reader lost to a cancelled [`SnapshotReader::next_chunk`].
struct Poisoned;

impl Read for Poisoned {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(
            "snapshot reader unusable: an earlier read was cancelled",
        ))
    }
}

/// The bounds check of [`LogStore::entries`], shared by the stores: `Ok(false)` for an
/// empty range (`from > to`), [`StorageError::Compacted`] below the purge point,
/// [`StorageError::Unavailable`] beyond the last entry, `Ok(true)` when `from..=to` can be
/// read. `bounds` is the store's [`LogStore::bounds`].
pub fn check_entries_range(
    from: Index,
    to: Index,
    (offset, last): (LogId, LogId),
) -> Result<bool, StorageError> {
    if from > to {
        return Ok(false);
    }
    if from <= offset.index {
        return Err(StorageError::Compacted {
            index: from,
            first_kept_after: offset.index,
        });
    }
    if to > last.index {
        return Err(StorageError::Unavailable {
            index: to,
            last: last.index,
        });
    }
    Ok(true)
}

/// Reads until `buf` is full or the input ends (retrying interrupted reads); returns the
/// bytes read, fewer than `buf.len()` only at the end of the input.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Recovers the [`StorageError`] a snapshot store's reader or writer wrapped in an
/// [`std::io::Error`] (see [`SnapshotStore::reader`]); any other I/O error is wrapped with
/// `context`.
pub fn storage_error_from_io(e: std::io::Error, context: &str) -> StorageError {
    if e.get_ref().is_some_and(|i| i.is::<StorageError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(s) = inner.downcast::<StorageError>() {
                return *s;
            }
        }
        return StorageError::Other(format!("{context}: unreadable error"));
    }
    StorageError::io(context, e)
}

/// A snapshot being written into a [`SnapshotStore`] ([`SnapshotStore::writer`]). Nothing is
/// visible in the store before [`StagedSnapshot::commit`]; dropping the writer (or the staged
/// snapshot) discards what was written.
pub trait SnapshotWriter: Write + Send {
    /// Completes the snapshot and makes its bytes durable (e.g. `fsync` of a temporary
    /// file), still under a temporary name: [`SnapshotStore::list`] and
    /// [`SnapshotStore::reader`] do not see it yet.
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedSnapshot>, StorageError>;
}

/// A completely written snapshot, durable but not yet in the store: it can be read back (to
/// install it) and then committed, or dropped to discard it.
pub trait StagedSnapshot: Send {
    /// Opens the staged bytes for reading, as [`SnapshotStore::reader`] would once committed.
    fn reader(&self) -> Result<SnapshotReader, StorageError>;

    /// Puts the snapshot into the store under its `last_log_id` (atomically replacing one
    /// with the same id: rename of the temporary file, then sync of the directory, or
    /// equivalent); returns only once that is durable.
    fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

/// Durable storage of snapshot files for the state machine handler. Each snapshot is the
/// handler's self-checking envelope (see [`crate::handler`]); a store keeps it intact or
/// reports corruption.
///
/// Snapshots stream: they are written through a [`SnapshotWriter`] and read through a
/// [`SnapshotReader`], so a store never needs to hold a whole snapshot in memory (the
/// in-memory [`MemSnapshotStore`] does, by nature).
///
/// Errors while streaming are [`std::io::Error`]s; a store reports its own failures (a
/// checksum mismatch found at the end of a read, say) as an `io::Error` wrapping the
/// [`StorageError`], which [`storage_error_from_io`] recovers.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts writing the snapshot described by `meta`.
    fn writer(&self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError>;

    /// Opens the snapshot whose last entry is `last`, if stored. Damage found before the
    /// data (a bad header) is [`StorageError::Corrupt`] here; damage in the data makes a
    /// read fail, at the latest when the reader reaches the end.
    fn reader(&self, last: LogId) -> Result<Option<SnapshotReader>, StorageError>;

    /// Every stored snapshot, oldest first.
    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError>;

    /// Deletes all but the newest `keep` snapshots.
    fn retain(&self, keep: usize) -> Result<(), StorageError>;

    /// Deletes the snapshot whose last entry is `last`, if stored (a snapshot the state
    /// machine refused to restore). A snapshot already gone is not an error. The default
    /// keeps it, for stores that cannot delete one snapshot: [`SnapshotStore::retain`]
    /// removes it in time.
    fn remove(&self, last: LogId) -> Result<(), StorageError> {
        let _ = last;
        Ok(())
    }

    /// Stores a complete snapshot durably (through [`SnapshotStore::writer`]); returns only
    /// once it is durable. Replaces a snapshot with the same `last_log_id`.
    fn save(&self, meta: &SnapshotMeta, data: Bytes) -> Result<(), StorageError> {
        let mut w = self.writer(meta)?;
        w.write_all(&data)
            .map_err(|e| storage_error_from_io(e, "writing a snapshot"))?;
        w.finish()?.commit()
    }

    /// Reads a whole stored snapshot into memory (through [`SnapshotStore::reader`]).
    /// Corruption is [`StorageError::Corrupt`]. For tests and small snapshots.
    fn load(&self, last: LogId) -> Result<Option<Bytes>, StorageError> {
        let Some(mut r) = self.reader(last)? else {
            return Ok(None);
        };
        let mut buf = Vec::with_capacity(r.len().min(64 << 20) as usize);
        r.read_to_end(&mut buf)
            .map_err(|e| storage_error_from_io(e, "reading a snapshot"))?;
        Ok(Some(Bytes::from(buf)))
    }
}
