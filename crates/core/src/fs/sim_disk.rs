//! The state behind [`super::SimFs`]: inodes, directories and open files.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::FsFile;

/// Largest file the simulated disk holds (it keeps every file in memory, twice).
const MAX_FILE: u64 = 1 << 33;

#[derive(Debug, Clone)]
pub(super) struct Disk {
    /// Bumped by every crash; handles and views of older generations are dead.
    pub(super) generation: u64,
    pub(super) next_ino: u64,
    pub(super) inodes: BTreeMap<u64, Inode>,
    /// Every directory by its normalized path ("/" always present).
    pub(super) dirs: BTreeMap<PathBuf, Dir>,
    pub(super) failing_syncs: u32,
    /// Syncs that still succeed before the `failing_syncs` start failing.
    pub(super) syncs_before_failing: u32,
}

impl Default for Disk {
    fn default() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        Self {
            generation: 0,
            next_ino: 1,
            inodes: BTreeMap::new(),
            dirs,
            failing_syncs: 0,
            syncs_before_failing: 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Inode {
    pub(super) current: Vec<u8>,
    pub(super) durable: Vec<u8>,
    /// Changes since the last sync, oldest first.
    pub(super) unsynced: Vec<Op>,
    /// Open handles of the current generation.
    pub(super) open: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
pub(super) struct Dir {
    pub(super) current: BTreeMap<OsString, Node>,
    pub(super) durable: BTreeMap<OsString, Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    File(u64),
    Dir,
}

pub(super) fn err(kind: ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("simulated fs: {what}: {}", path.display()))
}

pub(super) fn stale() -> io::Error {
    io::Error::other("simulated fs: the disk crashed since this file or view was opened")
}

pub(super) fn sync_failure() -> io::Error {
    io::Error::other("simulated fsync failure")
}

/// `path` as an absolute path without `.` or `..` (a relative path is taken from `/`).
pub(super) fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Prefix(_) => {
                return Err(err(ErrorKind::InvalidInput, "unsupported path", path))
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

/// Parent directory and name of a normalized path; `None` for the root.
pub(super) fn split(p: &Path) -> Option<(&Path, &OsStr)> {
    Some((p.parent()?, p.file_name()?))
}

pub(super) fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let at = *offset as usize;
            if buf.len() < at + data.len() {
                buf.resize(at + data.len(), 0);
            }
            buf[at..at + data.len()].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

impl Inode {
    pub(super) fn change(&mut self, op: Op) {
        apply(&mut self.current, &op);
        self.unsynced.push(op);
    }

    pub(super) fn sync(&mut self) {
        for op in std::mem::take(&mut self.unsynced) {
            apply(&mut self.durable, &op);
        }
        debug_assert!(self.durable == self.current);
    }

    /// Which bytes of the current content are synced: equal to the durable content and
    /// touched by no unsynced change.
    pub(super) fn synced_bytes(&self) -> Vec<bool> {
        let n = self.current.len().min(self.durable.len());
        let mut ok: Vec<bool> = (0..n).map(|i| self.current[i] == self.durable[i]).collect();
        for op in &self.unsynced {
            let (a, b) = match op {
                Op::Write { offset, data } => (*offset as usize, *offset as usize + data.len()),
                Op::SetLen(len) => (*len as usize, n),
            };
            for x in ok.iter_mut().take(b.min(n)).skip(a) {
                *x = false;
            }
        }
        ok
    }
}

impl Disk {
    /// What `p` (normalized) names in the current state.
    pub(super) fn lookup(&self, p: &Path) -> io::Result<Option<Node>> {
        let Some((parent, name)) = split(p) else {
            return Ok(Some(Node::Dir));
        };
        match self.dirs.get(parent) {
            Some(d) => Ok(d.current.get(name).copied()),
            None => match self.lookup(parent) {
                Ok(Some(Node::File(_))) => {
                    Err(err(ErrorKind::NotADirectory, "not a directory", parent))
                }
                _ => Err(err(ErrorKind::NotFound, "no such directory", parent)),
            },
        }
    }

    pub(super) fn file(&self, p: &Path) -> io::Result<u64> {
        match self.lookup(p)? {
            Some(Node::File(ino)) => Ok(ino),
            Some(Node::Dir) => Err(err(ErrorKind::IsADirectory, "is a directory", p)),
            None => Err(err(ErrorKind::NotFound, "no such file", p)),
        }
    }

    pub(super) fn dir_mut(&mut self, p: &Path) -> &mut Dir {
        self.dirs.entry(p.to_path_buf()).or_default()
    }

    pub(super) fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.entry(ino).or_default()
    }

    pub(super) fn referenced(&self) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        for d in self.dirs.values() {
            for n in d.current.values().chain(d.durable.values()) {
                if let Node::File(ino) = n {
                    set.insert(*ino);
                }
            }
        }
        set
    }

    /// Forgets the inode if no directory entry (current or durable) nor open handle has it.
    pub(super) fn collect(&mut self, ino: u64) {
        if self.inodes.get(&ino).is_some_and(|i| i.open == 0) && !self.referenced().contains(&ino) {
            self.inodes.remove(&ino);
        }
    }

    /// Consumes one pending sync failure, if any.
    pub(super) fn sync_fails(&mut self) -> bool {
        if self.failing_syncs > 0 && self.syncs_before_failing > 0 {
            self.syncs_before_failing -= 1;
            return false;
        }
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            true
        } else {
            false
        }
    }

