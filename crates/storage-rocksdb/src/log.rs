//! [`RocksLogStore`]: the replicated log, hard state and snapshot metadata of one node in a
//! RocksDB database.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lockstep_core::codec::{self, Reader};
use lockstep_core::{
    Entry, HardState, Index, LogId, LogStore, SnapshotMeta, StorageError, StoredLog, Term,
};
use rocksdb::{ColumnFamily, DBRecoveryMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use crate::error::{Result, RocksStoreError};
use crate::util::{inspect_dir, seal, unseal, DirState, CRC_LEN};

/// Column family of the log entries: key = index as a big-endian `u64` (so RocksDB's byte
/// order is index order), value = CRC-32C + [`lockstep_core::codec`] entry encoding.
pub const LOG_CF: &str = "log";
/// Column family of the hard state (one key, `hard_state`).
pub const HARD_STATE_CF: &str = "hard_state";
/// Column family of the snapshot metadata (key `snapshot`), the purge point (key
/// `purge_point`) and the format marker (key `format`).
pub const LOG_META_CF: &str = "meta";
/// Value of the `format` key of [`LOG_META_CF`]: what wrote the database, and which version.
pub const LOG_FORMAT: &[u8] = b"lockstep-rocksdb-log/1";

const HARD_STATE_KEY: &[u8] = b"hard_state";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
const PURGE_KEY: &[u8] = b"purge_point";
const FORMAT_KEY: &[u8] = b"format";

/// The column families of a log store, besides RocksDB's `default`.
const CFS: [&str; 3] = [LOG_CF, HARD_STATE_CF, LOG_META_CF];

/// The key of the entry at `index` in [`LOG_CF`]: the index as a big-endian `u64`.
pub fn log_key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

/// How errors name a log key.
fn describe_index(index: Index) -> String {
    format!("index {index} ({index:#018x})")
}

fn describe_raw_key(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(a) => describe_index(u64::from_be_bytes(a)),
        Err(_) => format!("{key:02x?}"),
    }
}

fn text_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Database options shared by the read-only check and the read-write open.
fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // After a crash, recover the WAL up to the first damaged record: a prefix of the
    // writes, never one with holes.
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    o.set_keep_log_file_num(4);
    o.set_max_log_file_size(4 << 20);
    o
}

/// A [`LogStore`] on RocksDB.
///
/// Layout: three column families, [`LOG_CF`] (entries), [`HARD_STATE_CF`] and
/// [`LOG_META_CF`] (snapshot metadata, purge point, format marker). Every value carries a
/// CRC-32C; a value that fails it or does not decode is [`StorageError::Corrupt`] naming
/// the column family and key.
///
/// Durability: every mutation is one RocksDB write (a [`WriteBatch`] for appends,
/// truncations and purges) into the write-ahead log, without sync; [`LogStore::sync`] is
/// one `FlushWAL(sync = true)`, which makes every earlier write durable (group commit: one
/// WAL sync per batch of queued writes, never one per entry). RocksDB recovers the WAL up
/// to its first damaged record, so after a crash the store holds every write up to the last
/// sync and a prefix of the later ones.
///
/// - A truncation is one range deletion (`delete_range`) in the WAL, ordered before any
///   later append: a crash recovers either the old suffix or the truncation and whatever
///   prefix of the new entries was written, never a mix.
/// - A purge records the new purge point and range-deletes the purged entries in one
///   atomic batch: the entries are never gone without the purge point that explains it.
pub struct RocksLogStore {
    db: DB,
    path: PathBuf,
    offset: LogId,
    last: LogId,
    unsynced: WriteOptions,
    failed: bool,
}

impl fmt::Debug for RocksLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogStore")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("last", &self.last)
            .field("failed", &self.failed)
            .finish()
    }
}

fn cf<'a>(db: &'a DB, path: &Path, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        RocksStoreError::incompatible(path, format!("column family `{name}` is missing"))
    })
}

