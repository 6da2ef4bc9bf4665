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

mod memory;

pub use memory::{MemDisk, MemLogStore, MemSnapshotStore};

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

/// Durable storage of snapshot files for the state machine handler. Each snapshot is the
/// handler's self-checking envelope (see [`crate::handler`]); a store keeps it intact or
/// reports corruption.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores a complete snapshot durably (write to a temporary name, sync, rename, sync the
    /// directory, or equivalent); returns only once it is durable. Replaces a snapshot with
    /// the same `last_log_id`.
    fn save(&self, meta: &SnapshotMeta, data: Bytes) -> Result<(), StorageError>;

    /// The snapshot whose last entry is `last`, if stored. Corruption is
    /// [`StorageError::Corrupt`].
    fn load(&self, last: LogId) -> Result<Option<Bytes>, StorageError>;

    /// Every stored snapshot, oldest first.
    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError>;

    /// Deletes all but the newest `keep` snapshots.
    fn retain(&self, keep: usize) -> Result<(), StorageError>;
}
