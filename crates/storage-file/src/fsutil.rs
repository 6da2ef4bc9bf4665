//! Small file-system helpers with errors that name the path.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{FileStoreError, Result};

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| FileStoreError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| FileStoreError::io("fsync directory", dir, e))
}

/// Creates the directory (and parents) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FileStoreError::io("create directory", dir, e))
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
