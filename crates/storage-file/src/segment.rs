//! One WAL segment file: its handle, the offsets of its records and range reads.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use lockstep_core::fs::{Fs, FsFile, OpenMode};
use lockstep_core::{Entry, Index};

use crate::error::{FileStoreError, Result};
use crate::fsutil;
use crate::record::{self, RecordCheck, HEADER_LEN};

/// File name of the segment whose first entry is `first`: 20 zero-padded digits and `.wal`.
pub fn segment_name(first: Index) -> String {
    format!("{first:020}.wal")
}

/// The first index encoded in a segment file name, if `name` is one.
pub fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    /// Index of the entry in the first record.
    pub first: Index,
    /// Path of the file.
    pub path: PathBuf,
    /// The open file (read and write).
    pub file: Box<dyn FsFile>,
    /// Bytes of valid data (header and whole records).
    pub len: u64,
    /// File offset of each record: record `k` holds entry `first + k`.
    pub offsets: Vec<u32>,
    /// Written since its last `fdatasync`.
    pub dirty: bool,
}

impl Segment {
    /// Creates a new segment file holding only its header (not synced; the caller syncs the
    /// file and the directory).
    pub fn create(fs: &dyn Fs, dir: &Path, first: Index) -> Result<Segment> {
        let path = dir.join(segment_name(first));
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| FileStoreError::io("create", &path, e))?;
        file.write_all_at(&record::encode_header(first), 0)
            .map_err(|e| FileStoreError::io("write", &path, e))?;
        Ok(Segment {
            first,
            path,
            file,
            len: HEADER_LEN as u64,
            offsets: Vec::new(),
            dirty: true,
        })
    }

    /// Index just after the last entry of this segment.
    pub fn end(&self) -> Index {
        self.first + self.offsets.len() as Index
    }

    /// Byte range `[start, end)` of the records `a..=b` (positions within the segment).
    fn span(&self, a: usize, b: usize) -> (u64, u64) {
        let start = u64::from(self.offsets[a]);
        let end = self.offsets.get(b + 1).map_or(self.len, |o| u64::from(*o));
        (start, end)
    }

    /// Reads and verifies the entries `from..=to` (all within this segment).
    pub fn read(&self, from: Index, to: Index, out: &mut Vec<Entry>) -> Result<()> {
        let a = (from - self.first) as usize;
        let b = (to - self.first) as usize;
        let (start, end) = self.span(a, b);
        let mut buf = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| FileStoreError::io("read", &self.path, e))?;
        let buf = Bytes::from(buf);
        let mut pos = 0usize;
        for k in a..=b {
            let file_off = u64::from(self.offsets[k]);
            let rec_end = match record::check_record(&buf, pos) {
                RecordCheck::Valid { end } => end,
                RecordCheck::Bad(d) => {
                    return Err(FileStoreError::corrupt(&self.path, file_off, d));
                }
            };
            let e = record::decode_payload(&buf, pos, rec_end)
                .map_err(|d| FileStoreError::corrupt(&self.path, file_off, d))?;
            let want = self.first + k as Index;
            if e.log_id.index != want {
                return Err(FileStoreError::corrupt(
                    &self.path,
                    file_off,
                    format!("record holds entry {} where {want} belongs", e.log_id.index),
                ));
            }
            out.push(e);
            pos = rec_end;
        }
        Ok(())
    }

    /// Appends encoded records (already counted in `new_offsets`) at the end of the data.
    pub fn write(&mut self, bytes: &[u8], new_offsets: &[u32]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.len)
            .map_err(|e| FileStoreError::io("write", &self.path, e))?;
        self.len += bytes.len() as u64;
        self.offsets.extend_from_slice(new_offsets);
        self.dirty = true;
        Ok(())
    }

    /// `fdatasync`s the file if it was written since the last call.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            fsutil::sync_data(&*self.file, &self.path)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Cuts the segment so that its last entry is `from - 1`, durably.
    pub fn truncate_from(&mut self, from: Index) -> Result<()> {
        let keep = (from - self.first) as usize;
        let new_len = self.offsets.get(keep).map_or(self.len, |o| u64::from(*o));
        self.file
            .set_len(new_len)
            .map_err(|e| FileStoreError::io("truncate", &self.path, e))?;
        self.offsets.truncate(keep);
        self.len = new_len;
        self.dirty = true;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("meta-a"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
    }
}
