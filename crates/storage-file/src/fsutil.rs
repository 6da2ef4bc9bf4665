//! Small file-system helpers with errors that name the path.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{FileStoreError, Result};

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    synced::note(dir);
    lockstep_core::storage::sync_dir(dir).map_err(|e| FileStoreError::io("fsync directory", dir, e))
}

/// `fdatasync`s the open file `f` (at `path`).
pub fn sync_data(f: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    synced::note(path);
    f.sync_data()
        .map_err(|e| FileStoreError::io("fdatasync", path, e))
}

/// Creates the directory (and missing parents) if it does not exist, `fsync`ing the parent
/// of each directory it creates.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    lockstep_core::storage::create_dir_all_synced(dir)
        .map_err(|e| FileStoreError::io("create directory", dir, e))
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FileStoreError::io("read", path, e))
}

/// Opens a file for reading and writing, creating it if asked.
pub fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| FileStoreError::io("open", path, e))
}

/// Removes a file.
pub fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| FileStoreError::io("remove", path, e))
}

/// Removes a file that may already be gone; returns whether this call removed it.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileStoreError::io("remove", path, e)),
    }
}

/// A test hook: the paths this thread synced (files and directories), in order.
#[cfg(test)]
pub mod synced {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// Records a sync of `path`.
    pub fn note(path: &Path) {
        SYNCED.with(|s| s.borrow_mut().push(path.to_path_buf()));
    }

    /// The paths synced since the last call, oldest first.
    pub fn take() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_creates_nested_directories_and_accepts_an_existing_one() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("data").join("log").join("wal");
        ensure_dir(&deep).unwrap();
        assert!(deep.is_dir());
        ensure_dir(&deep).unwrap();
        let file = deep.join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_dir(&file).unwrap_err();
        assert!(matches!(err, FileStoreError::Io { .. }), "{err}");
    }

    #[test]
    fn a_file_already_removed_is_not_an_error_for_remove_if_exists() {
        let base = tempfile::tempdir().unwrap();
        let p = base.path().join("gone");
        std::fs::write(&p, b"x").unwrap();
        assert!(remove_if_exists(&p).unwrap());
        assert!(!remove_if_exists(&p).unwrap());
        assert!(remove(&p).is_err());
    }
}