    /// Every file reachable through the current directory entries, by path.
    pub(super) fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for (dir, d) in &self.dirs {
            for (name, n) in &d.current {
                if let Node::File(ino) = n {
                    out.push((dir.join(name), *ino));
                }
            }
        }
        out.sort();
        out
    }
}
/// A file opened on a [`SimFs`].
pub(super) struct SimFile {
    pub(super) disk: Arc<Mutex<Disk>>,
    pub(super) ino: u64,
    pub(super) generation: u64,
    pub(super) readable: bool,
    pub(super) writable: bool,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the disk and this file's inode, unless the disk crashed since the open.
    fn with<R>(&self, f: impl FnOnce(&mut Disk, u64) -> io::Result<R>) -> io::Result<R> {
        let mut d = self.lock();
        if d.generation != self.generation {
            return Err(stale());
        }
        f(&mut d, self.ino)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(err(
                ErrorKind::PermissionDenied,
                "not open for writing",
                &self.path,
            ))
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|d, ino| {
            if d.sync_fails() {
                return Err(sync_failure());
            }
            d.inode(ino).sync();
            Ok(())
        })
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if !self.readable {
            return Err(err(
                ErrorKind::PermissionDenied,
                "not open for reading",
                &self.path,
            ));
        }
        self.with(|d, ino| {
            let cur = &d.inode(ino).current;
            let start = (offset.min(cur.len() as u64)) as usize;
            let n = buf.len().min(cur.len() - start);
            buf[..n].copy_from_slice(&cur[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        if offset.saturating_add(buf.len() as u64) > MAX_FILE {
            return Err(err(ErrorKind::FileTooLarge, "file too large", &self.path));
        }
        self.with(|d, ino| {
            if !buf.is_empty() {
                d.inode(ino).change(Op::Write {
                    offset,
                    data: buf.to_vec(),
                });
            }
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if len > MAX_FILE {
            return Err(err(ErrorKind::FileTooLarge, "file too large", &self.path));
        }
        self.with(|d, ino| {
            d.inode(ino).change(Op::SetLen(len));
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|d, ino| Ok(d.inode(ino).current.len() as u64))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut d = self.lock();
        if d.generation == self.generation {
            if let Some(i) = d.inodes.get_mut(&self.ino) {
                i.open = i.open.saturating_sub(1);
            }
            d.collect(self.ino);
        }
    }
}
