//! [`SledKvStateMachine`]: a durable key-value [`StateMachine`] on sled.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use lockstep_core::state_machine::{KvCommand, KvQuery, KvResponse, SnapshotView};
use lockstep_core::{Command, CommandError, CommandResult, LogId, StateMachine, StateMachineError};

use crate::error::{Result, SledStoreError};
use crate::kv_view::{Overlay, SledKvView};
use crate::util;

/// Name of the tree holding the machine's format marker and current data generation.
pub const KV_META_TREE: &str = "lockstep.kv.meta";
/// Prefix of the data trees' names; the current one is `<prefix><generation>`.
pub const KV_DATA_TREE_PREFIX: &str = "lockstep.kv.data.";

const KEY_FORMAT: &[u8] = b"format";
const KEY_GENERATION: &[u8] = b"generation";
const FORMAT: &[u8] = b"lockstep-sled-kv/1";

/// In a data tree, user keys are stored behind this byte...
pub(crate) const DATA_PREFIX: u8 = 0x01;
/// ...and the last applied id under this key, which sorts before every user key.
const LAST_APPLIED_KEY: &[u8] = b"\x00last_applied";

// The snapshot format of `lockstep_core::KvStateMachine` (documented there), which this
// machine writes and reads byte for byte.
pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"LKVS";
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

/// Entries (or bytes) written per sled batch while restoring a snapshot.
const RESTORE_BATCH_ENTRIES: usize = 1024;
const RESTORE_BATCH_BYTES: usize = 4 << 20;

fn data_tree_name(generation: u64) -> String {
    format!("{KV_DATA_TREE_PREFIX}{generation}")
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

fn encode_log_id(id: LogId) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&id.term.to_le_bytes());
    v[8..].copy_from_slice(&id.index.to_le_bytes());
    v
}

/// The data tree in use and its generation.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) tree: sled::Tree,
    pub(crate) name: String,
    pub(crate) generation: u64,
    /// Shared by every holder of the tree (the machine, live views): a tree a restore
    /// replaced is dropped when the last holder lets go of it.
    owner: Arc<TreeOwner>,
}

/// Drops a retired data tree once nothing reads it any more: a view may still be
/// iterating the tree a restore replaced.
#[derive(Debug)]
struct TreeOwner {
    db: sled::Db,
    name: String,
    retired: AtomicBool,
}

impl TreeOwner {
    fn new(db: &sled::Db, name: &str) -> Arc<Self> {
        Arc::new(Self {
            db: db.clone(),
            name: name.to_owned(),
            retired: AtomicBool::new(false),
        })
    }
}

impl Drop for TreeOwner {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            if let Err(e) = self.db.drop_tree(&self.name) {
                tracing::warn!(tree = %self.name, error = %e, "dropping the replaced data tree failed; it is dropped at the next open");
            }
        }
    }
}

