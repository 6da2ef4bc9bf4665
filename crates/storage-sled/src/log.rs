//! [`SledLogStore`]: the [`LogStore`] on two sled trees.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use lockstep_core::codec::{self, Reader};
use lockstep_core::{
    Entry, HardState, Index, LogId, LogStore, SnapshotMeta, StorageError, StoredLog, Term,
};

use crate::error::{Result, SledStoreError};
use crate::util;

/// Name of the tree holding log entries: key = index as big-endian `u64` (so sled's byte
/// order is index order), value = the entry in [`lockstep_core::codec`] encoding.
pub const LOG_TREE: &str = "lockstep.log.entries";
/// Name of the tree holding hard state, snapshot metadata, purge point and format marker.
pub const LOG_META_TREE: &str = "lockstep.log.meta";

const KEY_FORMAT: &[u8] = b"format";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot_meta";
const KEY_PURGE_POINT: &[u8] = b"purge_point";
/// The format marker of this version's log trees.
const FORMAT: &[u8] = b"lockstep-sled-log/1";

fn index_key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

fn show_index_key(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(k) => u64::from_be_bytes(k).to_string(),
        Err(_) => util::show_key(key),
    }
}

fn sled_err(op: &str, tree: &str) -> impl FnOnce(sled::Error) -> SledStoreError {
    let op = format!("{op} in `{tree}`");
    move |e| SledStoreError::sled(op, e)
}

/// A durable [`LogStore`] on [sled](https://docs.rs/sled/0.34).
///
/// - Entries live in the tree [`LOG_TREE`] under big-endian index keys; hard state,
///   snapshot metadata and the purge point live under their own keys in [`LOG_META_TREE`].
///   Every record uses the [`lockstep_core::codec`] encoding.
/// - [`LogStore::append`] writes its entries as one sled [`sled::Batch`] (crash-atomic:
///   sled recovers a batch whole or not at all). Nothing is flushed per entry or per
///   append: [`LogStore::sync`] calls [`sled::Tree::flush`] once (group commit), which
///   writes sled's dirty log buffers, and then `fdatasync`s sled's `db` file (and any new
///   file under `blobs/`): on Linux sled's flush waits with `sync_file_range` only, which
///   does not make writes durable against power loss by itself.
/// - [`LogStore::truncate`] removes the suffix in one batch. [`LogStore::purge`] first
///   records the new purge point, then removes the prefix in one batch; a crash in between
///   leaves entries at or below the purge point, which are never read and are removed by
///   the next purge. sled recovers its log in order and stops at the first torn write, so
///   after a crash the store holds every mutation up to the last `sync` and a prefix of the
///   later ones.
/// - A record that does not decode is [`StorageError::Corrupt`] naming the tree and key.
/// - Once a write or flush has failed, every later mutation fails (fail-stop).
///
/// sled allows one process (and one open [`sled::Db`]) per directory at a time: a second
/// open fails while the first handle lives.
#[derive(Debug)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    location: PathBuf,
    durability: util::Durability,
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    offset: LogId,
    last: LogId,
    failed: Option<String>,
}

