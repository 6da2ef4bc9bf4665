//! Octopii guide, "Persistence Patterns", Pattern 2 (WAL-backed persistence), implemented
//! for real: `DurableStateMachine` keeps its map in memory and every command in a small
//! write-ahead log of its own, so a restarted node does not rebuild it from a snapshot and
//! the Raft log, and does not apply anything twice.
//!
//! The seed's sketch (`self.wal.append(command)?`, then update the map) leaves three things
//! open that lockstep needs, and this module fills them in:
//! - **the log position.** lockstep calls [`StateMachineTrait::apply_at`] with the entry's
//!   [`LogId`]; the WAL stores it with the command, and
//!   [`StateMachineTrait::last_applied`] reports the last one, so after a restart the node
//!   skips every entry the machine already holds (and `apply_at` refuses one itself);
//! - **snapshots.** [`StateMachineTrait::restore_at`] replaces the state and its position
//!   together, as a new checkpoint file (see below); [`StateMachineTrait::compact`], which
//!   lockstep calls after each snapshot, checkpoints the current state the same way. That
//!   is the seed's "WAL compaction": the log never grows past one snapshot interval;
//! - **failures.** The minimal trait's `Err(String)` is the command's *answer*, recorded as
//!   applied. A WAL write that fails must not become an answer (this replica would then
//!   lack a command its peers applied), so `apply_at` panics instead. A machine whose I/O
//!   can fail is better written with the full `StateMachine` trait, whose
//!   `Err(StateMachineError)` stops the node (fail-stop).
//!
//! Files, in the machine's directory:
//! - `base`: the checkpoint: a generation number, the log position and the map (the
//!   [`super::codec`] format), with a CRC32C. Replaced atomically (written to `base.tmp`,
//!   fsynced, renamed, directory fsynced).
//! - `wal-<generation>.log`: the commands applied since that checkpoint, each record
//!   `len u32 | crc32c u32 | term u64 | index u64 | command`, fsynced before the command
//!   changes the map. A record cut off by a crash (the torn tail) is dropped on open.
//!
//! A checkpoint first creates the next generation's empty log, then renames the new `base`
//! into place (the commit point), then deletes the old log; on open, logs of any other
//! generation are deleted. So a crash leaves either the old checkpoint with its log, or
//! the new one.
//!
//! `INCR key` is an addition to the seed's `SET` / `GET`: unlike `SET`, applying it twice
//! shows in the state, which the restart test relies on.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::LogId;

use super::codec;

const BASE_MAGIC: &[u8; 8] = b"SGWBASE1";
const RECORD_HEADER: usize = 4 + 4 + 8 + 8;

/// The seed's durable machine: the map, and the log that makes it durable.
pub struct DurableStateMachine {
    data: RwLock<HashMap<String, String>>,
    wal: Arc<WriteAheadLog>,
    // ---- additions, for tests ----
    /// The position recovered when this instance was opened.
    opened_at: Option<LogId>,
    /// Every position this instance applied (not skipped), in order.
    executed: Mutex<Vec<LogId>>,
}

