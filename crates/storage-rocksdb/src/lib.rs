//! # lockstep-storage-rocksdb
//!
//! lockstep storage on [RocksDB](https://rocksdb.org) (through the `rocksdb` crate, which
//! builds RocksDB from source):
//!
//! - [`RocksLogStore`]: a [`lockstep_core::LogStore`] keeping log entries, hard state and
//!   snapshot metadata in separate column families. Appends, truncations and purges are
//!   `WriteBatch`es written to RocksDB's write-ahead log without sync; one WAL sync per
//!   [`lockstep_core::LogStore::sync`] makes them durable (group commit).
//! - [`RocksKvStateMachine`]: a durable [`lockstep_core::StateMachine`] with the commands,
//!   queries, answers and snapshot format of [`lockstep_core::KvStateMachine`]; each
//!   applied chunk and its last-applied id are one synced `WriteBatch`, snapshots stream
//!   from a RocksDB snapshot (also as a point-in-time [`RocksKvView`], taken while the
//!   handler holds back applies and written after it lets them go on), and restores switch
//!   to a new column family atomically.
//!
//! Use a separate directory for each: a log store and a state machine never share a
//! database, and each refuses to open the other's (or another backend's) directory.
//!
//! See `docs/storage-rocksdb.md` for durability details and build requirements.

mod error;
mod kv;
mod kv_view;
mod log;
mod util;

pub use error::RocksStoreError;
pub use kv::RocksKvStateMachine;
pub use kv_view::RocksKvView;
pub use log::RocksLogStore;

/// On-disk layout details (column family names, key encodings, format markers), for tools
/// and tests that inspect or damage a database on purpose.
pub mod format {
    pub use crate::kv::{data_cf_name, KV_DATA_CF_PREFIX, KV_FORMAT, KV_META_CF};
    pub use crate::log::{log_key, HARD_STATE_CF, LOG_CF, LOG_FORMAT, LOG_META_CF};
}