/// Reads and checks a value written with [`seal`]; returns its body.
fn read_sealed(db: &DB, path: &Path, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let h = cf(db, path, cf_name)?;
    let v = db.get_pinned_cf(h, key).map_err(|e| {
        RocksStoreError::rocks(
            format!("read of `{}` in column family `{cf_name}`", text_key(key)),
            path,
            e,
        )
    })?;
    match v {
        None => Ok(None),
        Some(v) => Ok(Some(unseal(path, cf_name, &|| text_key(key), &v)?.to_vec())),
    }
}

/// Decodes a value of [`LOG_META_CF`] or [`HARD_STATE_CF`] with `f`, naming the key in
/// errors.
fn decode_sealed<T>(
    path: &Path,
    cf_name: &str,
    key: &[u8],
    body: &[u8],
    f: impl FnOnce(&mut Reader<'_>) -> std::result::Result<T, codec::CodecError>,
) -> Result<T> {
    let mut r = Reader::new(body, "log store metadata");
    let v = f(&mut r)
        .and_then(|v| r.finish().map(|()| v))
        .map_err(|e| RocksStoreError::corrupt(path, cf_name, text_key(key), e.to_string()))?;
    Ok(v)
}

fn read_purge_point(db: &DB, path: &Path) -> Result<LogId> {
    match read_sealed(db, path, LOG_META_CF, PURGE_KEY)? {
        None => Ok(LogId::default()),
        Some(b) => decode_sealed(path, LOG_META_CF, PURGE_KEY, &b, |r| {
            let term = r.u64()?;
            let index = r.u64()?;
            Ok(LogId::new(term, index))
        }),
    }
}

fn encode_purge_point(p: LogId) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&p.term.to_le_bytes());
    v.extend_from_slice(&p.index.to_le_bytes());
    seal(&v)
}

fn read_hard_state(db: &DB, path: &Path) -> Result<HardState> {
    match read_sealed(db, path, HARD_STATE_CF, HARD_STATE_KEY)? {
        None => Ok(HardState::default()),
        Some(b) => decode_sealed(
            path,
            HARD_STATE_CF,
            HARD_STATE_KEY,
            &b,
            codec::get_hard_state,
        ),
    }
}

fn read_snapshot_meta(db: &DB, path: &Path) -> Result<Option<SnapshotMeta>> {
    match read_sealed(db, path, LOG_META_CF, SNAPSHOT_KEY)? {
        None => Ok(None),
        Some(b) => decode_sealed(
            path,
            LOG_META_CF,
            SNAPSHOT_KEY,
            &b,
            codec::get_snapshot_meta,
        )
        .map(Some),
    }
}

/// Whether column family `name` holds no key.
fn cf_is_empty(db: &DB, path: &Path, name: &str) -> Result<bool> {
    let mut it = db.raw_iterator_cf(cf(db, path, name)?);
    it.seek_to_first();
    let empty = !it.valid();
    it.status()
        .map_err(|e| RocksStoreError::rocks(format!("scan of `{name}`"), path, e))?;
    Ok(empty)
}

/// Checks the format marker. `Ok(false)`: no marker and no data (a store whose creation
/// was cut short, or a new one): the caller writes the marker.
fn check_format(db: &DB, path: &Path) -> Result<bool> {
    match read_sealed(db, path, LOG_META_CF, FORMAT_KEY)? {
        Some(f) if f == LOG_FORMAT => Ok(true),
        Some(f) => Err(RocksStoreError::incompatible(
            path,
            format!(
                "format marker `{}` is not `{}`",
                String::from_utf8_lossy(&f),
                String::from_utf8_lossy(LOG_FORMAT)
            ),
        )),
        None => {
            for name in CFS {
                if !cf_is_empty(db, path, name)? {
                    return Err(RocksStoreError::incompatible(
                        path,
                        format!("column family `{name}` holds data but there is no format marker"),
                    ));
                }
            }
            Ok(false)
        }
    }
}

