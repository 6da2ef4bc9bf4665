//! Helpers shared by the log store and the state machine: checksummed values and the
//! inspection of a data directory before RocksDB touches it.

use std::path::Path;

use crate::error::{Result, RocksStoreError};

/// Bytes of the CRC-32C that prefixes every value this crate writes (except the state
/// machine's user data, which RocksDB's own block checksums cover).
pub(crate) const CRC_LEN: usize = 4;

/// Prefixes `body` with its CRC-32C (little-endian).
pub(crate) fn seal(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CRC_LEN + body.len());
    v.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Checks the CRC-32C prefix of a value written by [`seal`] and returns the body.
pub(crate) fn unseal<'a>(
    path: &Path,
    cf: &str,
    key: &dyn Fn() -> String,
    value: &'a [u8],
) -> Result<&'a [u8]> {
    if value.len() < CRC_LEN {
        return Err(RocksStoreError::corrupt(
            path,
            cf,
            key(),
            format!(
                "value of {} bytes is shorter than its checksum",
                value.len()
            ),
        ));
    }
    let (crc, body) = value.split_at(CRC_LEN);
    let mut a = [0u8; CRC_LEN];
    a.copy_from_slice(crc);
    let stored = u32::from_le_bytes(a);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(RocksStoreError::corrupt(
            path,
            cf,
            key(),
            format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
        ));
    }
    Ok(body)
}

/// What a data directory holds before it is opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Missing or empty: a new store is created.
    Empty,
    /// A RocksDB database (it has a `CURRENT` file).
    RocksDb,
}

/// Creates `dir` if needed (syncing the parent of every directory created) and tells
/// whether it is empty or a RocksDB database; anything else (another backend's files) is
/// [`RocksStoreError::Incompatible`].
pub(crate) fn inspect_dir(dir: &Path, what: &str) -> Result<DirState> {
    lockstep_core::storage::create_dir_all_synced(dir).map_err(|source| RocksStoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    if dir.join("CURRENT").is_file() {
        return Ok(DirState::RocksDb);
    }
    let mut entries = std::fs::read_dir(dir).map_err(|source| RocksStoreError::Io {
        op: "list directory",
        path: dir.to_path_buf(),
        source,
    })?;
    match entries.next() {
        None => Ok(DirState::Empty),
        Some(first) => {
            let name = first
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(RocksStoreError::incompatible(
                dir,
                format!(
                    "the directory is not empty (it holds `{name}`) but is not a RocksDB \
                     database; refusing to open it as a {what}"
                ),
            ))
        }
    }
}

/// Reads a little-endian `u64` from exactly 8 bytes.
pub(crate) fn u64_le(b: &[u8]) -> Option<u64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_le_bytes(a))
}
