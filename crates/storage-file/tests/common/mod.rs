//! Helpers shared by the file store's integration tests.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lockstep_core::testing::log_store_suite::{BoxError, LogStoreBuilder};
use lockstep_storage_file::format::{parse_segment_name, HEADER_LEN};
use lockstep_storage_file::{FileLogOptions, FileLogStore};

/// Small segments, so the suite's logs span many of them.
pub const SEGMENT_SIZE: u64 = 64 * 1024;

/// Opens [`FileLogStore`]s with small segments.
pub struct Builder {
    /// Segment size.
    pub segment_size: u64,
    /// Cache size.
    pub cache_bytes: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            segment_size: SEGMENT_SIZE,
            cache_bytes: 16 * 1024,
        }
    }
}

impl Builder {
    /// The options it opens with.
    pub fn options(&self) -> FileLogOptions {
        FileLogOptions {
            segment_size: self.segment_size,
            cache_bytes: self.cache_bytes,
        }
    }
}

/// Segment files of `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let first = parse_segment_name(e.file_name().to_str()?)?;
            Some((first, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Offsets of the records of a segment file.
pub fn record_offsets(path: &Path) -> Vec<u64> {
    let buf = std::fs::read(path).unwrap();
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        out.push(pos as u64);
        pos += 8 + len;
    }
    out
}

/// Flips one bit at `offset` of `path`.
pub fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}

impl LogStoreBuilder for Builder {
    type Store = FileLogStore;

    fn open(&self, dir: &Path) -> Result<FileLogStore, BoxError> {
        Ok(FileLogStore::open_with(dir, self.options())?)
    }

    fn corrupt_middle(&self, dir: &Path) -> Option<Result<String, BoxError>> {
        let segs = segments(dir);
        if segs.is_empty() {
            return Some(Err("no segment files".into()));
        }
        let seg = &segs[segs.len() / 2];
        let offs = record_offsets(seg);
        let off = offs[offs.len() / 2];
        // Damage the payload (past the len and crc fields).
        flip(seg, off + 12);
        let name = seg.file_name().unwrap().to_string_lossy().into_owned();
        Some(Ok(format!("{name} at byte offset {off}")))
    }
}
