//! [`FileSnapshotStore`]: one checksummed file per snapshot.
//!
//! ```text
//! name = "snap-" term (20 digits) "-" index (20 digits) ".snap"
//! file = magic "LSTPSNAP" | version u32 | meta length u32 | data length u64
//!        | data crc32c u32 | header crc32c u32 (of bytes 8..28 and the meta) | meta | data
//! ```
//!
//! Snapshots stream in and out; neither side holds one whole in memory. A writer
//! ([`SnapshotStore::writer`]) streams the data into `<name>.<pid>-<seq>.snap.tmp` behind a
//! placeholder header, keeping the data's length and CRC32C as it goes; `finish` writes the
//! real header and `fsync`s the file; `commit` renames it over `<name>` and syncs the
//! directory. Temporary files left by a crash are removed on open. A reader
//! ([`SnapshotStore::reader`]) checks the header when it opens the file and the data's
//! CRC32C when it reaches the end: a mismatch fails that last read with
//! [`StorageError::Corrupt`] (wrapped in the `io::Error`).
//!
//! Retention ([`SnapshotStore::retain`]) runs from snapshot builds and installs at the same
//! time: it is serialized by a lock inside the store, a file already gone is not an error,
//! and it never removes the newest snapshot nor one that has an open reader.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BufMut;
use lockstep_core::codec::{self, Reader};
use lockstep_core::fs::{FileCursor, Fs, OpenMode, StdFs};
use lockstep_core::{
    LogId, SnapshotMeta, SnapshotReader, SnapshotStore, SnapshotWriter, StagedSnapshot,
    StorageError,
};

use crate::error::{FileStoreError, Result};
use crate::fsutil;

const MAGIC: [u8; 8] = *b"LSTPSNAP";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const MAX_META: usize = 64 << 20;
/// Buffer of a snapshot file being written or read.
const IO_BUFFER: usize = 256 << 10;

/// A [`SnapshotStore`] keeping each snapshot in its own checksummed file in one directory.
///
/// All I/O goes through an [`Fs`]: the real filesystem ([`FileSnapshotStore::open`]) or any
/// other ([`FileSnapshotStore::open_in`]).
#[derive(Debug)]
pub struct FileSnapshotStore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    tmp_seq: AtomicU64,
    /// Open readers per snapshot; held by [`FileSnapshotStore::retain`] throughout, which
    /// serializes retention and keeps a reader from opening a file while it is judged.
    readers: Arc<Mutex<Readers>>,
}

/// Number of open readers of each committed snapshot.
type Readers = BTreeMap<LogId, usize>;

fn lock_readers(r: &Mutex<Readers>) -> MutexGuard<'_, Readers> {
    // The map holds plain counters, consistent even if a holder panicked.
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts one open reader of a committed snapshot until dropped.
struct ReaderGuard {
    readers: Arc<Mutex<Readers>>,
    id: LogId,
}

impl ReaderGuard {
    fn register(readers: &Arc<Mutex<Readers>>, id: LogId) -> Self {
        *lock_readers(readers).entry(id).or_insert(0) += 1;
        Self {
            readers: readers.clone(),
            id,
        }
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut r = lock_readers(&self.readers);
        if let Some(n) = r.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.id);
            }
        }
    }
}

/// File name of the snapshot whose last entry is `id`.
pub fn snapshot_name(id: LogId) -> String {
    format!("snap-{:020}-{:020}.snap", id.term, id.index)
}

