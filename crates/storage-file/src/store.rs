//! [`FileLogStore`]: the [`LogStore`] over WAL segments and the metadata slots.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::fs::{Fs, StdFs};
use lockstep_core::{
    Entry, HardState, Index, LogId, LogStore, SnapshotMeta, StorageError, StoredLog, Term,
};

use crate::error::{FileStoreError, Result};
use crate::fsutil;
use crate::meta::{Meta, MetaFile};
use crate::record::{self, MAX_RECORD_LEN, RECORD_HEADER_LEN};
use crate::recovery::{self, starts_run};
use crate::segment::Segment;

/// Tuning of a [`FileLogStore`].
#[derive(Clone, Debug)]
pub struct FileLogOptions {
    /// A segment is rolled (a new file started) when the next record would take it past
    /// this size. A record larger than this gets a segment of its own. At most 4 GiB.
    pub segment_size: u64,
    /// Bytes of recently appended entries kept in memory to serve reads without I/O
    /// (0 disables the cache).
    pub cache_bytes: usize,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            cache_bytes: 8 << 20,
        }
    }
}

/// A durable [`LogStore`] in one directory: a segmented, checksummed write-ahead log of
/// entries plus a double-slot record of hard state, snapshot metadata and purge point.
///
/// - [`LogStore::append`] writes the batch's records to the active segment with one
///   `write`; [`LogStore::sync`] makes everything durable with one `fdatasync` of the
///   active segment (plus a directory sync when segments were created, and a write of the
///   metadata record when hard state or snapshot metadata changed): group commit.
/// - Reads come from a small cache of recent entries or from the files; only record offsets
///   and term runs are kept in memory.
/// - [`LogStore::truncate`] and [`LogStore::purge`] are rare and durable on return: they
///   first sync earlier appends, so a crash always leaves a prefix of the mutations.
/// - Once a write or sync has failed, every later mutation fails (fail-stop): after a
///   failed `fdatasync` the page cache cannot be trusted.
///
/// All I/O goes through an [`Fs`]: the real filesystem ([`FileLogStore::open`],
/// [`FileLogStore::open_with`]) or any other, such as the simulated disk
/// [`lockstep_core::fs::SimFs`] ([`FileLogStore::open_in`], [`FileLogStore::open_in_with`]).
///
/// Only one process may open a directory at a time (not enforced).
#[derive(Debug)]
pub struct FileLogStore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: FileLogOptions,
    segments: Vec<Segment>,
    offset: LogId,
    last: LogId,
    terms: Vec<(Index, Term)>,
    cache: VecDeque<Entry>,
    cache_size: usize,
    meta_file: MetaFile,
    meta: Meta,
    meta_dirty: bool,
    dir_dirty: bool,
    buf: Vec<u8>,
    failed: Option<String>,
}

