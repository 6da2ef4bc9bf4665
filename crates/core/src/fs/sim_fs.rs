//! [`SimFs`]: an in-memory disk with a page cache, for deterministic crash testing.
//!
//! See [`SimFs`] for the model.

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::sim_disk::{
    apply, err, normalize, split, stale, sync_failure, Dir, Disk, Inode, Node, Op, SimFile,
};
use super::{Fs, FsFile, OpenMode};
use crate::rng::Rng;

/// A simulated disk with a page cache; clones share it.
///
/// Model:
/// - A file is an inode with its *current* content (what reads see) and its *durable*
///   content (what survives a crash), plus the writes and truncations made since its last
///   sync, in order. `sync_data`/`sync_all` make the current content durable.
/// - Each directory has a *current* and a *durable* set of entries (name to file inode or
///   subdirectory). Creating, renaming and removing change the current set; only
///   `sync_dir` of that directory makes its current set durable. A synced file whose
///   directory entry was never synced is lost at a crash, and so is a directory (with
///   everything below it) whose entry in its parent was never synced.
/// - [`SimFs::crash`] reverts every directory and every file to its durable state, except
///   that with torn writes a random prefix of each file's unsynced writes survives, the
///   last one possibly cut short. Files opened before the crash, and process views pinned
///   before it ([`SimFs::process_view`]), fail every later operation.
///
/// Everything is deterministic: ordered maps only, and all random choices come from the
/// [`Rng`] passed in.
#[derive(Clone, Default)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
    /// For a process view: the disk generation it belongs to.
    pinned: Option<u64>,
}

/// One bit flipped by [`SimFs::flip_bit`]; [`SimFs::unflip`] undoes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitFlip {
    /// The file (its current path).
    pub path: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// The bit flipped in that byte (one bit set).
    pub mask: u8,
}

impl SimFs {
    /// An empty disk holding only the root directory `/`.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // Every operation leaves the disk consistent before it could panic.
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The disk, unless this is a process view from before a crash.
    fn live(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let d = self.lock();
        match self.pinned {
            Some(g) if g != d.generation => Err(stale()),
            _ => Ok(d),
        }
    }

    /// A handle on the same disk for one incarnation of a process: once the disk crashes,
    /// every operation through it fails (so that objects of the "dead" process, such as a
    /// temporary file removed on drop, cannot touch the disk any more). A view of a view
    /// is pinned to the current generation too.
    pub fn process_view(&self) -> SimFs {
        SimFs {
            disk: self.disk.clone(),
            pinned: Some(self.lock().generation),
        }
    }

    /// How many crashes the disk has been through.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Simulates a power loss: every directory's entries revert to their durable version
    /// (directories no longer reachable vanish) and every file's content to its durable
    /// content. With `torn`, a random prefix of each file's unsynced writes and truncations
    /// survives instead, the last surviving write possibly cut short. Files opened and
    /// process views taken before the crash fail all later operations.
    pub fn crash(&self, rng: &mut Rng, torn: bool) {
        let mut d = self.lock();
        d.generation += 1;
        for dir in d.dirs.values_mut() {
            dir.current = dir.durable.clone();
        }
        // Parents sort before their children.
        let paths: Vec<PathBuf> = d.dirs.keys().cloned().collect();
        for p in paths {
            let Some((parent, name)) = split(&p) else {
                continue;
            };
            let linked = d
                .dirs
                .get(parent)
                .is_some_and(|pd| pd.current.get(name) == Some(&Node::Dir));
            if !linked {
                d.dirs.remove(&p);
            }
        }
        for inode in d.inodes.values_mut() {
            let ops = std::mem::take(&mut inode.unsynced);
            if torn && !ops.is_empty() {
                let k = rng.range(0, ops.len() as u64 + 1) as usize;
                for op in &ops[..k] {
                    apply(&mut inode.durable, op);
                }
                if let Some(Op::Write { offset, data }) = ops.get(k) {
                    if data.len() > 1 && rng.chance(0.5) {
                        let cut = rng.range(1, data.len() as u64) as usize;
                        let part = Op::Write {
                            offset: *offset,
                            data: data[..cut].to_vec(),
                        };
                        apply(&mut inode.durable, &part);
                    }
                }
            }
            inode.current = inode.durable.clone();
            inode.open = 0;
        }
        let live = d.referenced();
        d.inodes.retain(|ino, _| live.contains(ino));
    }

    /// Makes the next `n` syncs (of files or directories) fail with an I/O error
    /// ("simulated fsync failure") without making anything durable.
    pub fn fail_syncs(&self, n: u32) {
        self.fail_syncs_after(0, n);
    }

    /// Lets `skip` more syncs succeed, then makes the `n` after them fail (a crash point
    /// inside a batch of writes: whatever the earlier syncs made durable stays so).
    pub fn fail_syncs_after(&self, skip: u32, n: u32) {
        let mut d = self.lock();
        d.syncs_before_failing = skip;
        d.failing_syncs = n;
    }

