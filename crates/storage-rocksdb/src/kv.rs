//! [`RocksKvStateMachine`]: a durable key-value state machine on RocksDB that answers
//! exactly like [`lockstep_core::KvStateMachine`].

use std::collections::HashMap;
use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use lockstep_core::error::{CommandError, CommandResult, StateMachineError, StorageError};
use lockstep_core::state_machine::SnapshotView;
use lockstep_core::state_machine::{KvCommand, KvQuery, KvResponse};
use lockstep_core::storage::read_full;
use lockstep_core::{Command, LogId, StateMachine};
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, DBWithThreadMode, MultiThreaded,
    Options, ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions,
};

use crate::error::{Result, RocksStoreError};
use crate::kv_view::RocksKvView;
use crate::util::{inspect_dir, seal, u64_le, unseal, DirState};

pub(crate) type Db = DBWithThreadMode<MultiThreaded>;

/// Column family of the state machine's metadata: format marker (`format`), active data
/// generation (`generation`), number of keys (`count`) and last applied entry
/// (`last_applied`), each with a CRC-32C.
pub const KV_META_CF: &str = "kv_meta";
/// Value of the `format` key of [`KV_META_CF`].
pub const KV_FORMAT: &[u8] = b"lockstep-rocksdb-kv/1";
/// Prefix of the data column families; see [`data_cf_name`].
pub const KV_DATA_CF_PREFIX: &str = "kv_data_";

const FORMAT_KEY: &[u8] = b"format";
const GENERATION_KEY: &[u8] = b"generation";
const COUNT_KEY: &[u8] = b"count";
const LAST_APPLIED_KEY: &[u8] = b"last_applied";

/// Snapshot format constants, the same as [`lockstep_core::KvStateMachine`]'s.
const SNAPSHOT_MAGIC: &[u8; 4] = b"LKVS";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 16;
const SNAPSHOT_CRC_LEN: usize = 4;

/// Bytes buffered before a snapshot chunk is handed to the writer.
const SNAPSHOT_WRITE_CHUNK: usize = 64 * 1024;
/// Size at which a restore writes its pending batch into the new column family.
const RESTORE_BATCH_BYTES: usize = 4 << 20;
/// Memtable size of a data column family.
const DATA_WRITE_BUFFER: usize = 16 << 20;

/// The column family holding the user data of generation `generation`: a restore writes
/// the new state into the next generation and switches to it atomically.
pub fn data_cf_name(generation: u64) -> String {
    format!("{KV_DATA_CF_PREFIX}{generation:020}")
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    o.set_keep_log_file_num(4);
    o.set_max_log_file_size(4 << 20);
    o
}

fn data_cf_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(DATA_WRITE_BUFFER);
    o
}

fn text_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// What the machine keeps in memory (a copy of its metadata).
#[derive(Clone, Copy, Debug)]
struct State {
    generation: u64,
    count: u64,
    last_applied: Option<LogId>,
}

/// A durable [`StateMachine`]: the [`lockstep_core::KvStateMachine`] map kept in RocksDB.
///
/// Commands, queries and answers use the [`KvCommand`], [`KvQuery`] and [`KvResponse`]
/// encodings, and snapshots use the same format as [`lockstep_core::KvStateMachine`]
/// (byte-identical for equal states), so either machine can restore the other's snapshot.
///
/// Durability:
/// - each [`StateMachine::apply_chunk`] writes the chunk's changes, the new key count and
///   the new last-applied id in one atomic [`WriteBatch`] with `sync = true`: after it
///   returns, [`StateMachine::last_applied`] and the data survive a crash together;
/// - entries at or below `last_applied` are skipped (answered with a [`CommandError`]
///   saying so), so re-applying them after a restart changes nothing;
/// - [`StateMachine::snapshot`] iterates a RocksDB snapshot (a consistent point-in-time
///   view) and streams it to the writer in 64 KiB pieces: applies go on meanwhile, and
///   memory stays bounded whatever the state's size;
/// - [`StateMachine::snapshot_view`] ([`RocksKvStateMachine::view`]) takes that RocksDB
///   snapshot *now* and streams it later from a thread of its own ([`RocksKvView`]): the
///   handler takes the view while applies wait and writes it while they go on;
/// - [`StateMachine::restore`] streams the snapshot into a new column family (checking the
///   format, key order and CRC as it goes), flushes it, then switches to it and records
///   the snapshot's id as `last_applied` in one synced write, and drops the old column
///   family. A snapshot rejected at any point leaves the old state untouched.
pub struct RocksKvStateMachine {
    /// Shared with the threads of live [`RocksKvView`]s, which keep it open.
    db: Arc<Db>,
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises `apply_chunk` and `restore`.
    writer: Mutex<()>,
}