fn parse_name(name: &str) -> Option<LogId> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (t, i) = rest.split_once('-')?;
    if t.len() != 20 || i.len() != 20 {
        return None;
    }
    if !t.bytes().chain(i.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(LogId::new(t.parse().ok()?, i.parse().ok()?))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A parsed and verified header.
struct Header {
    meta: SnapshotMeta,
    meta_len: usize,
    data_len: u64,
    data_crc: u32,
}

fn parse_header(path: &Path, buf: &[u8], file_len: u64) -> Result<Header> {
    let bad = |off: u64, d: String| FileStoreError::corrupt(path, off, d);
    if buf.len() < HEADER {
        return Err(bad(
            0,
            format!("{} bytes are shorter than the header", buf.len()),
        ));
    }
    if buf[..8] != MAGIC {
        return Err(bad(0, "bad magic".into()));
    }
    let version = le_u32(&buf[8..]);
    let meta_len = le_u32(&buf[12..]) as usize;
    let data_len = le_u64(&buf[16..]);
    let data_crc = le_u32(&buf[24..]);
    let hdr_crc = le_u32(&buf[28..]);
    if meta_len > MAX_META || HEADER + meta_len > buf.len() {
        return Err(bad(
            12,
            format!("metadata length {meta_len} exceeds the file"),
        ));
    }
    let meta_bytes = &buf[HEADER..HEADER + meta_len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[8..28]), meta_bytes) != hdr_crc {
        return Err(bad(28, "header checksum mismatch".into()));
    }
    if version != VERSION {
        return Err(FileStoreError::Incompatible {
            file: path.to_path_buf(),
            detail: format!("snapshot format version {version} is not supported"),
        });
    }
    let expect = (HEADER + meta_len) as u64 + data_len;
    if file_len != expect {
        return Err(bad(
            file_len.min(expect),
            format!("file has {file_len} bytes, the header says {expect}"),
        ));
    }
    let mut r = Reader::new(meta_bytes, "snapshot meta");
    let meta = codec::get_snapshot_meta(&mut r)
        .and_then(|m| r.finish().map(|()| m))
        .map_err(|e| bad(HEADER as u64, e.to_string()))?;
    Ok(Header {
        meta,
        meta_len,
        data_len,
        data_crc,
    })
}

