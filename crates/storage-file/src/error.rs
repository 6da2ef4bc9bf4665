//! The file store's error type and its mapping to [`StorageError`].

use std::path::{Path, PathBuf};

use lockstep_core::StorageError;

/// What went wrong in the file log store or the file snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`"open"`, `"write"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file failed its integrity check.
    #[error("corrupt data in {} at byte offset {offset}: {detail}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or header in that file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// The directory holds data this version cannot read (another format or version).
    #[error("incompatible file {}: {detail}", file.display())]
    Incompatible {
        /// The file.
        file: PathBuf,
        /// Why.
        detail: String,
    },
    /// An entry or a snapshot does not fit the format's limits.
    #[error("too large: {0}")]
    TooLarge(String),
}

impl FileStoreError {
    /// Builds an [`FileStoreError::Io`] error.
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        FileStoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds a [`FileStoreError::Corrupt`] error.
    pub(crate) fn corrupt(file: &Path, offset: u64, detail: impl Into<String>) -> Self {
        FileStoreError::Corrupt {
            file: file.to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}

impl From<FileStoreError> for StorageError {
    fn from(e: FileStoreError) -> Self {
        match e {
            FileStoreError::Io { op, path, source } => {
                StorageError::io(format!("{op} {}", path.display()), source)
            }
            FileStoreError::Corrupt {
                file,
                offset,
                detail,
            } => StorageError::Corrupt {
                location: format!("{} at byte offset {offset}", file.display()),
                detail,
            },
            FileStoreError::Incompatible { file, detail } => {
                StorageError::Incompatible(format!("{}: {detail}", file.display()))
            }
            FileStoreError::TooLarge(s) => StorageError::Other(format!("too large: {s}")),
        }
    }
}

/// Result of the file store's internal operations.
pub type Result<T, E = FileStoreError> = std::result::Result<T, E>;