impl fmt::Debug for RocksKvStateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksKvStateMachine")
            .field("path", &self.path)
            .field("state", &*self.state_read())
            .finish()
    }
}

fn cf_missing(path: &Path, name: &str) -> RocksStoreError {
    RocksStoreError::incompatible(path, format!("column family `{name}` is missing"))
}

/// Reads a checked metadata value from `get` (the database or a snapshot of it).
fn meta_value(
    path: &Path,
    key: &[u8],
    got: std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<Option<Vec<u8>>> {
    let v = got.map_err(|e| {
        RocksStoreError::rocks(
            format!(
                "read of `{}` in column family `{KV_META_CF}`",
                text_key(key)
            ),
            path,
            e,
        )
    })?;
    match v {
        None => Ok(None),
        Some(v) => Ok(Some(
            unseal(path, KV_META_CF, &|| text_key(key), &v)?.to_vec(),
        )),
    }
}

fn meta_u64(path: &Path, key: &[u8], body: Option<Vec<u8>>) -> Result<u64> {
    let body = body.ok_or_else(|| {
        RocksStoreError::corrupt(path, KV_META_CF, text_key(key), "the key is missing")
    })?;
    u64_le(&body).ok_or_else(|| {
        RocksStoreError::corrupt(
            path,
            KV_META_CF,
            text_key(key),
            format!("expected 8 bytes, found {}", body.len()),
        )
    })
}

fn encode_last_applied(la: Option<LogId>) -> Vec<u8> {
    let l = la.unwrap_or_default();
    let mut v = Vec::with_capacity(17);
    v.push(u8::from(la.is_some()));
    v.extend_from_slice(&l.term.to_le_bytes());
    v.extend_from_slice(&l.index.to_le_bytes());
    seal(&v)
}

fn decode_last_applied(path: &Path, body: Option<Vec<u8>>) -> Result<Option<LogId>> {
    let Some(b) = body else { return Ok(None) };
    let bad = |detail: String| {
        RocksStoreError::corrupt(path, KV_META_CF, text_key(LAST_APPLIED_KEY), detail)
    };
    if b.len() != 17 {
        return Err(bad(format!("expected 17 bytes, found {}", b.len())));
    }
    let term = u64_le(&b[1..9]).unwrap_or_default();
    let index = u64_le(&b[9..17]).unwrap_or_default();
    match b[0] {
        0 => Ok(None),
        1 => Ok(Some(LogId::new(term, index))),
        x => Err(bad(format!("presence byte {x} is neither 0 nor 1"))),
    }
}

fn invalid(detail: impl Into<String>) -> StateMachineError {
    StateMachineError::InvalidSnapshot(detail.into())
}

/// Buffers snapshot output, keeping the running CRC-32C.
struct SnapshotWriter<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    crc: u32,
}

impl SnapshotWriter<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SNAPSHOT_WRITE_CHUNK {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn field(&mut self, b: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(b.len()).map_err(|_| {
            std::io::Error::other(format!("a field of {} bytes exceeds 4 GiB", b.len()))
        })?;
        self.put(&len.to_le_bytes())?;
        self.put(b)
    }

