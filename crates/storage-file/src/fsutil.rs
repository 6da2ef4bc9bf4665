//! Small file-system helpers over [`Fs`], with errors that name the path and operation.

use std::path::{Path, PathBuf};

use lockstep_core::fs::{Fs, FsFile, OpenMode};

use crate::error::{FileStoreError, Result};

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    #[cfg(test)]
    synced::note(dir);
    fs.sync_dir(dir)
        .map_err(|e| FileStoreError::io("fsync directory", dir, e))
}

/// `fdatasync`s the open file `f` (at `path`).
pub fn sync_data(f: &dyn FsFile, path: &Path) -> Result<()> {
    #[cfg(test)]
    synced::note(path);
    f.sync_data()
        .map_err(|e| FileStoreError::io("fdatasync", path, e))
}

/// `fsync`s the open file `f` (at `path`), data and metadata.
pub fn sync_all(f: &dyn FsFile, path: &Path) -> Result<()> {
    #[cfg(test)]
    synced::note(path);
    f.sync_all()
        .map_err(|e| FileStoreError::io("fsync", path, e))
}

/// Creates the directory (and missing parents) if it does not exist, `fsync`ing the parent
/// of each directory it creates.
pub fn ensure_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    lockstep_core::fs::create_dir_all_synced(fs, dir)
        .map_err(|e| FileStoreError::io("create directory", dir, e))
}

/// Reads a whole file.
pub fn read_file(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>> {
    fs.read(path)
        .map_err(|e| FileStoreError::io("read", path, e))
}

/// Opens a file for reading and writing, creating it if asked.
pub fn open_rw(fs: &dyn Fs, path: &Path, create: bool) -> Result<Box<dyn FsFile>> {
    let mode = if create {
        OpenMode::CreateReadWrite
    } else {
        OpenMode::ReadWrite
    };
    fs.open(path, mode)
        .map_err(|e| FileStoreError::io("open", path, e))
}

/// Opens an existing file for reading; `None` if it does not exist.
pub fn open_read_if_exists(fs: &dyn Fs, path: &Path) -> Result<Option<Box<dyn FsFile>>> {
    match fs.open(path, OpenMode::Read) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileStoreError::io("open", path, e)),
    }
}

/// Removes a file.
pub fn remove(fs: &dyn Fs, path: &Path) -> Result<()> {
    fs.remove_file(path)
        .map_err(|e| FileStoreError::io("remove", path, e))
}

/// Removes a file that may already be gone; returns whether this call removed it.
pub fn remove_if_exists(fs: &dyn Fs, path: &Path) -> Result<bool> {
    match fs.remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileStoreError::io("remove", path, e)),
    }
}

/// The entries of `dir` whose names are UTF-8, with their paths, sorted by name.
pub fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let names = fs
        .read_dir(dir)
        .map_err(|e| FileStoreError::io("list", dir, e))?;
    Ok(names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .map(|n| {
            let p = dir.join(&n);
            (n, p)
        })
        .collect())
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
    use lockstep_core::fs::StdFs;

    #[test]
    fn ensure_dir_creates_nested_directories_and_accepts_an_existing_one() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("data").join("log").join("wal");
        ensure_dir(&StdFs, &deep).unwrap();
        assert!(deep.is_dir());
        ensure_dir(&StdFs, &deep).unwrap();
        let file = deep.join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_dir(&StdFs, &file).unwrap_err();
        assert!(matches!(err, FileStoreError::Io { .. }), "{err}");
    }

    #[test]
    fn a_file_already_removed_is_not_an_error_for_remove_if_exists() {
        let base = tempfile::tempdir().unwrap();
        let p = base.path().join("gone");
        std::fs::write(&p, b"x").unwrap();
        assert!(remove_if_exists(&StdFs, &p).unwrap());
        assert!(!remove_if_exists(&StdFs, &p).unwrap());
        assert!(remove(&StdFs, &p).is_err());
    }
}
