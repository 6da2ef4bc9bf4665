//! [`FileSnapshotStore`]: one checksummed file per snapshot.
//!
//! ```text
//! name = "snap-" term (20 digits) "-" index (20 digits) ".snap"
//! file = magic "LSTPSNAP" | version u32 | meta length u32 | data length u64
//!        | data crc32c u32 | header crc32c u32 (of bytes 8..28 and the meta) | meta | data
//! ```
//!
//! A save writes `<name>.tmp`, `fsync`s it, renames it over `<name>` and syncs the
//! directory. Temporary files left by a crash are removed on open.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes};
use lockstep_core::codec::{self, Reader};
use lockstep_core::{LogId, SnapshotMeta, SnapshotStore, StorageError};

use crate::error::{FileStoreError, Result};
use crate::fsutil;

const MAGIC: [u8; 8] = *b"LSTPSNAP";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const MAX_META: usize = 64 << 20;

/// A [`SnapshotStore`] keeping each snapshot in its own checksummed file in one directory.
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    tmp_seq: AtomicU64,
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
        let dir = dir.as_ref().to_path_buf();
        fsutil::ensure_dir(&dir)?;
        let mut removed = false;
        for (name, path) in Self::names(&dir)? {
            if name.ends_with(".snap.tmp") {
                fsutil::remove(&path)?;
                removed = true;
            }
        }
        if removed {
            fsutil::sync_dir(&dir)?;
        }
        Ok(Self {
            dir,
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the file of snapshot `id` (whether or not it exists).
    pub fn path_of(&self, id: LogId) -> PathBuf {
        self.dir.join(snapshot_name(id))
    }

    fn names(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let rd = std::fs::read_dir(dir).map_err(|e| FileStoreError::io("list", dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| FileStoreError::io("list", dir, e))?;
            if let Some(n) = ent.file_name().to_str() {
                out.push((n.to_string(), ent.path()));
            }
        }
        Ok(out)
    }

    /// Stored snapshot ids (from the file names), oldest first.
    fn ids(&self) -> Result<Vec<LogId>> {
        let mut ids: Vec<LogId> = Self::names(&self.dir)?
            .iter()
            .filter_map(|(n, _)| parse_name(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn save_inner(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let path = self.path_of(meta.last_log_id);
        let mut meta_bytes = Vec::new();
        codec::put_snapshot_meta(&mut meta_bytes, meta);
        let mut head = Vec::with_capacity(HEADER + meta_bytes.len());
        head.extend_from_slice(&MAGIC);
        head.put_u32_le(VERSION);
        head.put_u32_le(meta_bytes.len() as u32);
        head.put_u64_le(data.len() as u64);
        head.put_u32_le(crc32c::crc32c(data));
        let hdr_crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..28]), &meta_bytes);
        head.put_u32_le(hdr_crc);
        head.extend_from_slice(&meta_bytes);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            "{}.{}-{seq}.snap.tmp",
            snapshot_name(meta.last_log_id),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&head)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(FileStoreError::io("write", &tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| FileStoreError::io("rename", &tmp, e))?;
        fsutil::sync_dir(&self.dir)
    }

    fn load_inner(&self, last: LogId) -> Result<Option<Bytes>> {
        let path = self.path_of(last);
        let buf = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileStoreError::io("read", &path, e)),
        };
        let h = parse_header(&path, &buf, buf.len() as u64)?;
        if h.meta.last_log_id != last {
            return Err(FileStoreError::corrupt(
                &path,
                HEADER as u64,
                format!("file holds snapshot {} instead", h.meta.last_log_id),
            ));
        }
        let start = HEADER + h.meta_len;
        let buf = Bytes::from(buf);
        let data = buf.slice(start..start + h.data_len as usize);
        if crc32c::crc32c(&data) != h.data_crc {
            return Err(FileStoreError::corrupt(
                &path,
                start as u64,
                "snapshot data checksum mismatch",
            ));
        }
        Ok(Some(data))
    }

    fn list_inner(&self) -> Result<Vec<SnapshotMeta>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let path = self.path_of(id);
            let mut f = File::open(&path).map_err(|e| FileStoreError::io("open", &path, e))?;
            let file_len = f
                .metadata()
                .map_err(|e| FileStoreError::io("stat", &path, e))?
                .len();
            let mut head = [0u8; HEADER];
            let n =
                read_up_to(&mut f, &mut head).map_err(|e| FileStoreError::io("read", &path, e))?;
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
                    .map_err(|e| FileStoreError::io("read", &path, e))?;
            }
            let h = parse_header(&path, &buf, file_len)?;
            out.push(h.meta);
        }
        Ok(out)
    }

    fn retain_inner(&self, keep: usize) -> Result<()> {
        let ids = self.ids()?;
        let n = ids.len().saturating_sub(keep);
        for id in &ids[..n] {
            fsutil::remove(&self.path_of(*id))?;
        }
        if n > 0 {
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
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
    fn save(&self, meta: &SnapshotMeta, data: Bytes) -> Result<(), StorageError> {
        Ok(self.save_inner(meta, &data)?)
    }

    fn load(&self, last: LogId) -> Result<Option<Bytes>, StorageError> {
        Ok(self.load_inner(last)?)
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        Ok(self.list_inner()?)
    }

    fn retain(&self, keep: usize) -> Result<(), StorageError> {
        Ok(self.retain_inner(keep)?)
    }
}