    fn finish(mut self) -> std::io::Result<()> {
        let crc = self.crc.to_le_bytes();
        self.buf.extend_from_slice(&crc);
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

/// Reads snapshot input, keeping the running CRC-32C of what was read.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

fn read_io(e: std::io::Error) -> StateMachineError {
    StorageError::io("reading the kv snapshot", e).into()
}

/// Reads one length-prefixed field of snapshot entry `i`.
fn read_field(
    r: &mut impl Read,
    i: u64,
    what: &str,
) -> std::result::Result<Vec<u8>, StateMachineError> {
    let mut len = [0u8; 4];
    if read_full(r, &mut len).map_err(read_io)? != len.len() {
        return Err(invalid(format!(
            "entry {i}: the input ends inside the length of its {what}"
        )));
    }
    let len = u32::from_le_bytes(len) as u64;
    let mut v = Vec::new();
    r.take(len).read_to_end(&mut v).map_err(read_io)?;
    if v.len() as u64 != len {
        return Err(invalid(format!(
            "entry {i}: the input ends {} bytes into its {len}-byte {what}",
            v.len()
        )));
    }
    Ok(v)
}

impl RocksKvStateMachine {
    /// Opens the machine stored in `path`, creating the directory and the database if
    /// needed. Column families left by an interrupted restore are dropped. A directory
    /// holding anything but an empty directory or this machine's database is
    /// [`RocksStoreError::Incompatible`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let opts = db_options();
        let mut data_cfs: Vec<String> = Vec::new();
        if inspect_dir(&path, "lockstep RocksDB key-value state machine")? == DirState::RocksDb {
            let found = Db::list_cf(&opts, &path)
                .map_err(|e| RocksStoreError::rocks("listing column families", &path, e))?;
            if !found.iter().any(|f| f == KV_META_CF) {
                return Err(RocksStoreError::incompatible(
                    &path,
                    format!(
                        "not a lockstep RocksDB key-value store: column families {found:?} \
                         (no `{KV_META_CF}`)"
                    ),
                ));
            }
            for f in found {
                if f == KV_META_CF || f == rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
                    continue;
                }
                if !f.starts_with(KV_DATA_CF_PREFIX) {
                    return Err(RocksStoreError::incompatible(
                        &path,
                        format!("unexpected column family `{f}`"),
                    ));
                }
                data_cfs.push(f);
            }
        }
        let descriptors =
            std::iter::once(ColumnFamilyDescriptor::new(KV_META_CF, Options::default())).chain(
                data_cfs
                    .iter()
                    .map(|n| ColumnFamilyDescriptor::new(n.as_str(), data_cf_options())),
            );
        let db = Db::open_cf_descriptors(&opts, &path, descriptors)
            .map_err(|e| RocksStoreError::rocks("open", &path, e))?;
        let meta = db
            .cf_handle(KV_META_CF)
            .ok_or_else(|| cf_missing(&path, KV_META_CF))?;
        let format = meta_value(&path, FORMAT_KEY, db.get_cf(&meta, FORMAT_KEY))?;
        match format {
            Some(f) if f == KV_FORMAT => {}
            Some(f) => {
                return Err(RocksStoreError::incompatible(
                    &path,
                    format!(
                        "format marker `{}` is not `{}`",
                        String::from_utf8_lossy(&f),
                        String::from_utf8_lossy(KV_FORMAT)
                    ),
                ))
            }
            None => {
                // New, or a creation cut short before the marker was written: only an
                // empty metadata column family may be (re)initialised.
                let mut it = db.raw_iterator_cf(&meta);
                it.seek_to_first();
                if it.valid() {
                    return Err(RocksStoreError::incompatible(
                        &path,
                        format!("column family `{KV_META_CF}` holds data but no format marker"),
                    ));
                }
                drop(it);
                for name in data_cfs.drain(..) {
                    db.drop_cf(&name).map_err(|e| {
                        RocksStoreError::rocks(format!("drop of `{name}`"), &path, e)
                    })?;
                }
                let name = data_cf_name(1);
                db.create_cf(&name, &data_cf_options()).map_err(|e| {
                    RocksStoreError::rocks(format!("creation of `{name}`"), &path, e)
                })?;
                data_cfs.push(name);
                let mut batch = WriteBatch::default();
                batch.put_cf(&meta, GENERATION_KEY, seal(&1u64.to_le_bytes()));
                batch.put_cf(&meta, COUNT_KEY, seal(&0u64.to_le_bytes()));
                batch.put_cf(&meta, LAST_APPLIED_KEY, encode_last_applied(None));
                // The marker last: it certifies a complete initialisation.
                batch.put_cf(&meta, FORMAT_KEY, seal(KV_FORMAT));
                let mut synced = WriteOptions::default();
                synced.set_sync(true);
                db.write_opt(batch, &synced)
                    .map_err(|e| RocksStoreError::rocks("initialisation", &path, e))?;
            }
        }
        let generation = meta_u64(
            &path,
            GENERATION_KEY,
            meta_value(&path, GENERATION_KEY, db.get_cf(&meta, GENERATION_KEY))?,
        )?;
        let count = meta_u64(
            &path,
            COUNT_KEY,
            meta_value(&path, COUNT_KEY, db.get_cf(&meta, COUNT_KEY))?,
        )?;
        let last_applied = decode_last_applied(
            &path,
            meta_value(&path, LAST_APPLIED_KEY, db.get_cf(&meta, LAST_APPLIED_KEY))?,
        )?;
        drop(meta);
        let active = data_cf_name(generation);
        if !data_cfs.contains(&active) {
            return Err(RocksStoreError::corrupt(
                &path,
                KV_META_CF,
                text_key(GENERATION_KEY),
                format!("the active data column family `{active}` does not exist"),
            ));
        }
        for name in data_cfs.iter().filter(|n| **n != active) {
            // Left by a restore that was interrupted before or after its switch.
            db.drop_cf(name)
                .map_err(|e| RocksStoreError::rocks(format!("drop of `{name}`"), &path, e))?;
        }
        Ok(Self {
            db: Arc::new(db),
            path,
            state: RwLock::new(State {
                generation,
                count,
                last_applied,
            }),
            writer: Mutex::new(()),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let st = self.state_read();
        let data = self.data_cf(st.generation)?;
        let v = self
            .db
            .get_pinned_cf(&data, key)
            .map_err(|e| RocksStoreError::rocks("read of a key", &self.path, e))?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Number of keys stored.
    pub fn len(&self) -> u64 {
        self.state_read().count
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means another thread panicked while holding it; the state it
    // guards is replaced whole, so it is always consistent.
    fn state_read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_cf(&self, generation: u64) -> Result<Arc<BoundColumnFamily<'_>>> {
        let name = data_cf_name(generation);
        self.db
            .cf_handle(&name)
            .ok_or_else(|| cf_missing(&self.path, &name))
    }

    fn meta_cf(&self) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(KV_META_CF)
            .ok_or_else(|| cf_missing(&self.path, KV_META_CF))
    }

    /// The value of `key` as the chunk being applied sees it.
    fn lookup(
        &self,
        overlay: &HashMap<Bytes, Option<Bytes>>,
        data: &Arc<BoundColumnFamily<'_>>,
        key: &Bytes,
    ) -> Result<Option<Bytes>> {
        if let Some(v) = overlay.get(key) {
            return Ok(v.clone());
        }
        let v = self
            .db
            .get_pinned_cf(data, key)
            .map_err(|e| RocksStoreError::rocks("read of a key", &self.path, e))?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn apply_commands(&self, commands: &[Command]) -> Result<Vec<CommandResult>> {
        let _w = self.writer();
        let st = *self.state_read();
        let data = self.data_cf(st.generation)?;
        let meta = self.meta_cf()?;
        let done = st.last_applied.map_or(0, |l| l.index);
        let mut overlay: HashMap<Bytes, Option<Bytes>> = HashMap::new();
        let mut count = st.count;
        let mut batch = WriteBatch::default();
        let mut newest = None;
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            if c.log_id.index <= done {
                out.push(Err(CommandError(format!(
                    "entry {} is already applied",
                    c.log_id
                ))));
                continue;
            }
            newest = Some(c.log_id);
            let cmd = match KvCommand::decode(&c.data) {
                Ok(cmd) => cmd,
                Err(e) => {
                    out.push(Err(CommandError(e.to_string())));
                    continue;
                }
            };
            let resp = match cmd {
                KvCommand::Put { key, value } => {
                    let prev = self.lookup(&overlay, &data, &key)?;
                    if prev.is_none() {
                        count += 1;
                    }
                    batch.put_cf(&data, &key, &value);
                    overlay.insert(key, Some(value));
                    KvResponse::Value(prev)
                }
                KvCommand::Delete { key } => {
                    let prev = self.lookup(&overlay, &data, &key)?;
                    if prev.is_some() {
                        count = count.saturating_sub(1);
                        batch.delete_cf(&data, &key);
                    }
                    overlay.insert(key, None);
                    KvResponse::Value(prev)
                }
                KvCommand::Cas { key, expected, new } => {
                    let current = self.lookup(&overlay, &data, &key)?;
                    if current == expected {
                        match &new {
                            Some(v) => {
                                if current.is_none() {
                                    count += 1;
                                }
                                batch.put_cf(&data, &key, v);
                            }
                            None => {
                                if current.is_some() {
                                    count = count.saturating_sub(1);
                                    batch.delete_cf(&data, &key);
                                }
                            }
                        }
                        overlay.insert(key, new.clone());
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
            out.push(Ok(resp.encode()));
        }
        if let Some(newest) = newest {
            batch.put_cf(&meta, COUNT_KEY, seal(&count.to_le_bytes()));
            batch.put_cf(&meta, LAST_APPLIED_KEY, encode_last_applied(Some(newest)));
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            self.db
                .write_opt(batch, &synced)
                .map_err(|e| RocksStoreError::rocks("write of an applied chunk", &self.path, e))?;
            let mut s = self.state_write();
            s.count = count;
            s.last_applied = Some(newest);
        }
        Ok(out)
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> std::result::Result<(), StateMachineError> {
        // Under the state lock, so a concurrent restore cannot drop the generation read
        // from the snapshot before its handle is taken (a held handle keeps a dropped
        // column family readable).
        let captured = {
            let _st = self.state_read();
            capture(&self.db, &self.path)?
        };
        stream_snapshot(&self.path, &captured, out)
    }

    /// A point-in-time view of the state: a RocksDB snapshot, taken now, that a dedicated
    /// thread streams to [`SnapshotView::write_to`] later, while applies go on. See
    /// [`RocksKvView`].
    pub fn view(&self) -> Result<RocksKvView> {
        // Held until the thread has taken its snapshot and column family handle: a
        // concurrent restore cannot drop the generation in between (see `write_snapshot`).
        let _st = self.state_read();
        RocksKvView::start(self.db.clone(), self.path.clone())
    }

    /// Streams a snapshot into the (new, empty) column family `cf`; returns its key count.
    fn load_snapshot(
        &self,
        cf: &Arc<BoundColumnFamily<'_>>,
        input: &mut dyn Read,
    ) -> std::result::Result<u64, StateMachineError> {
        let mut r = CrcReader {
            inner: BufReader::with_capacity(SNAPSHOT_WRITE_CHUNK, input),
            crc: 0,
        };
        let mut header = [0u8; SNAPSHOT_HEADER_LEN];
        let got = read_full(&mut r, &mut header).map_err(read_io)?;
        if got == 0 {
            // An empty input restores the empty state, as for KvStateMachine.
            return Ok(0);
        }
        if got < SNAPSHOT_HEADER_LEN {
            return Err(invalid(format!(
                "{got} bytes is shorter than the {}-byte minimum",
                SNAPSHOT_HEADER_LEN + SNAPSHOT_CRC_LEN
            )));
        }
        if &header[..4] != SNAPSHOT_MAGIC {
            return Err(invalid(format!(
                "bad magic {:02x?}, expected {SNAPSHOT_MAGIC:02x?}",
                &header[..4]
            )));
        }
        let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if version != SNAPSHOT_VERSION {
            return Err(invalid(format!(
                "unsupported format version {version} (this build reads {SNAPSHOT_VERSION})"
            )));
        }
        let count = u64_le(&header[8..16]).unwrap_or_default();
        let mut no_wal = WriteOptions::default();
        // The new column family is flushed (and its files synced) before the switch.
        no_wal.disable_wal(true);
        let write = |batch: WriteBatch| {
            self.db
                .write_opt(batch, &no_wal)
                .map_err(|e| RocksStoreError::rocks("write of restored data", &self.path, e))
        };
        let mut batch = WriteBatch::default();
        let mut prev: Option<Vec<u8>> = None;
        for i in 0..count {
            let key = read_field(&mut r, i, "key")?;
            let value = read_field(&mut r, i, "value")?;
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(invalid(format!(
                    "entry {i}: keys are not in strictly ascending order"
                )));
            }
            batch.put_cf(cf, &key, &value);
            if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
                write(std::mem::take(&mut batch))?;
            }
            prev = Some(key);
        }
        let computed = r.crc;
        let mut stored = [0u8; SNAPSHOT_CRC_LEN];
        if read_full(&mut r.inner, &mut stored).map_err(read_io)? != SNAPSHOT_CRC_LEN {
            return Err(invalid("the input ends before the checksum"));
        }
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(invalid(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let mut extra = [0u8; 1];
        if read_full(&mut r.inner, &mut extra).map_err(read_io)? != 0 {
            return Err(invalid("trailing bytes after the checksum"));
        }
        if !batch.is_empty() {
            write(batch)?;
        }
        Ok(count)
    }

    /// Drops a column family a failed restore created; a failure is logged, and the next
    /// open drops it anyway.
    fn discard(&self, name: &str) {
        if let Err(e) = self.db.drop_cf(name) {
            tracing::warn!(path = %self.path.display(), cf = name, error = %e,
                "could not drop the column family of a failed restore");
        }
    }

    fn restore_from(
        &self,
        last: LogId,
        input: &mut dyn Read,
    ) -> std::result::Result<(), StateMachineError> {
        let _w = self.writer();
        let old = *self.state_read();
        let generation = old.generation + 1;
        let name = data_cf_name(generation);
        if self.db.cf_handle(&name).is_some() {
            self.db
                .drop_cf(&name)
                .map_err(|e| RocksStoreError::rocks(format!("drop of `{name}`"), &self.path, e))?;
        }
        self.db
            .create_cf(&name, &data_cf_options())
            .map_err(|e| RocksStoreError::rocks(format!("creation of `{name}`"), &self.path, e))?;
        let loaded = self
            .data_cf(generation)
            .map_err(StateMachineError::from)
            .and_then(|cf| {
                let count = self.load_snapshot(&cf, input)?;
                self.db.flush_cf(&cf).map_err(|e| {
                    RocksStoreError::rocks(format!("flush of `{name}`"), &self.path, e)
                })?;
                Ok(count)
            });
        let count = match loaded {
            Ok(c) => c,
            Err(e) => {
                self.discard(&name);
                return Err(e);
            }
        };
        let meta = self.meta_cf()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(&meta, GENERATION_KEY, seal(&generation.to_le_bytes()));
        batch.put_cf(&meta, COUNT_KEY, seal(&count.to_le_bytes()));
        batch.put_cf(&meta, LAST_APPLIED_KEY, encode_last_applied(Some(last)));
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        // If this write fails, the new column family stays: whichever generation the
        // metadata names on the next open is kept, the other dropped.
        self.db
            .write_opt(batch, &synced)
            .map_err(|e| RocksStoreError::rocks("switch to the restored state", &self.path, e))?;
        {
            let mut s = self.state_write();
            *s = State {
                generation,
                count,
                last_applied: Some(last),
            };
        }
        self.discard(&data_cf_name(old.generation));
        Ok(())
    }
}

#[async_trait]
impl StateMachine for RocksKvStateMachine {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        let mut r = self.apply_commands(std::slice::from_ref(command))?;
        r.pop()
            .ok_or_else(|| StateMachineError::Other("apply returned no result".into()))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        Ok(self.apply_commands(commands)?)
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
        self.write_snapshot(out)
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        self.restore_from(last, input)
    }

    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        match self.view() {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                // The handler then calls `snapshot` instead, which reports a real storage
                // failure itself.
                tracing::warn!(path = %self.path.display(), error = %e,
                    "no point-in-time view; the snapshot is written while applies wait");
                None
            }
        }
    }

    fn last_applied(&self) -> Option<LogId> {
        self.state_read().last_applied
    }
}

/// What a snapshot of the state is read from: a RocksDB snapshot, the data column family
/// it names, and the metadata it holds.
pub(crate) struct Captured<'a> {
    pub(crate) snap: SnapshotWithThreadMode<'a, Db>,
    pub(crate) data: Arc<BoundColumnFamily<'a>>,
    pub(crate) count: u64,
    pub(crate) last_applied: Option<LogId>,
}

/// Takes a RocksDB snapshot of `db` and reads the generation, key count and last applied
/// id it holds (each chunk writes them in the batch of its data, so they match the data).
/// The caller holds the machine's state lock (a restore cannot drop the generation before
/// its handle is taken).
pub(crate) fn capture<'a>(db: &'a Db, path: &Path) -> Result<Captured<'a>> {
    let meta = db
        .cf_handle(KV_META_CF)
        .ok_or_else(|| cf_missing(path, KV_META_CF))?;
    let snap = db.snapshot();
    let generation = meta_u64(
        path,
        GENERATION_KEY,
        meta_value(path, GENERATION_KEY, snap.get_cf(&meta, GENERATION_KEY))?,
    )?;
    let count = meta_u64(
        path,
        COUNT_KEY,
        meta_value(path, COUNT_KEY, snap.get_cf(&meta, COUNT_KEY))?,
    )?;
    let last_applied = decode_last_applied(
        path,
        meta_value(path, LAST_APPLIED_KEY, snap.get_cf(&meta, LAST_APPLIED_KEY))?,
    )?;
    let name = data_cf_name(generation);
    let data = db.cf_handle(&name).ok_or_else(|| cf_missing(path, &name))?;
    Ok(Captured {
        snap,
        data,
        count,
        last_applied,
    })
}

