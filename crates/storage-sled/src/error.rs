//! The sled backend's error type and its mapping to [`StorageError`] and
//! [`StateMachineError`].

use std::path::PathBuf;

use lockstep_core::{StateMachineError, StorageError};

/// What went wrong in [`crate::SledLogStore`] or [`crate::SledKvStateMachine`].
#[derive(Debug, thiserror::Error)]
pub enum SledStoreError {
    /// A sled operation failed.
    #[error("sled {op} failed: {source}")]
    Sled {
        /// What was being done (`"open"`, `"flush"`, `"apply_batch"`, ...), naming the tree
        /// where there is one.
        op: String,
        /// The error sled returned.
        #[source]
        source: sled::Error,
    },
    /// A stored record does not decode.
    #[error("corrupt record in sled tree `{tree}` at key {key}: {detail}")]
    Corrupt {
        /// The tree holding the record.
        tree: String,
        /// The record's key, rendered readably (an index, a name or hex bytes).
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// The path or database holds data this crate did not write (another backend, another
    /// kind of store, or another format version).
    #[error("incompatible data at {}: {detail}", path.display())]
    Incompatible {
        /// The directory (or the database's path).
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Reading the directory before opening sled failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or flush failed; the store refuses further mutations (fail-stop).
    #[error("the store is unusable after an earlier failure: {0}")]
    Failed(String),
}

impl SledStoreError {
    /// Wraps a sled error with what was being done.
    pub(crate) fn sled(op: impl Into<String>, source: sled::Error) -> Self {
        SledStoreError::Sled {
            op: op.into(),
            source,
        }
    }

    /// Builds a [`SledStoreError::Corrupt`] error.
    pub(crate) fn corrupt(tree: &str, key: impl Into<String>, detail: impl Into<String>) -> Self {
        SledStoreError::Corrupt {
            tree: tree.to_owned(),
            key: key.into(),
            detail: detail.into(),
        }
    }
}

impl From<SledStoreError> for StorageError {
    fn from(e: SledStoreError) -> Self {
        match e {
            SledStoreError::Sled { op, source } => match source {
                sled::Error::Io(io) => StorageError::io(format!("sled {op}"), io),
                sled::Error::Corruption { at, .. } => StorageError::Corrupt {
                    location: match at {
                        Some(ptr) => format!("sled database at {ptr:?}"),
                        None => "sled database".to_owned(),
                    },
                    detail: format!("sled reported corruption during {op}"),
                },
                other => StorageError::Other(format!("sled {op} failed: {other}")),
            },
            SledStoreError::Corrupt { tree, key, detail } => StorageError::Corrupt {
                location: format!("sled tree `{tree}` key {key}"),
                detail,
            },
            SledStoreError::Incompatible { path, detail } => {
                StorageError::Incompatible(format!("{}: {detail}", path.display()))
            }
            SledStoreError::Io { op, path, source } => {
                StorageError::io(format!("{op} {}", path.display()), source)
            }
            SledStoreError::Failed(why) => StorageError::Other(format!(
                "sled store is unusable after an earlier failure: {why}"
            )),
        }
    }
}

impl From<SledStoreError> for StateMachineError {
    fn from(e: SledStoreError) -> Self {
        StateMachineError::Storage(e.into())
    }
}

/// Result of this crate's operations.
pub type Result<T, E = SledStoreError> = std::result::Result<T, E>;