impl SledLogStore {
    /// Opens (or creates) the store in directory `dir`, as a sled database of its own.
    ///
    /// A directory that is neither empty nor a sled database is refused with
    /// [`SledStoreError::Incompatible`]; a record that does not decode is
    /// [`SledStoreError::Corrupt`] naming the tree and key.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let db = util::open_db(dir)?;
        Self::with_db(db, dir)
    }

    /// Opens (or creates) the store in an already open sled database, for example one
    /// shared with a [`crate::SledKvStateMachine`] (they use different trees). `dir` must be
    /// the directory `db` was opened in (its files are synced by [`LogStore::sync`], which
    /// then makes the whole database durable).
    pub fn with_db(db: sled::Db, dir: impl AsRef<Path>) -> Result<Self> {
        let location = dir.as_ref().to_path_buf();
        let durability = util::Durability::open(&location)?;
        let log = db
            .open_tree(LOG_TREE)
            .map_err(|e| SledStoreError::sled(format!("open_tree `{LOG_TREE}`"), e))?;
        let meta = db
            .open_tree(LOG_META_TREE)
            .map_err(|e| SledStoreError::sled(format!("open_tree `{LOG_META_TREE}`"), e))?;
        util::check_format(&location, &meta, LOG_META_TREE, KEY_FORMAT, FORMAT)?;
        let hard_state =
            read_meta(&meta, KEY_HARD_STATE, codec::get_hard_state)?.unwrap_or_default();
        let snapshot = read_meta(&meta, KEY_SNAPSHOT, codec::get_snapshot_meta)?;
        let offset = read_meta(&meta, KEY_PURGE_POINT, |r| {
            Ok(LogId::new(r.u64()?, r.u64()?))
        })?
        .unwrap_or_default();
        let mut store = Self {
            db,
            log,
            meta,
            location,
            durability,
            hard_state,
            snapshot,
            offset,
            last: offset,
            failed: None,
        };
        store.last = store.recover_last()?;
        Ok(store)
    }

    /// The last entry after the purge point (the purge point if there is none), checking
    /// that the live log starts right after the purge point.
    fn recover_last(&self) -> Result<LogId> {
        let Some((k, v)) = self.log.last().map_err(sled_err("last", LOG_TREE))? else {
            return Ok(self.offset);
        };
        let index = decode_index_key(&k)?;
        if index <= self.offset.index {
            // Only entries left behind by a purge interrupted by a crash.
            return Ok(self.offset);
        }
        let last = LogId::new(decode_header(index, &v)?, index);
        let first = self
            .log
            .range(index_key(self.offset.index + 1)..)
            .next()
            .transpose()
            .map_err(sled_err("range", LOG_TREE))?;
        if let Some((k, _)) = first {
            let first = decode_index_key(&k)?;
            if first != self.offset.index + 1 {
                return Err(SledStoreError::corrupt(
                    LOG_TREE,
                    first.to_string(),
                    format!(
                        "the log after purge point {} starts at entry {first}: entries are \
                         missing",
                        self.offset
                    ),
                ));
            }
        }
        Ok(last)
    }

    /// The sled database under the store.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The directory of the sled database.
    pub fn location(&self) -> &Path {
        &self.location
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(SledStoreError::Failed(why.clone())),
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

    fn put_meta(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.meta
            .insert(key, value)
            .map(drop)
            .map_err(sled_err("insert", LOG_META_TREE))
    }

    /// Removes every entry with index in `range` in one batch.
    fn remove_range(&self, range: impl std::ops::RangeBounds<[u8; 8]>) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for kv in self.log.range(range) {
            let (k, _) = kv.map_err(sled_err("range", LOG_TREE))?;
            batch.remove(k);
            any = true;
        }
        if any {
            self.log
                .apply_batch(batch)
                .map_err(sled_err("apply_batch", LOG_TREE))?;
        }
        Ok(())
    }

    fn read_range(&self, from: Index, to: Index) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity((to - from + 1).min(1 << 16) as usize);
        let mut expect = from;
        for kv in self.log.range(index_key(from)..=index_key(to)) {
            let (k, v) = kv.map_err(sled_err("range", LOG_TREE))?;
            let index = decode_index_key(&k)?;
            if index != expect {
                return Err(SledStoreError::corrupt(
                    LOG_TREE,
                    expect.to_string(),
                    format!("entry {expect} is missing (the next stored entry is {index})"),
                ));
            }
            out.push(decode_entry(index, &v)?);
            expect += 1;
        }
        if expect != to + 1 {
            return Err(SledStoreError::corrupt(
                LOG_TREE,
                expect.to_string(),
                format!("entry {expect} is missing (the log should end at {to})"),
            ));
        }
        Ok(out)
    }
}

fn decode_index_key(k: &[u8]) -> Result<Index> {
    <[u8; 8]>::try_from(k).map(u64::from_be_bytes).map_err(|_| {
        SledStoreError::corrupt(
            LOG_TREE,
            show_index_key(k),
            format!("a log key must be 8 bytes, found {}", k.len()),
        )
    })
}

/// Decodes an entry stored under `index`, checking that it is the entry for that index.
fn decode_entry(index: Index, v: &[u8]) -> Result<Entry> {
    let bytes = Bytes::copy_from_slice(v);
    let e = codec::decode_entry(&bytes)
        .map_err(|e| SledStoreError::corrupt(LOG_TREE, index.to_string(), e.to_string()))?;
    if e.log_id.index != index {
        return Err(SledStoreError::corrupt(
            LOG_TREE,
            index.to_string(),
            format!("the record holds entry {}", e.log_id),
        ));
    }
    Ok(e)
}

