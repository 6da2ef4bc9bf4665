//! # lockstep-storage-file
//!
//! lockstep's default, pure-Rust storage:
//!
//! - [`FileLogStore`]: a [`lockstep_core::LogStore`] over a segmented, append-only
//!   write-ahead log. Each record is length-prefixed and CRC32C-checksummed; segments roll
//!   at a configurable size; an in-memory index of record offsets serves range reads; one
//!   `fdatasync` per [`lockstep_core::LogStore::sync`] makes every queued write durable
//!   (group commit). Hard state, snapshot metadata and the purge point live in a
//!   double-slot checksummed record. Recovery cuts a torn tail and reports any other
//!   damage with the segment file and byte offset, changing nothing.
//! - [`FileSnapshotStore`]: a [`lockstep_core::SnapshotStore`] with one checksummed file per
//!   snapshot, written to a temporary name, synced and renamed.
//!
//! ## Directory layout of a log store
//! - `<first index, 20 digits>.wal`: segments (format in [`format`]).
//! - `meta-a`, `meta-b`: the two slots of the metadata record.
//!
//! ## Filesystem
//! Both stores do all their I/O through a [`lockstep_core::fs::Fs`]. `open`/`open_with` use
//! the real filesystem ([`lockstep_core::fs::StdFs`], Unix only: positioned reads and
//! writes); [`FileLogStore::open_in`], [`FileLogStore::open_in_with`] and
//! [`FileSnapshotStore::open_in`] take any other, such as the simulated disk
//! [`lockstep_core::fs::SimFs`] of a deterministic simulator, which loses what was not
//! synced when it crashes.

mod error;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod meta;
mod record;
mod recovery;
mod segment;
#[cfg(feature = "testing")]
pub mod sim;
mod snapshot;
mod store;

pub use error::FileStoreError;
pub use snapshot::{snapshot_name, FileSnapshotStore};
pub use store::{FileLogOptions, FileLogStore};

/// On-disk format details, for tools and tests that build or damage files on purpose.
pub mod format {
    pub use crate::record::{
        encode_header, encode_record, HEADER_LEN, MAX_RECORD_LEN, RECORD_HEADER_LEN, SEGMENT_MAGIC,
        SEGMENT_VERSION,
    };
    pub use crate::segment::{parse_segment_name, segment_name};
}