impl DurableStateMachine {
    /// Opens (or creates) the machine stored in `dir`: the checkpoint, then the commands
    /// logged after it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, String> {
        let (wal, recovered) = WriteAheadLog::open(dir.as_ref())?;
        let mut data = if recovered.base.is_empty() {
            HashMap::new()
        } else {
            codec::from_bytes(&recovered.base).map_err(|e| format!("checkpoint: {e}"))?
        };
        for (_, command) in &recovered.records {
            // The answers were given before the restart; only the effect matters here.
            let _ = execute(&mut data, command);
        }
        let opened_at = wal.last();
        Ok(Self {
            data: RwLock::new(data),
            wal: Arc::new(wal),
            opened_at,
            executed: Mutex::new(Vec::new()),
        })
    }

    /// The position this instance recovered when it was opened (`None`: nothing yet).
    pub fn opened_at(&self) -> Option<LogId> {
        self.opened_at
    }

    /// The positions this instance applied since it was opened (entries it skipped as
    /// already applied are not listed).
    pub fn executed(&self) -> Vec<LogId> {
        self.executed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The integer under `key` (what `INCR key` counts), or 0.
    pub fn counter(&self, key: &str) -> i64 {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        data.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl StateMachineTrait for DurableStateMachine {
    /// A command from outside the log (a direct call; a node always calls `apply_at`): it
    /// is logged at the position after the last one.
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let next = self
            .wal
            .last()
            .map_or(LogId::new(0, 1), |l| LogId::new(l.term, l.index + 1));
        self.apply_at(next, command)
    }

    fn apply_at(&self, at: LogId, command: &[u8]) -> Result<Bytes, String> {
        // Held for the whole apply: positions are logged in the order they change the map.
        let mut data = self.data.write().unwrap();
        if self.wal.last().is_some_and(|l| at.index <= l.index) {
            return Err(format!("entry {at} is already applied"));
        }
        // 1. Persist to WAL FIRST
        if let Err(e) = self.wal.append(at, command) {
            panic!("the write-ahead log failed at entry {at}: {e}; stopping rather than diverge");
        }
        self.executed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(at);
        // 2. Apply to in-memory state
        execute(&mut data, command)
    }

    fn query(&self, query: &[u8]) -> Option<Result<Bytes, String>> {
        let data = self.data.read().unwrap();
        let q = String::from_utf8_lossy(query);
        Some(match q.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["GET", key] => Ok(Bytes::from(
                data.get(*key)
                    .cloned()
                    .unwrap_or_else(|| "NOT_FOUND".into()),
            )),
            _ => Err(format!("Unknown query: {q}")),
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        codec::to_bytes(&self.data.read().unwrap())
    }

    /// A snapshot from outside the log (a direct call): taken as the state before the
    /// first entry. A node always calls `restore_at`.
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        self.restore_at(LogId::default(), snapshot)
    }

    fn restore_at(&self, last: LogId, snapshot: &[u8]) -> Result<(), String> {
        // Checked whole before anything changes: a rejected snapshot leaves the old state.
        let restored = if snapshot.is_empty() {
            HashMap::new()
        } else {
            codec::from_bytes(snapshot)?
        };
        let mut data = self.data.write().unwrap();
        self.wal
            .checkpoint(&codec::to_bytes(&restored), Some(last))?;
        *data = restored;
        Ok(())
    }

    fn compact(&self) -> Result<(), String> {
        // The read lock keeps applies out while the checkpoint is written.
        let data = self.data.read().unwrap();
        self.wal
            .checkpoint(&codec::to_bytes(&data), self.wal.last())
    }

    fn last_applied(&self) -> Option<LogId> {
        self.wal.last()
    }
}

/// `SET key value`, `GET key` (the seed's) and `INCR key` (added).
fn execute(data: &mut HashMap<String, String>, command: &[u8]) -> Result<Bytes, String> {
    let cmd_str =
        String::from_utf8(command.to_vec()).map_err(|e| format!("Invalid UTF-8: {}", e))?;
    let parts: Vec<&str> = cmd_str.split_whitespace().collect();
    match parts.as_slice() {
        ["SET", key, value] => {
            data.insert(key.to_string(), value.to_string());
            Ok(Bytes::from("OK"))
        }
        ["GET", key] => Ok(Bytes::from(
            data.get(*key)
                .cloned()
                .unwrap_or_else(|| "NOT_FOUND".into()),
        )),
        ["INCR", key] => {
            let n: i64 = match data.get(*key) {
                Some(v) => v.parse().map_err(|_| format!("{key} is not a number"))?,
                None => 0,
            };
            data.insert(key.to_string(), (n + 1).to_string());
            Ok(Bytes::from((n + 1).to_string()))
        }
        _ => Err(format!("Unknown command: {}", cmd_str)),
    }
}

/// The machine's own write-ahead log, with its checkpoint.
pub struct WriteAheadLog {
    dir: PathBuf,
    inner: Mutex<WalFile>,
}

struct WalFile {
    file: File,
    generation: u64,
    last: Option<LogId>,
}

/// What [`WriteAheadLog::open`] found.
pub struct Recovered {
    /// The checkpoint's state (empty if there is none yet).
    pub base: Vec<u8>,
    /// The commands logged after the checkpoint, in order.
    pub records: Vec<(LogId, Vec<u8>)>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:020}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", dir, e))
}