/// The column families of an existing database must be exactly ours.
fn check_column_families(opts: &Options, path: &Path) -> Result<()> {
    let found = DB::list_cf(opts, path)
        .map_err(|e| RocksStoreError::rocks("listing column families", path, e))?;
    let mut want: Vec<&str> = CFS.to_vec();
    want.push(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|w| !found.iter().any(|f| f == w))
        .collect();
    let extra: Vec<&String> = found
        .iter()
        .filter(|f| !want.contains(&f.as_str()))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(RocksStoreError::incompatible(
        path,
        format!(
            "not a lockstep RocksDB log store: column families {found:?} (missing {missing:?}, \
             unexpected {extra:?})"
        ),
    ))
}

/// Checks and decodes the value of the entry at `index`.
fn decode_entry_value(path: &Path, index: Index, value: Vec<u8>) -> Result<Entry> {
    unseal(path, LOG_CF, &|| describe_index(index), &value)?;
    let body = Bytes::from(value).slice(CRC_LEN..);
    let e = codec::decode_entry(&body).map_err(|e| {
        RocksStoreError::corrupt(path, LOG_CF, describe_index(index), e.to_string())
    })?;
    if e.log_id.index != index {
        return Err(RocksStoreError::corrupt(
            path,
            LOG_CF,
            describe_index(index),
            format!("the value holds entry {}", e.log_id),
        ));
    }
    Ok(e)
}

/// Reads the entries from `from` (the first key if `None`) up to `to` inclusive (the end if
/// `None`), checking that they start at `expected_first` and have no holes.
fn scan(
    db: &DB,
    path: &Path,
    from: Option<Index>,
    to: Option<Index>,
    expected_first: Index,
) -> Result<Vec<Entry>> {
    let h = cf(db, path, LOG_CF)?;
    let mut ro = ReadOptions::default();
    if let Some(end) = to.and_then(|t| t.checked_add(1)) {
        ro.set_iterate_upper_bound(log_key(end).to_vec());
    }
    let mut it = db.raw_iterator_cf_opt(h, ro);
    match from {
        Some(f) => it.seek(log_key(f)),
        None => it.seek_to_first(),
    }
    let mut out = Vec::new();
    let mut expected = expected_first;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let index = match <[u8; 8]>::try_from(k) {
            Ok(a) => u64::from_be_bytes(a),
            Err(_) => {
                return Err(RocksStoreError::corrupt(
                    path,
                    LOG_CF,
                    describe_raw_key(k),
                    "a log key is not 8 bytes long",
                ))
            }
        };
        if to.is_some_and(|t| index > t) {
            break;
        }
        if index != expected {
            return Err(RocksStoreError::corrupt(
                path,
                LOG_CF,
                describe_index(index),
                format!("expected the entry at index {expected} here (a hole in the log, or an entry at or below the purge point)"),
            ));
        }
        out.push(decode_entry_value(path, index, v.to_vec())?);
        expected += 1;
        it.next();
    }
    it.status()
        .map_err(|e| RocksStoreError::rocks(format!("scan of `{LOG_CF}`"), path, e))?;
    Ok(out)
}

/// Everything stored, checked.
fn read_all(db: &DB, path: &Path) -> Result<StoredLog> {
    let log_offset = read_purge_point(db, path)?;
    let hard_state = read_hard_state(db, path)?;
    let snapshot = read_snapshot_meta(db, path)?;
    let entries = scan(db, path, None, None, log_offset.index + 1)?;
    Ok(StoredLog {
        hard_state,
        snapshot,
        log_offset,
        entries,
    })
}

/// Term of the entry at `index`, read from the database (`None` if absent).
fn stored_term(db: &DB, path: &Path, index: Index) -> Result<Option<Term>> {
    let h = cf(db, path, LOG_CF)?;
    let v = db.get_pinned_cf(h, log_key(index)).map_err(|e| {
        RocksStoreError::rocks(format!("read of {}", describe_index(index)), path, e)
    })?;
    let Some(v) = v else { return Ok(None) };
    let body = unseal(path, LOG_CF, &|| describe_index(index), &v)?;
    let mut r = Reader::new(body, "log entry");
    let ids = r.u64().and_then(|t| r.u64().map(|i| (t, i)));
    match ids {
        Ok((term, i)) if i == index => Ok(Some(term)),
        Ok((_, i)) => Err(RocksStoreError::corrupt(
            path,
            LOG_CF,
            describe_index(index),
            format!("the value holds the entry at index {i}"),
        )),
        Err(e) => Err(RocksStoreError::corrupt(
            path,
            LOG_CF,
            describe_index(index),
            e.to_string(),
        )),
    }
}