impl FileSnapshotStore {
    /// Opens (or creates) the snapshot directory, removing temporary files a crash left.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_in(Arc::new(StdFs), dir)
    }

    /// Opens (or creates) the snapshot directory `dir` of the filesystem `fs`, removing
    /// temporary files a crash left.
    pub fn open_in(fs: Arc<dyn Fs>, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fsutil::ensure_dir(&*fs, &dir)?;
        let mut removed = false;
        for (name, path) in fsutil::list(&*fs, &dir)? {
            if name.ends_with(".snap.tmp") {
                fsutil::remove(&*fs, &path)?;
                removed = true;
            }
        }
        if removed {
            fsutil::sync_dir(&*fs, &dir)?;
        }
        Ok(Self {
            fs,
            dir,
            tmp_seq: AtomicU64::new(0),
            readers: Arc::new(Mutex::new(Readers::new())),
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

    /// Path of the file of snapshot `id` (whether or not it exists).
    pub fn path_of(&self, id: LogId) -> PathBuf {
        self.dir.join(snapshot_name(id))
    }

    /// Stored snapshot ids (from the file names), oldest first.
    fn ids(&self) -> Result<Vec<LogId>> {
        let mut ids: Vec<LogId> = fsutil::list(&*self.fs, &self.dir)?
            .iter()
            .filter_map(|(n, _)| parse_name(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn writer_inner(&self, meta: &SnapshotMeta) -> Result<FileSnapshotWriter> {
        let mut meta_bytes = Vec::new();
        codec::put_snapshot_meta(&mut meta_bytes, meta);
        if meta_bytes.len() > MAX_META {
            return Err(FileStoreError::TooLarge(format!(
                "snapshot metadata of {} bytes exceeds {MAX_META}",
                meta_bytes.len()
            )));
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            "{}.{}-{seq}.snap.tmp",
            snapshot_name(meta.last_log_id),
            std::process::id()
        ));
        let f = self
            .fs
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|e| FileStoreError::io("create", &tmp, e))?;
        let mut f = FileCursor::new(f);
        // A placeholder header (all zeros: invalid magic) until `finish` knows the data's
        // length and checksum.
        let placeholder = vec![0u8; HEADER + meta_bytes.len()];
        if let Err(e) = f.write_all(&placeholder) {
            let _ = self.fs.remove_file(&tmp);
            return Err(FileStoreError::io("write", &tmp, e));
        }
        Ok(FileSnapshotWriter {
            fs: self.fs.clone(),
            out: Some(BufWriter::with_capacity(IO_BUFFER, f)),
            tmp: Some(TempFile {
                fs: self.fs.clone(),
                path: tmp,
            }),
            path: self.path_of(meta.last_log_id),
            dir: self.dir.clone(),
            last: meta.last_log_id,
            meta_bytes,
            data_len: 0,
            crc: 0,
        })
    }

    fn reader_inner(&self, last: LogId) -> Result<Option<SnapshotReader>> {
        // Registered before the file is opened: a retention running now either sees the
        // reader and keeps the file, or removed it first and the open finds nothing.
        let guard = ReaderGuard::register(&self.readers, last);
        open_reader(&*self.fs, &self.path_of(last), last, Some(guard))
    }

    fn list_inner(&self) -> Result<Vec<SnapshotMeta>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let path = self.path_of(id);
            // Gone: removed by a retention since it was listed.
            let Some(f) = fsutil::open_read_if_exists(&*self.fs, &path)? else {
                continue;
            };
            out.push(read_head(&path, &mut FileCursor::new(f))?.meta);
        }
        Ok(out)
    }

    /// Removes all but the newest `keep` snapshots (always keeping the newest one), except
    /// those with an open reader, one retention at a time.
    fn retain_inner(&self, keep: usize) -> Result<()> {
        let readers = lock_readers(&self.readers);
        let ids = self.ids()?;
        self.remove_old(&readers, &ids, keep)
    }

    /// Removes snapshot `last` (one the state machine refused), under the retention lock;
    /// a snapshot already gone is fine.
    fn remove_inner(&self, last: LogId) -> Result<()> {
        let _readers = lock_readers(&self.readers);
        if fsutil::remove_if_exists(&*self.fs, &self.path_of(last))? {
            fsutil::sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// The removal step of [`FileSnapshotStore::retain_inner`], given the listed `ids`
    /// (oldest first), some of which may be gone already.
    fn remove_old(&self, readers: &Readers, ids: &[LogId], keep: usize) -> Result<()> {
        let n = ids.len().saturating_sub(keep.max(1));
        let mut removed = false;
        for id in &ids[..n] {
            if readers.contains_key(id) {
                tracing::debug!(snapshot = %id, "keeping an old snapshot that is being read");
                continue;
            }
            if fsutil::remove_if_exists(&*self.fs, &self.path_of(*id))? {
                removed = true;
            } else {
                tracing::debug!(snapshot = %id, "old snapshot already removed");
            }
        }
        if removed {
            fsutil::sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }
}

/// Reads and checks the header of an open snapshot file, leaving `f` at the data.
fn read_head(path: &Path, f: &mut FileCursor) -> Result<Header> {
    let file_len = f
        .get_ref()
        .len()
        .map_err(|e| FileStoreError::io("stat", path, e))?;
    let mut head = [0u8; HEADER];
    let n = read_up_to(f, &mut head).map_err(|e| FileStoreError::io("read", path, e))?;
    let meta_len = if n == HEADER {
        (le_u32(&head[12..]) as usize).min(MAX_META)
    } else {
        0
    };
    let want = (HEADER + meta_len).min(file_len as usize);
    let mut buf = head[..n].to_vec();
    buf.resize(want.max(n), 0);
    if want > n {
        f.read_exact(&mut buf[n..])
            .map_err(|e| FileStoreError::io("read", path, e))?;
    }
    parse_header(path, &buf, file_len)
}

/// Opens the snapshot file at `path`, which must hold snapshot `last`; the reader holds
/// `guard` (if any) until dropped.
fn open_reader(
    fs: &dyn Fs,
    path: &Path,
    last: LogId,
    guard: Option<ReaderGuard>,
) -> Result<Option<SnapshotReader>> {
    let Some(f) = fsutil::open_read_if_exists(fs, path)? else {
        return Ok(None);
    };
    let mut f = FileCursor::new(f);
    let h = read_head(path, &mut f)?;
    if h.meta.last_log_id != last {
        return Err(FileStoreError::corrupt(
            path,
            HEADER as u64,
            format!("file holds snapshot {} instead", h.meta.last_log_id),
        ));
    }
    let start = (HEADER + h.meta_len) as u64;
    Ok(Some(SnapshotReader::new(
        h.data_len,
        Box::new(DataReader {
            input: BufReader::with_capacity(IO_BUFFER, f),
            path: path.to_path_buf(),
            start,
            left: h.data_len,
            crc: 0,
            expected: h.data_crc,
            checked: false,
            _guard: guard,
        }),
    )))
}

/// Reads a snapshot file's data, checking its CRC32C when the data ends.
struct DataReader {
    input: BufReader<FileCursor>,
    path: PathBuf,
    start: u64,
    left: u64,
    crc: u32,
    expected: u32,
    checked: bool,
    /// Keeps a committed snapshot from being removed while it is read.
    _guard: Option<ReaderGuard>,
}

impl DataReader {
    fn corrupt(&self, offset: u64, detail: &str) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            StorageError::from(FileStoreError::corrupt(&self.path, offset, detail)),
        )
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if !self.checked {
                if self.crc != self.expected {
                    return Err(self.corrupt(self.start, "snapshot data checksum mismatch"));
                }
                self.checked = true;
            }
            return Ok(0);
        }
        let max = self.left.min(buf.len() as u64) as usize;
        let n = self.input.read(&mut buf[..max]).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                StorageError::from(FileStoreError::io("read", &self.path, e)),
            )
        })?;
        if n == 0 {
            return Err(self.corrupt(self.start, "the file is shorter than its header says"));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A temporary file, removed when dropped unless it was renamed away ([`TempFile::keep`]).
struct TempFile {
    fs: Arc<dyn Fs>,
    path: PathBuf,
}

impl TempFile {
    /// The file was renamed: nothing to remove.
    fn keep(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = self.fs.remove_file(&self.path);
        }
    }
}