impl WriteAheadLog {
    /// Opens the log in `dir` (created if missing), dropping a torn tail and the files of
    /// an interrupted checkpoint.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), String> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        let base_path = dir.join("base");
        let (generation, mut last, base) = match fs::read(&base_path) {
            Ok(bytes) => {
                decode_base(&bytes).map_err(|e| format!("{}: {e}", base_path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, None, Vec::new()),
            Err(e) => return Err(io_err("reading", &base_path, e)),
        };
        let current = wal_path(dir, generation);
        for entry in fs::read_dir(dir).map_err(|e| io_err("listing", dir, e))? {
            let path = entry.map_err(|e| io_err("listing", dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "base.tmp" || (name.starts_with("wal-") && path != current) {
                // Gone already is fine: a compaction may have removed it meanwhile (an
                // in-process "crash" leaves the old instance running for a moment).
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_err("removing", &path, e))
                    }
                    _ => {}
                }
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&current)
            .map_err(|e| io_err("opening", &current, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_err("reading", &current, e))?;
        let mut records = Vec::new();
        let mut at = 0;
        while let Some((id, command, len)) = decode_record(&bytes[at..]) {
            if last.is_some_and(|l: LogId| id.index <= l.index) {
                return Err(format!(
                    "{}: record {id} at byte {at} does not follow {last:?}",
                    current.display()
                ));
            }
            records.push((id, command));
            last = Some(id);
            at += len;
        }
        if at < bytes.len() {
            // A record cut off (or never completely written) by a crash: it was never
            // fsynced, so it was never applied. Drop it.
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("truncating the torn tail of", &current, e))?;
        }
        sync_dir(dir)?;
        let wal = Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(WalFile {
                file,
                generation,
                last,
            }),
        };
        Ok((wal, Recovered { base, records }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WalFile> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The position of the last logged command (or of the checkpoint).
    pub fn last(&self) -> Option<LogId> {
        self.lock().last
    }

    /// Logs `command` at `at` and fsyncs it.
    pub fn append(&self, at: LogId, command: &[u8]) -> Result<(), String> {
        let mut w = self.lock();
        let mut record = Vec::with_capacity(RECORD_HEADER + command.len());
        let len = u32::try_from(command.len()).map_err(|_| "command over 4 GiB".to_string())?;
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&at.term.to_le_bytes());
        record.extend_from_slice(&at.index.to_le_bytes());
        record.extend_from_slice(command);
        let crc = crc32c::crc32c(&record[8..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let path = wal_path(&self.dir, w.generation);
        w.file
            .write_all(&record)
            .and_then(|()| w.file.sync_data())
            .map_err(|e| io_err("appending to", &path, e))?;
        w.last = Some(at);
        Ok(())
    }

    /// Makes `state` at position `last` the new checkpoint and starts an empty log.
    pub fn checkpoint(&self, state: &[u8], last: Option<LogId>) -> Result<(), String> {
        let mut w = self.lock();
        let next = w.generation + 1;
        let next_path = wal_path(&self.dir, next);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&next_path)
            .and_then(|f| f.set_len(0).and(f.sync_all()).map(|()| f))
            .map_err(|e| io_err("creating", &next_path, e))?;
        let tmp = self.dir.join("base.tmp");
        let base = self.dir.join("base");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&encode_base(next, last, state))?;
                f.sync_all()
            })
            .map_err(|e| io_err("writing", &tmp, e))?;
        fs::rename(&tmp, &base).map_err(|e| io_err("renaming", &tmp, e))?;
        sync_dir(&self.dir)?;
        // Committed: the old log is no longer needed (a crash now leaves it to `open`).
        let old = wal_path(&self.dir, w.generation);
        let _ = fs::remove_file(old);
        *w = WalFile {
            file,
            generation: next,
            last,
        };
        Ok(())
    }
}