/// A durable key-value [`StateMachine`] on [sled](https://docs.rs/sled/0.34), answering
/// exactly like [`lockstep_core::KvStateMachine`]: same [`KvCommand`], [`KvQuery`] and
/// [`KvResponse`] encodings, same answers, and the same snapshot format byte for byte (a
/// snapshot of either restores into the other).
///
/// # Storage
/// - The data lives in a tree named [`KV_DATA_TREE_PREFIX`]`<generation>`: user keys behind
///   a `0x01` byte, and the last applied [`LogId`] under a reserved key that sorts first.
///   [`KV_META_TREE`] records which generation is current.
/// - [`StateMachine::apply_chunk`] computes the chunk's answers, then writes all its data
///   changes **and** the new last-applied id as one sled [`sled::Batch`] (atomic, also
///   across a crash), then calls [`sled::Tree::flush`] and `fdatasync`s sled's files (see
///   [`crate::SledLogStore`] for why): the chunk is durable when the call returns, and [`StateMachine::last_applied`] reports it. Entries at or below
///   `last_applied` are skipped (answered with a [`CommandError`] saying so), so re-applying
///   them changes nothing.
/// - [`StateMachine::restore`] streams the snapshot into a fresh data tree (generation + 1),
///   checks it completely (CRC-32C, order, framing), flushes, and only then switches the
///   generation record in [`KV_META_TREE`] (one key, flushed) and drops the old tree. On any
///   error, or a crash before the switch, the old state and last-applied id stay; a
///   half-written tree left by a crash is dropped at the next open.
///
/// # Consistency of snapshots
/// sled iterators are not snapshot-isolated: an iterator running while a batch is applied
/// can see part of it. [`StateMachine::snapshot`] and [`StateMachine::snapshot_view`]
/// therefore write a [`SledKvView`]: taken under the machine's internal writer lock (which
/// serialises `apply_chunk`, taking a view and `restore`), it records the tree and the
/// last applied id, and from then on every apply first saves the pre-image of each key it
/// changes in the view's overlay; the view merges the live tree with those pre-images, so
/// what it streams is exactly the state at one last-applied id while applies go on. See
/// [`SledKvView`] for the argument and its costs. Queries do not take the lock: each is a
/// single sled `get`, which never sees half of a batch.
///
/// A query hitting a sled read error cannot fail the machine through
/// [`StateMachine::query`]'s signature; it is answered with a [`CommandError`] naming the
/// error.
#[derive(Debug)]
pub struct SledKvStateMachine {
    db: sled::Db,
    meta: sled::Tree,
    location: PathBuf,
    durability: Mutex<util::Durability>,
    current: RwLock<Current>,
    last: Mutex<Option<LogId>>,
    /// Serialises apply, taking a view and restore.
    writer: Mutex<()>,
    failed: Mutex<Option<String>>,
    /// The overlays of live [`SledKvView`]s, which applies keep the pre-images in.
    views: Mutex<Vec<Weak<Overlay>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the guarded values are plain data that
    // every writer leaves consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SledKvStateMachine {
    /// Opens (or creates) the machine in directory `dir`, as a sled database of its own.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let db = util::open_db(dir)?;
        Self::with_db(db, dir)
    }

    /// Opens (or creates) the machine in an already open sled database, for example one
    /// shared with a [`crate::SledLogStore`] (they use different trees). `dir` must be the
    /// directory `db` was opened in (its files are synced after every flush).
    pub fn with_db(db: sled::Db, dir: impl AsRef<Path>) -> Result<Self> {
        let location = dir.as_ref().to_path_buf();
        let durability = Mutex::new(util::Durability::open(&location)?);
        let meta = db
            .open_tree(KV_META_TREE)
            .map_err(|e| SledStoreError::sled(format!("open_tree `{KV_META_TREE}`"), e))?;
        util::check_format(&location, &meta, KV_META_TREE, KEY_FORMAT, FORMAT)?;
        let generation = match meta
            .get(KEY_GENERATION)
            .map_err(|e| SledStoreError::sled(format!("get in `{KV_META_TREE}`"), e))?
        {
            None => 0,
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_le_bytes)
                .map_err(|_| {
                    SledStoreError::corrupt(
                        KV_META_TREE,
                        util::show_key(KEY_GENERATION),
                        format!("expected an 8-byte generation, found {} bytes", v.len()),
                    )
                })?,
        };
        let name = data_tree_name(generation);
        let tree = db
            .open_tree(&name)
            .map_err(|e| SledStoreError::sled(format!("open_tree `{name}`"), e))?;
        // Drop data trees of other generations: left by a restore that a crash interrupted
        // (before its switch) or by a crash right after a switch.
        for other in db.tree_names() {
            if other.starts_with(KV_DATA_TREE_PREFIX.as_bytes())
                && other.as_ref() != name.as_bytes()
            {
                db.drop_tree(&other).map_err(|e| {
                    SledStoreError::sled(format!("drop_tree {}", util::show_key(&other)), e)
                })?;
            }
        }
        let last = match tree
            .get(LAST_APPLIED_KEY)
            .map_err(|e| SledStoreError::sled(format!("get in `{name}`"), e))?
        {
            None => None,
            Some(v) => Some(decode_log_id(&v).ok_or_else(|| {
                SledStoreError::corrupt(
                    &name,
                    util::show_key(LAST_APPLIED_KEY),
                    format!("expected a 16-byte log id, found {} bytes", v.len()),
                )
            })?),
        };
        let owner = TreeOwner::new(&db, &name);
        Ok(Self {
            db,
            meta,
            location,
            durability,
            current: RwLock::new(Current {
                owner,
                tree,
                name,
                generation,
            }),
            last: Mutex::new(last),
            writer: Mutex::new(()),
            failed: Mutex::new(None),
            views: Mutex::new(Vec::new()),
        })
    }

    /// The sled database under the machine.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The directory of the sled database.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The current value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let cur = self.current();
        cur.tree
            .get(data_key(key))
            .map(|v| v.map(|v| Bytes::copy_from_slice(&v)))
            .map_err(|e| SledStoreError::sled(format!("get in `{}`", cur.name), e))
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes every write so far durable (see [`util::Durability`]).
    fn flush(&self) -> Result<()> {
        lock(&self.durability).flush(&self.db)
    }

    fn check_usable(&self) -> Result<()> {
        match lock(&self.failed).as_ref() {
            Some(why) => Err(SledStoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, e: SledStoreError) -> SledStoreError {
        *lock(&self.failed) = Some(e.to_string());
        e
    }

    /// Applies `commands` (the body of [`StateMachine::apply_chunk`]).
    fn apply_sync(&self, commands: &[Command]) -> Result<Vec<CommandResult>> {
        let _w = lock(&self.writer);
        self.check_usable()?;
        let cur = self.current();
        let done = lock(&self.last).map_or(0, |l| l.index);
        let mut pending: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        let mut out = Vec::with_capacity(commands.len());
        let mut newest = None;
        for c in commands {
            if c.log_id.index <= done {
                out.push(Err(CommandError(format!(
                    "entry {} is already applied",
                    c.log_id
                ))));
                continue;
            }
            newest = Some(c.log_id);
            out.push(apply_one(&cur, &mut pending, &c.data)?);
        }
        let Some(newest) = newest else {
            return Ok(out);
        };
        self.record_pre_images(&cur, &pending)?;
        let mut batch = sled::Batch::default();
        for (k, v) in pending {
            match v {
                Some(v) => batch.insert(data_key(&k), v.as_ref()),
                None => batch.remove(data_key(&k)),
            }
        }
        batch.insert(LAST_APPLIED_KEY, &encode_log_id(newest));
        cur.tree.apply_batch(batch).map_err(|e| {
            self.fail(SledStoreError::sled(
                format!("apply_batch in `{}`", cur.name),
                e,
            ))
        })?;
        self.flush().map_err(|e| self.fail(e))?;
        *lock(&self.last) = Some(newest);
        Ok(out)
    }

    /// Writes the snapshot (the body of [`StateMachine::snapshot`]): through a view, so
    /// applies wait only while it is taken.
    fn snapshot_sync(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        Box::new(self.view()?).write_to(out)
    }

    /// A point-in-time view of the state, taken while no apply runs; applies go on while
    /// it is written. See [`SledKvView`].
    pub fn view(&self) -> Result<SledKvView> {
        let _w = lock(&self.writer);
        let cur = self.current();
        let last = *lock(&self.last);
        let overlay = Arc::new(Overlay::new(cur.generation));
        {
            let mut views = lock(&self.views);
            views.retain(|v| v.strong_count() > 0);
            views.push(Arc::downgrade(&overlay));
        }
        Ok(SledKvView::new(cur, overlay, last))
    }

    /// Number of live views (taken and not yet dropped).
    pub fn live_views(&self) -> usize {
        lock(&self.views)
            .iter()
            .filter(|v| v.strong_count() > 0)
            .count()
    }

    /// Before a chunk's changes are written: records, in every live view of the current
    /// tree, the value each changed key has now unless the view already holds one. Runs
    /// under the writer lock, so "now" is the state before the chunk.
    fn record_pre_images(
        &self,
        cur: &Current,
        pending: &BTreeMap<Bytes, Option<Bytes>>,
    ) -> Result<()> {
        let live: Vec<Arc<Overlay>> = {
            let mut views = lock(&self.views);
            views.retain(|v| v.strong_count() > 0);
            views
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|o| o.generation == cur.generation)
                .collect()
        };
        if live.is_empty() {
            return Ok(());
        }
        for key in pending.keys() {
            let dk = data_key(key);
            let mut before: Option<Option<sled::IVec>> = None;
            for o in &live {
                let mut pre = lock(&o.pre);
                if pre.contains_key(&dk) {
                    continue;
                }
                let v = match &before {
                    Some(v) => v.clone(),
                    None => {
                        let v = cur.tree.get(&dk).map_err(|e| {
                            SledStoreError::sled(format!("get in `{}`", cur.name), e)
                        })?;
                        before = Some(v.clone());
                        v
                    }
                };
                pre.insert(dk.clone(), v);
            }
        }
        Ok(())
    }

    /// Replaces the state (the body of [`StateMachine::restore`]).
    fn restore_sync(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        let _w = lock(&self.writer);
        self.check_usable()?;
        let old = self.current();
        let generation = old.generation + 1;
        let name = data_tree_name(generation);
        let drop_new = |db: &sled::Db| {
            if let Err(e) = db.drop_tree(&name) {
                tracing::warn!(tree = %name, error = %e, "dropping a rejected snapshot's tree failed");
            }
        };
        drop_new(&self.db);
        let tree = self
            .db
            .open_tree(&name)
            .map_err(|e| SledStoreError::sled(format!("open_tree `{name}`"), e))?;
        let filled = fill_from_snapshot(&tree, &name, input).and_then(|()| {
            tree.insert(LAST_APPLIED_KEY, &encode_log_id(last))
                .map_err(|e| SledStoreError::sled(format!("insert in `{name}`"), e).into())
                .and_then(|_| self.flush().map_err(Into::into))
        });
        if let Err(e) = filled {
            drop(tree);
            drop_new(&self.db);
            return Err(e);
        }
        // The switch: one key, flushed. Before it the old state is current, after it the new.
        let switched = self
            .meta
            .insert(KEY_GENERATION, &generation.to_le_bytes())
            .map_err(|e| SledStoreError::sled(format!("insert in `{KV_META_TREE}`"), e))
            .and_then(|_| self.flush());
        if let Err(e) = switched {
            // Whether the switch reached the disk is unknown: stop (fail-stop).
            return Err(self.fail(e).into());
        }
        {
            let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
            *cur = Current {
                owner: TreeOwner::new(&self.db, &name),
                tree,
                name,
                generation,
            };
        }
        *lock(&self.last) = Some(last);
        // Dropped now, or when the last view still reading it is.
        old.owner.retired.store(true, Ordering::Release);
        Ok(())
    }
}