/// Writes the snapshot of `c` to `out` in the [`lockstep_core::KvStateMachine`] format,
/// in 64 KiB pieces.
pub(crate) fn stream_snapshot(
    path: &Path,
    c: &Captured<'_>,
    out: &mut dyn Write,
) -> std::result::Result<(), StateMachineError> {
    let io = |e| StorageError::io("writing the kv snapshot", e);
    let mut w = SnapshotWriter {
        out,
        buf: Vec::with_capacity(SNAPSHOT_WRITE_CHUNK + 4096),
        crc: 0,
    };
    w.put(SNAPSHOT_MAGIC).map_err(io)?;
    w.put(&SNAPSHOT_VERSION.to_le_bytes()).map_err(io)?;
    w.put(&c.count.to_le_bytes()).map_err(io)?;
    let mut ro = ReadOptions::default();
    ro.fill_cache(false);
    let mut it = c.snap.raw_iterator_cf_opt(&c.data, ro);
    it.seek_to_first();
    let mut n: u64 = 0;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        w.field(k).map_err(io)?;
        w.field(v).map_err(io)?;
        n += 1;
        it.next();
    }
    it.status()
        .map_err(|e| RocksStoreError::rocks("scan of the data for a snapshot", path, e))?;
    if n != c.count {
        return Err(RocksStoreError::corrupt(
            path,
            KV_META_CF,
            text_key(COUNT_KEY),
            format!("the count says {} keys but the data holds {n}", c.count),
        )
        .into());
    }
    w.finish().map_err(io)?;
    Ok(())
}
