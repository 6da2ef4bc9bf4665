//! The RocksDB backend's error type and its mapping to [`StorageError`].

use std::path::{Path, PathBuf};

use lockstep_core::error::StateMachineError;
use lockstep_core::StorageError;

/// What went wrong in [`crate::RocksLogStore`] or [`crate::RocksKvStateMachine`].
#[derive(Debug, thiserror::Error)]
pub enum RocksStoreError {
    /// A RocksDB call failed.
    #[error("rocksdb {op} in {}: {source}", path.display())]
    Rocks {
        /// What was being done (`"open"`, `"write"`, `"sync the WAL"`, ...).
        op: String,
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A file-system call outside RocksDB failed (creating or listing the directory).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value failed its checksum or did not decode.
    #[error("corrupt data in {}, column family `{cf}`, key {key}: {detail}", path.display())]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// The column family holding the value.
        cf: String,
        /// The key, as a readable description (for log entries: `index N (0x...)`).
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// The directory holds something this backend does not read: another backend's files,
    /// the other kind of RocksDB store, or a newer format.
    #[error("incompatible data in {}: {detail}", path.display())]
    Incompatible {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The thread of a [`crate::RocksKvView`] failed before its snapshot was taken.
    #[error("the snapshot view thread of {} failed: {detail}", path.display())]
    ViewThread {
        /// The database directory.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The store failed a sync earlier and refuses further use (fail-stop).
    #[error("the store in {} failed a sync earlier and can no longer be used", path.display())]
    Failed {
        /// The database directory.
        path: PathBuf,
    },
}

impl RocksStoreError {
    /// Builds a [`RocksStoreError::Rocks`] error.
    pub(crate) fn rocks(op: impl Into<String>, path: &Path, source: rocksdb::Error) -> Self {
        RocksStoreError::Rocks {
            op: op.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds a [`RocksStoreError::Corrupt`] error.
    pub(crate) fn corrupt(
        path: &Path,
        cf: &str,
        key: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        RocksStoreError::Corrupt {
            path: path.to_path_buf(),
            cf: cf.to_owned(),
            key: key.into(),
            detail: detail.into(),
        }
    }

    /// Builds a [`RocksStoreError::Incompatible`] error.
    pub(crate) fn incompatible(path: &Path, detail: impl Into<String>) -> Self {
        RocksStoreError::Incompatible {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

impl From<RocksStoreError> for StorageError {
    fn from(e: RocksStoreError) -> Self {
        match e {
            RocksStoreError::Rocks { op, path, source } => {
                let context = format!("rocksdb {op} in {}", path.display());
                match source.kind() {
                    rocksdb::ErrorKind::Corruption => StorageError::Corrupt {
                        location: context,
                        detail: source.into_string(),
                    },
                    _ => StorageError::io(context, std::io::Error::other(source)),
                }
            }
            RocksStoreError::Io { op, path, source } => {
                StorageError::io(format!("{op} {}", path.display()), source)
            }
            RocksStoreError::Corrupt {
                path,
                cf,
                key,
                detail,
            } => StorageError::Corrupt {
                location: format!("{}, column family `{cf}`, key {key}", path.display()),
                detail,
            },
            RocksStoreError::Incompatible { path, detail } => {
                StorageError::Incompatible(format!("{}: {detail}", path.display()))
            }
            e @ (RocksStoreError::Failed { .. } | RocksStoreError::ViewThread { .. }) => {
                StorageError::Other(e.to_string())
            }
        }
    }
}

impl From<RocksStoreError> for StateMachineError {
    fn from(e: RocksStoreError) -> Self {
        StateMachineError::Storage(e.into())
    }
}

/// Result of the backend's internal operations.
pub type Result<T, E = RocksStoreError> = std::result::Result<T, E>;