fn decode_log_id(v: &[u8]) -> Option<LogId> {
    let v = <[u8; 16]>::try_from(v).ok()?;
    let mut term = [0u8; 8];
    let mut index = [0u8; 8];
    term.copy_from_slice(&v[..8]);
    index.copy_from_slice(&v[8..]);
    Some(LogId::new(
        u64::from_le_bytes(term),
        u64::from_le_bytes(index),
    ))
}

/// Applies one command against the data tree overlaid with the chunk's pending changes,
/// answering exactly as [`lockstep_core::KvStateMachine`] does.
fn apply_one(
    cur: &Current,
    pending: &mut BTreeMap<Bytes, Option<Bytes>>,
    data: &[u8],
) -> Result<CommandResult> {
    let cmd = match KvCommand::decode(data) {
        Ok(c) => c,
        Err(e) => return Ok(Err(CommandError(e.to_string()))),
    };
    let read = |key: &Bytes| -> Result<Option<Bytes>> {
        if let Some(v) = pending.get(key) {
            return Ok(v.clone());
        }
        cur.tree
            .get(data_key(key))
            .map(|v| v.map(|v| Bytes::copy_from_slice(&v)))
            .map_err(|e| SledStoreError::sled(format!("get in `{}`", cur.name), e))
    };
    let resp = match cmd {
        KvCommand::Put { key, value } => {
            let prev = read(&key)?;
            pending.insert(key, Some(value));
            KvResponse::Value(prev)
        }
        KvCommand::Delete { key } => {
            let prev = read(&key)?;
            pending.insert(key, None);
            KvResponse::Value(prev)
        }
        KvCommand::Cas { key, expected, new } => {
            let current = read(&key)?;
            if current == expected {
                pending.insert(key, new.clone());
                KvResponse::Cas {
                    succeeded: true,
                    current: new,
                }
            } else {
                KvResponse::Cas {
                    succeeded: false,
                    current,
                }
            }
        }
    };
    Ok(Ok(resp.encode()))
}