impl FileLogStore {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, FileLogOptions::default())
    }

    /// Opens (or creates) the store in `dir`. Recovery cuts a torn tail left by a crash; any
    /// other damage is [`FileStoreError::Corrupt`] naming the file and byte offset, with
    /// nothing on disk changed.
    pub fn open_with(dir: impl AsRef<Path>, opts: FileLogOptions) -> Result<Self> {
        Self::open_in_with(Arc::new(StdFs), dir, opts)
    }

    /// Opens (or creates) the store in `dir` of the filesystem `fs`, with default options.
    pub fn open_in(fs: Arc<dyn Fs>, dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_in_with(fs, dir, FileLogOptions::default())
    }

    /// Opens (or creates) the store in `dir` of the filesystem `fs`; otherwise as
    /// [`FileLogStore::open_with`].
    pub fn open_in_with(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        opts: FileLogOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let r = recovery::recover(&fs, &dir)?;
        Ok(Self {
            fs,
            dir,
            opts,
            segments: r.segments,
            offset: r.meta.purge_point,
            last: r.last,
            terms: r.terms,
            cache: VecDeque::new(),
            cache_size: 0,
            meta_file: r.meta_file,
            meta: r.meta,
            meta_dirty: false,
            dir_dirty: false,
            buf: Vec::new(),
            failed: None,
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The filesystem the store works on.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// Paths of the segment files in use, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(why) => Err(StorageError::Other(format!(
                "file log store in {} is unusable after an earlier failure: {why}",
                self.dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// Records a failure so later mutations refuse to run.
    fn fail<T>(&mut self, r: Result<T>) -> Result<T, StorageError> {
        r.map_err(|e| {
            self.failed = Some(e.to_string());
            e.into()
        })
    }

    fn term_at(&self, index: Index) -> Term {
        let p = self.terms.partition_point(|(i, _)| *i <= index);
        p.checked_sub(1).map_or(0, |p| self.terms[p].1)
    }

    fn sync_wal(&mut self) -> Result<()> {
        if let Some(s) = self.segments.last_mut() {
            s.sync()?;
        }
        if self.dir_dirty {
            fsutil::sync_dir(&*self.fs, &self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn roll(&mut self, first: Index) -> Result<()> {
        // The old segment is complete before any record exists in the new one, so recovery
        // never finds a torn record before the last segment.
        self.sync_wal()?;
        let seg = Segment::create(&*self.fs, &self.dir, first)?;
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }

    fn append_inner(&mut self, entries: &[Entry]) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut offsets: Vec<u32> = Vec::with_capacity(entries.len());
        let limit = self.opts.segment_size.clamp(4096, u64::from(u32::MAX));
        let mut res = Ok(());
        for e in entries {
            let before = buf.len();
            let n = record::encode_record(&mut buf, e);
            if n - RECORD_HEADER_LEN > MAX_RECORD_LEN {
                res = Err(FileStoreError::TooLarge(format!(
                    "entry {} encodes to {} bytes (limit {MAX_RECORD_LEN})",
                    e.log_id,
                    n - RECORD_HEADER_LEN
                )));
                buf.truncate(before);
                break;
            }
            let (seg_len, seg_count) = self
                .segments
                .last()
                .map_or((u64::MAX, 0), |s| (s.len, s.offsets.len()));
            let fits = seg_len
                .checked_add(buf.len() as u64)
                .is_some_and(|l| l <= limit);
            if !fits && (seg_count > 0 || before > 0 || seg_len == u64::MAX) {
                // Flush what belongs to the current segment, then start a new one.
                if before > 0 {
                    if let Err(err) = self.write_pending(&buf[..before], &offsets) {
                        res = Err(err);
                        break;
                    }
                    buf.drain(..before);
                    offsets.clear();
                }
                if let Err(err) = self.roll(e.log_id.index) {
                    res = Err(err);
                    break;
                }
            }
            let base = self.segments.last().map_or(0, |s| s.len);
            let off = base + (buf.len() - n) as u64;
            offsets.push(u32::try_from(off).unwrap_or(u32::MAX));
        }
        if res.is_ok() && !buf.is_empty() {
            res = self.write_pending(&buf, &offsets);
        }
        self.buf = buf;
        res
    }

    fn write_pending(&mut self, bytes: &[u8], offsets: &[u32]) -> Result<()> {
        let Some(seg) = self.segments.last_mut() else {
            return Err(FileStoreError::io(
                "write",
                &self.dir,
                std::io::Error::other("no active segment"),
            ));
        };
        seg.write(bytes, offsets)
    }

    fn note_appended(&mut self, entries: &[Entry]) {
        for e in entries {
            if starts_run(self.terms.last(), e.log_id.term) {
                self.terms.push((e.log_id.index, e.log_id.term));
            }
        }
        if let Some(l) = entries.last() {
            self.last = l.log_id;
        }
        if self.opts.cache_bytes > 0 {
            for e in entries {
                self.cache_size += e.size_hint();
                self.cache.push_back(e.clone());
            }
            while self.cache_size > self.opts.cache_bytes {
                match self.cache.pop_front() {
                    Some(e) => self.cache_size -= e.size_hint(),
                    None => break,
                }
            }
        }
    }

    fn drop_cache_from(&mut self, from: Index) {
        while self.cache.back().is_some_and(|e| e.log_id.index >= from) {
            if let Some(e) = self.cache.pop_back() {
                self.cache_size -= e.size_hint();
            }
        }
    }

    fn drop_cache_to(&mut self, to: Index) {
        while self.cache.front().is_some_and(|e| e.log_id.index <= to) {
            if let Some(e) = self.cache.pop_front() {
                self.cache_size -= e.size_hint();
            }
        }
    }

    fn truncate_inner(&mut self, from: Index) -> Result<()> {
        self.sync_wal()?;
        while self.segments.last().is_some_and(|s| s.first >= from) {
            if let Some(s) = self.segments.pop() {
                drop(s.file);
                fsutil::remove(&*self.fs, &s.path)?;
                fsutil::sync_dir(&*self.fs, &self.dir)?;
            }
        }
        if let Some(s) = self.segments.last_mut() {
            if s.end() > from {
                s.truncate_from(from)?;
            }
        }
        Ok(())
    }

    fn purge_inner(&mut self, up_to: LogId) -> Result<()> {
        self.sync_wal()?;
        let mut meta = self.meta.clone();
        meta.purge_point = up_to;
        self.meta_file.save(&meta)?;
        self.meta = meta;
        self.meta_dirty = false;
        self.offset = up_to;
        // Whole segments behind the purge point go; the purge point is already durable, so
        // a crash in between only leaves files recovery removes.
        let mut removed = false;
        while self
            .segments
            .first()
            .is_some_and(|s| s.end() <= up_to.index + 1)
        {
            let s = self.segments.remove(0);
            drop(s.file);
            fsutil::remove(&*self.fs, &s.path)?;
            removed = true;
        }
        if removed {
            fsutil::sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<()> {
        self.sync_wal()?;
        if self.meta_dirty {
            self.meta_file.save(&self.meta)?;
            self.meta_dirty = false;
        }
        Ok(())
    }

    fn read_range(&mut self, from: Index, to: Index) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity((to - from + 1).min(1 << 16) as usize);
        let cache_first = self.cache.front().map(|e| e.log_id.index);
        let file_to = match cache_first {
            Some(c) if c <= to => c.saturating_sub(1).min(to),
            _ => to,
        };
        if from <= file_to {
            let mut i = self.segments.partition_point(|s| s.first <= from);
            let mut at = from;
            while at <= file_to {
                let s = i
                    .checked_sub(1)
                    .and_then(|i| self.segments.get(i))
                    .filter(|s| s.first <= at && at < s.end())
                    .ok_or_else(|| {
                        FileStoreError::corrupt(
                            &self.dir,
                            0,
                            format!("no segment holds entry {at}"),
                        )
                    })?;
                let hi = file_to.min(s.end() - 1);
                s.read(at, hi, &mut out)?;
                at = hi + 1;
                i += 1;
            }
        }
        if let Some(c) = cache_first.filter(|c| *c <= to) {
            let a = (from.max(c) - c) as usize;
            let b = (to - c) as usize;
            out.extend(self.cache.range(a..=b).cloned());
        }
        Ok(out)
    }
}

impl LogStore for FileLogStore {
    fn load(&mut self) -> Result<StoredLog, StorageError> {
        let entries = if self.last.index > self.offset.index {
            self.entries(self.offset.index + 1, self.last.index)?
        } else {
            Vec::new()
        };
        Ok(StoredLog {
            hard_state: self.meta.hard_state,
            snapshot: self.meta.snapshot.clone(),
            log_offset: self.offset,
            entries,
        })
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut prev = self.last;
        for e in entries {
            if e.log_id.index == u64::MAX {
                // Recovery refuses it (one past it does not exist): never written.
                return Err(StorageError::Other(format!(
                    "entry {} has the largest index, which the log does not store",
                    e.log_id
                )));
            }
            if prev.index.checked_add(1) != Some(e.log_id.index) {
                return Err(StorageError::NotContiguous {
                    last: prev,
                    found: e.log_id,
                });
            }
            prev = e.log_id;
        }
        let r = self.append_inner(entries);
        self.fail(r)?;
        self.note_appended(entries);
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        if from > self.last.index {
            return Ok(());
        }
        let from = from.max(self.offset.index + 1);
        let r = self.truncate_inner(from);
        self.fail(r)?;
        self.terms
            .truncate(self.terms.partition_point(|(i, _)| *i < from));
        self.last = if from - 1 > self.offset.index {
            LogId::new(self.term_at(from - 1), from - 1)
        } else {
            self.offset
        };
        self.drop_cache_from(from);
        Ok(())
    }

    fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.check_usable()?;
        if up_to.index <= self.offset.index {
            return Ok(());
        }
        let r = self.purge_inner(up_to);
        self.fail(r)?;
        if up_to.index >= self.last.index {
            self.last = up_to;
            self.terms.clear();
            self.cache.clear();
            self.cache_size = 0;
        } else {
            let live = up_to.index + 1;
            let p = self.terms.partition_point(|(i, _)| *i <= live);
            self.terms.drain(..p.saturating_sub(1));
            if let Some(r) = self.terms.first_mut() {
                r.0 = r.0.max(live);
            }
            self.drop_cache_to(up_to.index);
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        self.meta.hard_state = *hs;
        self.meta_dirty = true;
        Ok(())
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.check_usable()?;
        self.meta.snapshot = Some(meta.clone());
        self.meta_dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let r = self.sync_inner();
        self.fail(r)
    }

    fn entries(&mut self, from: Index, to: Index) -> Result<Vec<Entry>, StorageError> {
        if !lockstep_core::storage::check_entries_range(from, to, (self.offset, self.last))? {
            return Ok(Vec::new());
        }
        Ok(self.read_range(from, to)?)
    }

    fn term(&mut self, index: Index) -> Result<Option<Term>, StorageError> {
        if index == self.offset.index {
            return Ok(Some(self.offset.term));
        }
        if index < self.offset.index || index > self.last.index {
            return Ok(None);
        }
        Ok(Some(self.term_at(index)))
    }

    fn bounds(&self) -> (LogId, LogId) {
        (self.offset, self.last)
    }
}