/// Index of the last key of the log, if any.
fn last_stored_index(db: &DB, path: &Path) -> Result<Option<Index>> {
    let mut it = db.raw_iterator_cf(cf(db, path, LOG_CF)?);
    it.seek_to_last();
    let key = it.key().map(<[u8]>::to_vec);
    it.status()
        .map_err(|e| RocksStoreError::rocks(format!("scan of `{LOG_CF}`"), path, e))?;
    match key {
        None => Ok(None),
        Some(k) => match <[u8; 8]>::try_from(k.as_slice()) {
            Ok(a) => Ok(Some(u64::from_be_bytes(a))),
            Err(_) => Err(RocksStoreError::corrupt(
                path,
                LOG_CF,
                describe_raw_key(&k),
                "a log key is not 8 bytes long",
            )),
        },
    }
}

impl RocksLogStore {
    /// Opens the store in `path`, creating the directory and the database if needed.
    ///
    /// An existing database is first opened read-only and checked completely (format
    /// marker, every value's checksum and decoding, no holes in the log); any damage is
    /// [`RocksStoreError::Corrupt`] naming the column family and key, with no file changed.
    /// A directory holding anything but an empty directory or this store's database is
    /// [`RocksStoreError::Incompatible`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let opts = db_options();
        if inspect_dir(&path, "lockstep RocksDB log store")? == DirState::RocksDb {
            check_column_families(&opts, &path)?;
            // A read-only open writes no file (no info log, no WAL replay to disk), so a
            // damaged store is reported exactly as it was found.
            let ro = DB::open_cf_for_read_only(&opts, &path, CFS, false)
                .map_err(|e| RocksStoreError::rocks("read-only open", &path, e))?;
            check_format(&ro, &path)?;
            read_all(&ro, &path)?;
        }
        let db =
            DB::open_cf(&opts, &path, CFS).map_err(|e| RocksStoreError::rocks("open", &path, e))?;
        if !check_format(&db, &path)? {
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            db.put_cf_opt(
                cf(&db, &path, LOG_META_CF)?,
                FORMAT_KEY,
                seal(LOG_FORMAT),
                &synced,
            )
            .map_err(|e| RocksStoreError::rocks("write of the format marker", &path, e))?;
        }
        let offset = read_purge_point(&db, &path)?;
        let last = match last_stored_index(&db, &path)? {
            Some(i) if i > offset.index => {
                let term = stored_term(&db, &path, i)?.unwrap_or_default();
                LogId::new(term, i)
            }
            _ => offset,
        };
        Ok(Self {
            db,
            path,
            offset,
            last,
            unsynced: WriteOptions::default(),
            failed: false,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            Err(RocksStoreError::Failed {
                path: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    fn write(&self, batch: WriteBatch, what: &str) -> Result<()> {
        self.db
            .write_opt(batch, &self.unsynced)
            .map_err(|e| RocksStoreError::rocks(format!("write ({what})"), &self.path, e))
    }

    fn put_meta(&self, cf_name: &str, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.usable()?;
        let h = cf(&self.db, &self.path, cf_name)?;
        self.db
            .put_cf_opt(h, key, value, &self.unsynced)
            .map_err(|e| {
                RocksStoreError::rocks(
                    format!("write of `{}` in column family `{cf_name}`", text_key(key)),
                    &self.path,
                    e,
                )
            })
    }
}

impl LogStore for RocksLogStore {
    fn load(&mut self) -> Result<StoredLog, StorageError> {
        Ok(read_all(&self.db, &self.path)?)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.usable()?;
        let mut prev = self.last;
        if first.log_id.index != prev.index + 1 {
            return Err(StorageError::NotContiguous {
                last: prev,
                found: first.log_id,
            });
        }
        let h = cf(&self.db, &self.path, LOG_CF)?;
        let mut batch = WriteBatch::default();
        let mut buf = Vec::new();
        for e in entries {
            if e.log_id.index != prev.index + 1 {
                return Err(StorageError::NotContiguous {
                    last: prev,
                    found: e.log_id,
                });
            }
            buf.clear();
            buf.extend_from_slice(&[0; CRC_LEN]);
            codec::put_entry(&mut buf, e);
            let crc = crc32c::crc32c(&buf[CRC_LEN..]);
            buf[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
            batch.put_cf(h, log_key(e.log_id.index), &buf);
            prev = e.log_id;
        }
        self.write(batch, "append")?;
        self.last = prev;
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        self.usable()?;
        let from = from.max(self.offset.index + 1);
        if from > self.last.index {
            return Ok(());
        }
        let new_last = if from - 1 == self.offset.index {
            self.offset
        } else {
            let term = stored_term(&self.db, &self.path, from - 1)?.ok_or_else(|| {
                RocksStoreError::corrupt(
                    &self.path,
                    LOG_CF,
                    describe_index(from - 1),
                    "the entry is missing from the log",
                )
            })?;
            LogId::new(term, from - 1)
        };
        let h = cf(&self.db, &self.path, LOG_CF)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(h, log_key(from), log_key(self.last.index.saturating_add(1)));
        self.write(batch, "truncate")?;
        self.last = new_last;
        Ok(())
    }

    fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.usable()?;
        if up_to.index <= self.offset.index {
            return Ok(());
        }
        let log = cf(&self.db, &self.path, LOG_CF)?;
        let meta = cf(&self.db, &self.path, LOG_META_CF)?;
        // One atomic batch: the new purge point and the range deletion are recovered
        // together or not at all.
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, PURGE_KEY, encode_purge_point(up_to));
        let end = up_to.index.min(self.last.index.max(self.offset.index));
        if end > self.offset.index {
            batch.delete_range_cf(
                log,
                log_key(self.offset.index + 1),
                log_key(end.saturating_add(1)),
            );
        }
        self.write(batch, "purge")?;
        self.offset = up_to;
        if up_to.index >= self.last.index {
            self.last = up_to;
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        let mut v = Vec::with_capacity(24);
        codec::put_hard_state(&mut v, hs);
        Ok(self.put_meta(HARD_STATE_CF, HARD_STATE_KEY, seal(&v))?)
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let mut v = Vec::new();
        codec::put_snapshot_meta(&mut v, meta);
        Ok(self.put_meta(LOG_META_CF, SNAPSHOT_KEY, seal(&v))?)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        if let Err(e) = self.db.flush_wal(true) {
            self.failed = true;
            return Err(RocksStoreError::rocks("sync of the WAL", &self.path, e).into());
        }
        Ok(())
    }

    fn entries(&mut self, from: Index, to: Index) -> Result<Vec<Entry>, StorageError> {
        if !lockstep_core::storage::check_entries_range(from, to, (self.offset, self.last))? {
            return Ok(Vec::new());
        }
        let out = scan(&self.db, &self.path, Some(from), Some(to), from)?;
        if out.len() as u64 != to - from + 1 {
            return Err(RocksStoreError::corrupt(
                &self.path,
                LOG_CF,
                describe_index(from + out.len() as u64),
                format!(
                    "the entry is missing although the log ends at {}",
                    self.last
                ),
            )
            .into());
        }
        Ok(out)
    }

    fn term(&mut self, index: Index) -> Result<Option<Term>, StorageError> {
        if index == self.offset.index {
            return Ok(Some(self.offset.term));
        }
        if index < self.offset.index || index > self.last.index {
            return Ok(None);
        }
        if index == self.last.index {
            return Ok(Some(self.last.term));
        }
        Ok(stored_term(&self.db, &self.path, index)?)
    }

    fn bounds(&self) -> (LogId, LogId) {
        (self.offset, self.last)
    }
}