    /// A separate disk holding exactly what this one holds durably: what a power loss
    /// right now would leave (without torn writes). For checks that read what survives.
    pub fn durable_copy(&self) -> SimFs {
        let copy = SimFs {
            disk: Arc::new(Mutex::new(self.lock().clone())),
            pinned: None,
        };
        copy.crash(&mut Rng::new(0), false);
        copy
    }

    /// Simulates the death of the process (`SIGKILL`) without a power loss: the page cache
    /// survives, so data written but not synced stays readable (and still not durable);
    /// files opened and process views taken before fail all later operations.
    pub fn kill_process(&self) {
        let mut d = self.lock();
        d.generation += 1;
        for inode in d.inodes.values_mut() {
            inode.open = 0;
        }
        let live = d.referenced();
        d.inodes.retain(|ino, _| live.contains(ino));
    }

    /// Flips one random bit of synced data (a byte whose current content is durable and
    /// not touched since the last sync) of a random file, in both its current and durable
    /// content: damage at rest. `None` when no file has synced data.
    pub fn flip_bit(&self, rng: &mut Rng) -> Option<BitFlip> {
        let mut d = self.lock();
        let mut candidates = Vec::new();
        for (path, ino) in d.files() {
            let synced = d.inodes.get(&ino).map(Inode::synced_bytes)?;
            let n = synced.iter().filter(|b| **b).count();
            if n > 0 {
                candidates.push((path, ino, synced, n));
            }
        }
        let (path, ino, synced, n) = rng.pick(&candidates)?.clone();
        let k = rng.range(0, n as u64) as usize;
        let offset = synced.iter().enumerate().filter(|(_, b)| **b).nth(k)?.0;
        let mask = 1u8 << rng.range(0, 8);
        let inode = d.inode(ino);
        inode.current[offset] ^= mask;
        inode.durable[offset] ^= mask;
        Some(BitFlip {
            path,
            offset: offset as u64,
            mask,
        })
    }

    /// Flips the bits `mask` of the synced byte at `offset` of the file `path` (current and
    /// durable content); fails if that byte is not synced data.
    pub fn flip_bit_at(&self, path: &Path, offset: u64, mask: u8) -> io::Result<BitFlip> {
        let p = normalize(path)?;
        let mut d = self.lock();
        let ino = d.file(&p)?;
        let inode = d.inode(ino);
        let at = offset as usize;
        if !inode.synced_bytes().get(at).copied().unwrap_or(false) {
            return Err(err(ErrorKind::InvalidInput, "byte is not synced data", &p));
        }
        inode.current[at] ^= mask;
        inode.durable[at] ^= mask;
        Ok(BitFlip {
            path: p,
            offset,
            mask,
        })
    }