/// A snapshot being written into a [`FileSnapshotStore`] (a temporary file).
struct FileSnapshotWriter {
    fs: Arc<dyn Fs>,
    out: Option<BufWriter<FileCursor>>,
    tmp: Option<TempFile>,
    path: PathBuf,
    dir: PathBuf,
    last: LogId,
    meta_bytes: Vec<u8>,
    data_len: u64,
    crc: u32,
}

impl FileSnapshotWriter {
    fn tmp_path(&self) -> PathBuf {
        self.tmp
            .as_ref()
            .map(|t| t.path.clone())
            .unwrap_or_default()
    }

    fn finish_inner(mut self) -> Result<FileStaged> {
        let tmp = self.tmp_path();
        let io = |e| FileStoreError::io("write", &tmp, e);
        let out = self
            .out
            .take()
            .ok_or_else(|| io(std::io::Error::other("writer already finished")))?;
        let mut f = out.into_inner().map_err(|e| io(e.into_error()))?;
        let mut head = Vec::with_capacity(HEADER + self.meta_bytes.len());
        head.extend_from_slice(&MAGIC);
        head.put_u32_le(VERSION);
        head.put_u32_le(self.meta_bytes.len() as u32);
        head.put_u64_le(self.data_len);
        head.put_u32_le(self.crc);
        let hdr_crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..28]), &self.meta_bytes);
        head.put_u32_le(hdr_crc);
        head.extend_from_slice(&self.meta_bytes);
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&head).map_err(io)?;
        fsutil::sync_all(f.get_ref(), &tmp)?;
        Ok(FileStaged {
            fs: self.fs.clone(),
            tmp: self.tmp.take(),
            path: self.path.clone(),
            dir: self.dir.clone(),
            last: self.last,
        })
    }
}