/// The term of the entry stored under `index`, from the record's header only.
fn decode_header(index: Index, v: &[u8]) -> Result<Term> {
    let mut r = Reader::new(v, "log entry header");
    let parsed = r.u64().and_then(|t| Ok((t, r.u64()?)));
    match parsed {
        Ok((term, i)) if i == index => Ok(term),
        Ok((_, i)) => Err(SledStoreError::corrupt(
            LOG_TREE,
            index.to_string(),
            format!("the record holds entry index {i}"),
        )),
        Err(e) => Err(SledStoreError::corrupt(
            LOG_TREE,
            index.to_string(),
            e.to_string(),
        )),
    }
}

/// Reads and decodes a record of the meta tree; `None` if absent.
fn read_meta<T>(
    meta: &sled::Tree,
    key: &[u8],
    decode: impl FnOnce(&mut Reader<'_>) -> Result<T, codec::CodecError>,
) -> Result<Option<T>> {
    let Some(v) = meta.get(key).map_err(sled_err("get", LOG_META_TREE))? else {
        return Ok(None);
    };
    let mut r = Reader::new(&v, "log store metadata");
    let out = decode(&mut r).and_then(|t| r.finish().map(|()| t));
    out.map(Some)
        .map_err(|e| SledStoreError::corrupt(LOG_META_TREE, util::show_key(key), e.to_string()))
}

impl LogStore for SledLogStore {
    fn load(&mut self) -> Result<StoredLog, StorageError> {
        let entries = if self.last.index > self.offset.index {
            self.read_range(self.offset.index + 1, self.last.index)?
        } else {
            Vec::new()
        };
        Ok(StoredLog {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
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
        let mut batch = sled::Batch::default();
        for e in entries {
            if e.log_id.index != prev.index + 1 {
                return Err(StorageError::NotContiguous {
                    last: prev,
                    found: e.log_id,
                });
            }
            batch.insert(&index_key(e.log_id.index), codec::encode_entry(e).as_ref());
            prev = e.log_id;
        }
        let r = self
            .log
            .apply_batch(batch)
            .map_err(sled_err("apply_batch", LOG_TREE));
        self.fail(r)?;
        self.last = prev;
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        if from > self.last.index {
            return Ok(());
        }
        let from = from.max(self.offset.index + 1);
        let r = self.remove_range(index_key(from)..);
        self.fail(r)?;
        self.last = if from - 1 > self.offset.index {
            let r = self
                .log
                .get(index_key(from - 1))
                .map_err(sled_err("get", LOG_TREE))
                .and_then(|v| match v {
                    Some(v) => decode_header(from - 1, &v),
                    None => Err(SledStoreError::corrupt(
                        LOG_TREE,
                        (from - 1).to_string(),
                        "the entry before the truncation point is missing",
                    )),
                });
            LogId::new(self.fail(r)?, from - 1)
        } else {
            self.offset
        };
        Ok(())
    }

    fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.check_usable()?;
        if up_to.index <= self.offset.index {
            return Ok(());
        }
        // The purge point first: a crash before the removals leaves only entries that are
        // never read again.
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&up_to.term.to_le_bytes());
        v.extend_from_slice(&up_to.index.to_le_bytes());
        let r = self
            .put_meta(KEY_PURGE_POINT, v)
            .and_then(|()| self.remove_range(..=index_key(up_to.index)));
        self.fail(r)?;
        self.offset = up_to;
        if up_to.index >= self.last.index {
            self.last = up_to;
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        let mut v = Vec::with_capacity(24);
        codec::put_hard_state(&mut v, hs);
        let r = self.put_meta(KEY_HARD_STATE, v);
        self.fail(r)?;
        self.hard_state = *hs;
        Ok(())
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.check_usable()?;
        let mut v = Vec::with_capacity(64);
        codec::put_snapshot_meta(&mut v, meta);
        let r = self.put_meta(KEY_SNAPSHOT, v);
        self.fail(r)?;
        self.snapshot = Some(meta.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let r = self.durability.flush(&self.db);
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
        if index == self.last.index {
            return Ok(Some(self.last.term));
        }
        match self
            .log
            .get(index_key(index))
            .map_err(sled_err("get", LOG_TREE))?
        {
            Some(v) => Ok(Some(decode_header(index, &v)?)),
            None => Err(SledStoreError::corrupt(
                LOG_TREE,
                index.to_string(),
                format!(
                    "entry {index} is missing inside the log ({}..={})",
                    self.offset.index + 1,
                    self.last.index
                ),
            )
            .into()),
        }
    }

    fn bounds(&self) -> (LogId, LogId) {
        (self.offset, self.last)
    }
}