    /// Undoes a [`BitFlip`] (flips the same bits again, wherever the file still has that
    /// byte, current or durable).
    pub fn unflip(&self, flip: &BitFlip) -> io::Result<()> {
        let p = normalize(&flip.path)?;
        let mut d = self.lock();
        let ino = d.file(&p)?;
        let inode = d.inode(ino);
        let at = flip.offset as usize;
        let mut found = false;
        for buf in [&mut inode.current, &mut inode.durable] {
            if let Some(b) = buf.get_mut(at) {
                *b ^= flip.mask;
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(err(ErrorKind::InvalidInput, "offset past the end", &p))
        }
    }

    /// Bytes of current file content on the disk (files removed but still open included).
    pub fn usage_bytes(&self) -> u64 {
        self.lock()
            .inodes
            .values()
            .map(|i| i.current.len() as u64)
            .sum()
    }

    /// Every file reachable now, with its current length, by path.
    pub fn list_files(&self) -> Vec<(PathBuf, u64)> {
        let d = self.lock();
        d.files()
            .into_iter()
            .map(|(p, ino)| {
                let len = d.inodes.get(&ino).map_or(0, |i| i.current.len() as u64);
                (p, len)
            })
            .collect()
    }

    /// The durable (what a crash would keep, without torn writes) content of the file at
    /// `path`, if its current entry is a file.
    pub fn durable_content(&self, path: &Path) -> io::Result<Vec<u8>> {
        let p = normalize(path)?;
        let d = self.lock();
        let ino = d.file(&p)?;
        Ok(d.inodes
            .get(&ino)
            .map(|i| i.durable.clone())
            .unwrap_or_default())
    }
}

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.lock();
        f.debug_struct("SimFs")
            .field("generation", &d.generation)
            .field("pinned", &self.pinned)
            .field("files", &d.inodes.len())
            .field("dirs", &d.dirs.len())
            .finish()
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let p = normalize(path)?;
        let mut d = self.live()?;
        let ino = match d.lookup(&p)? {
            Some(Node::Dir) => return Err(err(ErrorKind::IsADirectory, "is a directory", &p)),
            Some(Node::File(_)) if mode == OpenMode::CreateNew => {
                return Err(err(ErrorKind::AlreadyExists, "file exists", &p))
            }
            Some(Node::File(ino)) => {
                if mode == OpenMode::CreateTruncate {
                    d.inode(ino).change(Op::SetLen(0));
                }
                ino
            }
            None if matches!(mode, OpenMode::Read | OpenMode::ReadWrite) => {
                return Err(err(ErrorKind::NotFound, "no such file", &p))
            }
            None => {
                let Some((parent, name)) = split(&p) else {
                    return Err(err(ErrorKind::IsADirectory, "is a directory", &p));
                };
                let ino = d.next_ino;
                d.next_ino += 1;
                d.inodes.insert(ino, Inode::default());
                d.dir_mut(parent)
                    .current
                    .insert(name.into(), Node::File(ino));
                ino
            }
        };
        d.inode(ino).open += 1;
        Ok(Box::new(SimFile {
            disk: self.disk.clone(),
            ino,
            generation: d.generation,
            readable: mode != OpenMode::CreateTruncate,
            writable: mode != OpenMode::Read,
            path: p,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let p = normalize(path)?;
        let mut d = self.live()?;
        let ino = d.file(&p)?;
        Ok(d.inode(ino).current.clone())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let p = normalize(path)?;
        let mut d = self.live()?;
        let ino = d.file(&p)?;
        if let Some((parent, name)) = split(&p) {
            d.dir_mut(parent).current.remove(name);
        }
        d.collect(ino);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (normalize(from)?, normalize(to)?);
        let mut d = self.live()?;
        let ino = match d.lookup(&from)? {
            Some(Node::File(ino)) => ino,
            Some(Node::Dir) => {
                return Err(err(
                    ErrorKind::Unsupported,
                    "renaming a directory is not simulated",
                    &from,
                ))
            }
            None => return Err(err(ErrorKind::NotFound, "no such file", &from)),
        };
        if d.lookup(&to)? == Some(Node::Dir) {
            return Err(err(ErrorKind::IsADirectory, "is a directory", &to));
        }
        if from == to {
            return Ok(());
        }
        let (Some((fp, fname)), Some((tp, tname))) = (split(&from), split(&to)) else {
            return Err(err(
                ErrorKind::InvalidInput,
                "cannot rename the root",
                &from,
            ));
        };
        d.dir_mut(fp).current.remove(fname);
        let old = d.dir_mut(tp).current.insert(tname.into(), Node::File(ino));
        if let Some(Node::File(old)) = old {
            d.collect(old);
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let p = normalize(dir)?;
        let d = self.live()?;
        match d.lookup(&p)? {
            Some(Node::Dir) => Ok(d
                .dirs
                .get(&p)
                .map(|x| x.current.keys().cloned().collect())
                .unwrap_or_default()),
            Some(Node::File(_)) => Err(err(ErrorKind::NotADirectory, "not a directory", &p)),
            None => Err(err(ErrorKind::NotFound, "no such directory", &p)),
        }
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let p = normalize(dir)?;
        let mut d = self.live()?;
        if d.lookup(&p)?.is_some() {
            return Err(err(ErrorKind::AlreadyExists, "already exists", &p));
        }
        let Some((parent, name)) = split(&p) else {
            return Err(err(ErrorKind::AlreadyExists, "already exists", &p));
        };
        d.dir_mut(parent).current.insert(name.into(), Node::Dir);
        d.dirs.insert(p.clone(), Dir::default());
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let p = normalize(dir)?;
        let mut d = self.live()?;
        match d.lookup(&p)? {
            Some(Node::Dir) => {}
            Some(Node::File(_)) => {
                return Err(err(ErrorKind::NotADirectory, "not a directory", &p))
            }
            None => return Err(err(ErrorKind::NotFound, "no such directory", &p)),
        }
        if d.sync_fails() {
            return Err(sync_failure());
        }
        let dir = d.dir_mut(&p);
        dir.durable = dir.current.clone();
        // Files whose last entry this made durable as removed are gone for good.
        let live = d.referenced();
        d.inodes.retain(|ino, i| i.open > 0 || live.contains(ino));
        Ok(())
    }

    fn metadata_len(&self, path: &Path) -> io::Result<u64> {
        let p = normalize(path)?;
        let mut d = self.live()?;
        match d.lookup(&p)? {
            Some(Node::File(ino)) => Ok(d.inode(ino).current.len() as u64),
            Some(Node::Dir) => Ok(0),
            None => Err(err(ErrorKind::NotFound, "no such file", &p)),
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        let (Ok(p), Ok(d)) = (normalize(path), self.live()) else {
            return false;
        };
        matches!(d.lookup(&p), Ok(Some(Node::Dir)))
    }

    fn exists(&self, path: &Path) -> bool {
        let (Ok(p), Ok(d)) = (normalize(path), self.live()) else {
            return false;
        };
        matches!(d.lookup(&p), Ok(Some(_)))
    }
}
