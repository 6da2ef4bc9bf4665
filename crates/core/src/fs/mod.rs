//! A small filesystem interface for the storage backends, so the same code runs on the real
//! filesystem ([`StdFs`]) and on a simulated disk in a deterministic simulator ([`SimFs`]).
//!
//! The interface is what a write-ahead log and a snapshot store need: positioned reads and
//! writes, `fsync` of files and of directories, create, rename, remove and list. Paths are
//! passed through unchanged; every operation returns a plain [`std::io::Result`], and callers
//! add the path and operation to their errors.
//!
//! [`SimFs`] models a POSIX disk with a page cache: writes, creates, renames and removes are
//! visible at once but become durable only when the file (`sync_data`/`sync_all`) or the
//! directory (`sync_dir`) is synced; [`SimFs::crash`] throws away everything else.

use std::ffi::OsString;
use std::fmt::Debug;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;

mod sim_disk;
mod sim_fs;
mod std_fs;
#[cfg(test)]
mod tests;

pub use sim_fs::{BitFlip, SimFs};
pub use std_fs::StdFs;

/// How [`Fs::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    Read,
    /// An existing file, for reading and writing.
    ReadWrite,
    /// For reading and writing, created (empty) if missing, never truncated.
    CreateReadWrite,
    /// For writing, created if missing and truncated to zero length if present.
    CreateTruncate,
    /// For reading and writing, created; fails with [`ErrorKind::AlreadyExists`] if the
    /// file exists (`O_CREAT | O_EXCL`).
    CreateNew,
}

/// A filesystem: the directory operations and a way to open files.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Opens the file at `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    /// Reads the whole file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Removes the file at `path` (not a directory).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames the file `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names of the entries of the directory `dir`, sorted.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Creates the directory `dir`, whose parent must exist; fails with
    /// [`ErrorKind::AlreadyExists`] if `dir` exists.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the entries of the directory `dir` (files created, renamed or removed in it)
    /// durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Length in bytes of the file at `path`.
    fn metadata_len(&self, path: &Path) -> io::Result<u64>;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether anything exists at `path`.
    fn exists(&self, path: &Path) -> bool;
}

/// An open file of an [`Fs`]: positioned reads and writes, no cursor (see [`FileCursor`]).
pub trait FsFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Makes the file's data (and length) durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; [`ErrorKind::UnexpectedEof`] if the file
    /// ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => break,
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ))
        }
    }
}

/// An [`FsFile`] with a position, implementing [`Read`], [`Write`] and [`Seek`] (so it can sit
/// under a [`std::io::BufReader`] or [`std::io::BufWriter`]).
#[derive(Debug)]
pub struct FileCursor {
    file: Box<dyn FsFile>,
    pos: u64,
}

impl FileCursor {
    /// A cursor at the start of `file`.
    pub fn new(file: Box<dyn FsFile>) -> Self {
        Self { file, pos: 0 }
    }

    /// The file.
    pub fn get_ref(&self) -> &dyn FsFile {
        &*self.file
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file, dropping the position.
    pub fn into_inner(self) -> Box<dyn FsFile> {
        self.file
    }
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FileCursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.file.len()?, d),
        };
        match base.checked_add_signed(delta) {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                ErrorKind::InvalidInput,
                "invalid seek to a negative or overflowing position",
            )),
        }
    }
}

/// Creates `dir` and any missing ancestors on `fs`, and makes each directory it creates
/// durable by syncing that directory's parent right after creating it; the semantics of
/// [`crate::storage::create_dir_all_synced`] on any [`Fs`]. Succeeds without syncing
/// anything when `dir` already exists; fails if `dir` or an ancestor exists but is not a
/// directory.
pub fn create_dir_all_synced(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    // The missing directories, deepest first.
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        if fs.is_dir(at) {
            break;
        }
        if fs.exists(at) {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", at.display()),
            ));
        }
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            // A relative path's first component: its parent is the working directory.
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs.create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && fs.is_dir(d) => {}
            Err(e) => return Err(e),
        }
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs.sync_dir(parent)?;
        tracing::debug!(dir = %d.display(), "created directory");
    }
    Ok(())
}