/// Buffers writes to the snapshot output and computes the CRC-32C of everything written.
pub(crate) struct CrcWriter<'a> {
    out: &'a mut (dyn Write + Send),
    buf: Vec<u8>,
    crc: u32,
}

impl<'a> CrcWriter<'a> {
    const CAP: usize = 64 << 10;

    pub(crate) fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(Self::CAP),
            crc: 0,
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        if self.buf.len() + data.len() > Self::CAP {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        if data.len() >= Self::CAP {
            self.out.write_all(data)
        } else {
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        let crc = self.crc.to_le_bytes();
        self.buf.extend_from_slice(&crc);
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

/// Reads the snapshot input, computing the CRC-32C of what it hands out.
struct CrcReader<'a> {
    input: BufReader<&'a mut (dyn Read + Send)>,
    crc: u32,
    pos: u64,
}

impl CrcReader<'_> {
    /// Reads up to `buf.len()` bytes, fewer only at the end of the input.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the snapshot: {e}")),
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), String> {
        let at = self.pos;
        let n = self.read_up_to(buf)?;
        if n < buf.len() {
            return Err(format!(
                "the snapshot ends at byte {} inside {what} (needs {} bytes at offset {at})",
                at + n as u64,
                buf.len()
            ));
        }
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A length-prefixed field. Memory grows with the bytes actually present, never with a
    /// (possibly damaged) length prefix.
    fn field(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let len = self.u32(what)?;
        let at = self.pos;
        let mut v = Vec::new();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut v)
            .map_err(|e| format!("reading the snapshot: {e}"))?;
        self.crc = crc32c::crc32c_append(self.crc, &v);
        self.pos += v.len() as u64;
        if v.len() < len as usize {
            return Err(format!(
                "the snapshot ends inside {what} ({len} bytes announced at offset {at}, {} \
                 present)",
                v.len()
            ));
        }
        Ok(v)
    }
}

