//! # lockstep-storage-sled
//!
//! lockstep storage on [sled](https://docs.rs/sled/0.34), a pure-Rust embedded database:
//!
//! - [`SledLogStore`]: a [`lockstep_core::LogStore`] keeping entries, hard state, snapshot
//!   metadata and the purge point in two sled trees; appends are sled batches, and each
//!   [`lockstep_core::LogStore::sync`] is one [`sled::Tree::flush`] (group commit).
//! - [`SledKvStateMachine`]: a durable key-value [`lockstep_core::StateMachine`] with the
//!   commands, queries, answers and snapshot format of [`lockstep_core::KvStateMachine`];
//!   each applied chunk and its last-applied id are written in one atomic batch and flushed
//!   before `apply_chunk` returns, so a restarted node skips what it already applied.
//!
//! Both can live in one sled database ([`SledLogStore::with_db`],
//! [`SledKvStateMachine::with_db`]) or in directories of their own (`open`). Snapshot files
//! are not stored in sled: pair the log store with a file-based
//! [`lockstep_core::SnapshotStore`] such as `lockstep_storage_file::FileSnapshotStore`.
//!
//! sled 0.34 is beta software whose on-disk format may change between versions; see
//! `docs/storage-sled.md` for its durability caveats.

mod error;
mod kv;
mod kv_view;
mod log;
mod util;

pub use error::SledStoreError;
pub use kv::{SledKvStateMachine, KV_DATA_TREE_PREFIX, KV_META_TREE};
pub use kv_view::SledKvView;
pub use log::{SledLogStore, LOG_META_TREE, LOG_TREE};