impl Write for FileSnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| std::io::Error::other("snapshot writer already finished"))?;
        let n = out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.data_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl SnapshotWriter for FileSnapshotWriter {
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedSnapshot>, StorageError> {
        Ok(Box::new(self.finish_inner()?))
    }
}

/// A complete, synced snapshot file still under its temporary name.
struct FileStaged {
    fs: Arc<dyn Fs>,
    tmp: Option<TempFile>,
    path: PathBuf,
    dir: PathBuf,
    last: LogId,
}

impl StagedSnapshot for FileStaged {
    fn reader(&self) -> Result<SnapshotReader, StorageError> {
        let tmp = self
            .tmp
            .as_ref()
            .map(|t| t.path.clone())
            .unwrap_or_default();
        open_reader(&*self.fs, &tmp, self.last, None)?.ok_or_else(|| {
            FileStoreError::io(
                "open",
                &tmp,
                std::io::Error::new(std::io::ErrorKind::NotFound, "staged snapshot vanished"),
            )
            .into()
        })
    }

    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let Some(tmp) = self.tmp.take() else {
            return Err(StorageError::Other(
                "staged snapshot already committed".into(),
            ));
        };
        if let Err(e) = self.fs.rename(&tmp.path, &self.path) {
            return Err(FileStoreError::io("rename", &tmp.path, e).into());
        }
        tmp.keep();
        Ok(fsutil::sync_dir(&*self.fs, &self.dir)?)
    }
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl SnapshotStore for FileSnapshotStore {
    fn writer(&self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::new(self.writer_inner(meta)?))
    }

    fn reader(&self, last: LogId) -> Result<Option<SnapshotReader>, StorageError> {
        Ok(self.reader_inner(last)?)
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        Ok(self.list_inner()?)
    }

    fn retain(&self, keep: usize) -> Result<(), StorageError> {
        Ok(self.retain_inner(keep)?)
    }

    fn remove(&self, last: LogId) -> Result<(), StorageError> {
        Ok(self.remove_inner(last)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lockstep_core::MembershipConfig;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(1, index),
            membership: MembershipConfig::new_voters([1, 2, 3]),
        }
    }

    #[test]
    fn retention_after_a_snapshot_file_vanished_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSnapshotStore::open(dir.path()).unwrap();
        for i in 1..=4 {
            s.save(&meta(i), Bytes::from(vec![i as u8; 100])).unwrap();
        }
        let ids = s.ids().unwrap();
        // Another retention removes the oldest after this one listed it.
        std::fs::remove_file(s.path_of(ids[0])).unwrap();
        s.remove_old(&Readers::new(), &ids, 2).unwrap();
        assert_eq!(s.ids().unwrap(), ids[2..]);
        // All listed ones gone: nothing to do, still fine.
        for id in &ids[..3] {
            let _ = std::fs::remove_file(s.path_of(*id));
        }
        s.remove_old(&Readers::new(), &ids, 1).unwrap();
        s.retain_inner(1).unwrap();
        assert_eq!(s.ids().unwrap(), ids[3..]);
    }

    #[test]
    fn a_refused_snapshot_is_removed_and_removing_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSnapshotStore::open(dir.path()).unwrap();
        s.save(&meta(1), Bytes::from_static(b"one")).unwrap();
        s.save(&meta(2), Bytes::from_static(b"two")).unwrap();
        SnapshotStore::remove(&s, meta(2).last_log_id).unwrap();
        assert!(s.reader(meta(2).last_log_id).unwrap().is_none());
        assert!(s.reader(meta(1).last_log_id).unwrap().is_some());
        SnapshotStore::remove(&s, meta(2).last_log_id).unwrap();
    }
}