/// Streams a snapshot in the `KvStateMachine` format into the empty `tree`, validating it
/// completely. On error the tree holds a partial state the caller drops.
fn fill_from_snapshot(
    tree: &sled::Tree,
    name: &str,
    input: &mut (dyn Read + Send),
) -> Result<(), StateMachineError> {
    let mut r = CrcReader {
        input: BufReader::with_capacity(256 << 10, input),
        crc: 0,
        pos: 0,
    };
    let bad = StateMachineError::InvalidSnapshot;
    let mut header = [0u8; 16];
    let n = r.read_up_to(&mut header).map_err(bad)?;
    if n == 0 {
        // An empty input restores the empty state, as for `KvStateMachine`.
        return Ok(());
    }
    if n < header.len() {
        return Err(bad(format!(
            "{n} bytes is shorter than the 16-byte snapshot header"
        )));
    }
    if &header[..4] != SNAPSHOT_MAGIC {
        return Err(bad(format!(
            "bad magic {:02x?}, expected {SNAPSHOT_MAGIC:02x?}",
            &header[..4]
        )));
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&header[4..8]);
    let version = u32::from_le_bytes(word);
    if version != SNAPSHOT_VERSION {
        return Err(bad(format!(
            "unsupported format version {version} (this build reads {SNAPSHOT_VERSION})"
        )));
    }
    let mut dword = [0u8; 8];
    dword.copy_from_slice(&header[8..16]);
    let count = u64::from_le_bytes(dword);
    let sled_err = |e| -> StateMachineError {
        SledStoreError::sled(format!("apply_batch in `{name}`"), e).into()
    };
    let mut batch = sled::Batch::default();
    let (mut in_batch, mut batch_bytes) = (0usize, 0usize);
    let mut prev: Option<Vec<u8>> = None;
    for i in 0..count {
        let key = r
            .field("a key")
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let value = r
            .field("a value")
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return Err(bad(format!(
                "entry {i}: keys are not in strictly ascending order"
            )));
        }
        batch_bytes += key.len() + value.len();
        in_batch += 1;
        batch.insert(data_key(&key), value);
        prev = Some(key);
        if in_batch >= RESTORE_BATCH_ENTRIES || batch_bytes >= RESTORE_BATCH_BYTES {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(sled_err)?;
            in_batch = 0;
            batch_bytes = 0;
        }
    }
    if in_batch > 0 {
        tree.apply_batch(batch).map_err(sled_err)?;
    }
    let computed = r.crc;
    let mut crc = [0u8; 4];
    r.exact(&mut crc, "the checksum").map_err(bad)?;
    let stored = u32::from_le_bytes(crc);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let mut extra = [0u8; 1];
    if r.read_up_to(&mut extra).map_err(bad)? != 0 {
        return Err(bad(format!(
            "trailing bytes after the checksum at offset {}",
            r.pos - 1
        )));
    }
    Ok(())
}

#[async_trait]
impl StateMachine for SledKvStateMachine {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        let mut r = self.apply_sync(std::slice::from_ref(command))?;
        r.pop()
            .ok_or_else(|| StateMachineError::Other("apply_chunk returned no result".into()))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        Ok(self.apply_sync(commands)?)
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        let KvQuery::Get { key } =
            KvQuery::decode(query).map_err(|e| CommandError(e.to_string()))?;
        match self.get(&key) {
            Ok(v) => Ok(KvResponse::Value(v).encode()),
            Err(e) => Err(CommandError(format!("storage error: {e}"))),
        }
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.snapshot_sync(out)
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        self.restore_sync(last, input)
    }

    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        match self.view() {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                // The handler then calls `snapshot`, which reports the failure itself.
                tracing::warn!(location = %self.location.display(), error = %e,
                    "no point-in-time view");
                None
            }
        }
    }

    fn last_applied(&self) -> Option<LogId> {
        *lock(&self.last)
    }
}