fn encode_base(generation: u64, last: Option<LogId>, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 + 17 + 8 + state.len() + 4);
    out.extend_from_slice(BASE_MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    let l = last.unwrap_or_default();
    out.push(u8::from(last.is_some()));
    out.extend_from_slice(&l.term.to_le_bytes());
    out.extend_from_slice(&l.index.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(state);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

type Base = (u64, Option<LogId>, Vec<u8>);

fn decode_base(b: &[u8]) -> Result<Base, String> {
    const HEAD: usize = 8 + 8 + 1 + 8 + 8 + 8;
    if b.len() < HEAD + 4 || &b[..8] != BASE_MAGIC {
        return Err("not a checkpoint file".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        // Written to a temporary file, fsynced and renamed: damage is not a crash artefact.
        return Err("checksum mismatch".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let len = u64_at(33) as usize;
    if HEAD + len != body.len() {
        return Err("length mismatch".into());
    }
    let last = (b[16] == 1).then(|| LogId::new(u64_at(17), u64_at(25)));
    Ok((u64_at(8), last, body[HEAD..].to_vec()))
}

/// One complete, intact record at the start of `b`: its id, command and length.
fn decode_record(b: &[u8]) -> Option<(LogId, Vec<u8>, usize)> {
    if b.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let end = RECORD_HEADER.checked_add(len)?;
    if b.len() < end || crc32c::crc32c(&b[8..end]) != crc {
        return None;
    }
    let term = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let index = u64::from_le_bytes(b[16..24].try_into().ok()?);
    Some((LogId::new(term, index), b[RECORD_HEADER..end].to_vec(), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_recovers_the_state_and_refuses_entries_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let sm = DurableStateMachine::open(dir.path()).unwrap();
        for i in 1..=5 {
            sm.apply_at(LogId::new(1, i), b"INCR n").unwrap();
        }
        sm.compact().unwrap(); // a checkpoint at 1-5, an empty log
        sm.apply_at(LogId::new(2, 6), b"INCR n").unwrap();
        sm.apply_at(LogId::new(2, 7), b"SET k v").unwrap();
        drop(sm);

        let sm = DurableStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.last_applied(), Some(LogId::new(2, 7)));
        assert_eq!(sm.opened_at(), Some(LogId::new(2, 7)));
        assert_eq!(sm.counter("n"), 6);
        assert!(sm.apply_at(LogId::new(2, 6), b"INCR n").is_err());
        assert_eq!(
            sm.counter("n"),
            6,
            "an entry at or below last_applied is not re-applied"
        );
        assert_eq!(sm.query(b"GET k"), Some(Ok(Bytes::from("v"))));
        assert!(sm.executed().is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let sm = DurableStateMachine::open(dir.path()).unwrap();
        sm.apply_at(LogId::new(1, 1), b"INCR n").unwrap();
        sm.apply_at(LogId::new(1, 2), b"INCR n").unwrap();
        drop(sm);
        // Half of a third record, as a crash during its write leaves it.
        let log = wal_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);

        let sm = DurableStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.last_applied(), Some(LogId::new(1, 2)));
        sm.apply_at(LogId::new(1, 3), b"INCR n").unwrap();
        drop(sm);
        let sm = DurableStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.counter("n"), 3);
    }

    #[test]
    fn a_rejected_snapshot_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sm = DurableStateMachine::open(dir.path()).unwrap();
        sm.apply_at(LogId::new(1, 1), b"SET a 1").unwrap();
        let snap = sm.snapshot();
        assert!(sm
            .restore_at(LogId::new(1, 9), &snap[..snap.len() / 2])
            .is_err());
        assert_eq!(sm.last_applied(), Some(LogId::new(1, 1)));
        sm.restore_at(LogId::new(3, 9), &snap).unwrap();
        drop(sm);
        let sm = DurableStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.last_applied(), Some(LogId::new(3, 9)));
        assert_eq!(sm.query(b"GET a"), Some(Ok(Bytes::from("1"))));
    }
}
