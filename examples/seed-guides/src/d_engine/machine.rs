//! The guide's `CustomStateMachine` (section 1, "Implement the Trait"), complete.
//!
//! What changes against the guide (see docs/porting-from-d-engine.md):
//! - `start`, `stop`, `is_running`: no counterpart; a machine has no lifecycle of its own
//!   (the node has: `NodeBuilder::start`, `RunningNode::shutdown`, `status().stopped`).
//! - `get(key)` becomes `query(&[u8])`, which answers `CommandResult` bytes.
//! - `apply_chunk(Vec<Entry>) -> Result<()>` becomes
//!   `apply_chunk(&[Command]) -> Result<Vec<CommandResult>, StateMachineError>`: one answer
//!   per command. A command that does not decode is an *answer*
//!   (`Ok(Err(CommandError))`), not an `Err`: in lockstep `Err(StateMachineError)` means
//!   the machine itself failed and stops the node (fail-stop).
//! - `last_applied` is reported only by machines that persist their state: the node
//!   skips entries at or below it after a restart. This backend is in memory, so the
//!   machine reports `None` (the default) and keeps its applied index for information
//!   only. The `snapshot_meta` field is gone: the node keeps snapshot metadata itself and
//!   passes the snapshot's `LogId` to `restore`.
//! - `entry_term(index)` has no counterpart: each [`Command`] carries its `log_id`
//!   (term and index).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::{Command, CommandError, CommandResult, LogId, StateMachineError};

/// The guide's `AppCommand` (undefined there), with its own encoding in place of
/// `bincode`: tag `1` = put, then the key length (`u32` LE), the key and the value; tag
/// `2` = delete, then the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl AppCommand {
    /// The command's bytes, as proposed.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            AppCommand::Put { key, value } => {
                out.push(1);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            AppCommand::Delete { key } => {
                out.push(2);
                out.extend_from_slice(key);
            }
        }
        Bytes::from(out)
    }

    /// Decodes what [`AppCommand::encode`] wrote.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        match b.split_first() {
            Some((1, rest)) if rest.len() >= 4 => {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
                let rest = &rest[4..];
                if rest.len() < len {
                    return Err("put: key cut short".into());
                }
                Ok(AppCommand::Put {
                    key: rest[..len].to_vec(),
                    value: rest[len..].to_vec(),
                })
            }
            Some((2, key)) => Ok(AppCommand::Delete { key: key.to_vec() }),
            _ => Err("not an AppCommand".into()),
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The guide's `ApplicationStorage` (undefined there): what the machine needs of its
/// backend.
pub trait ApplicationStorage: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Carries out one command; returns the previous value.
    fn execute(&self, cmd: AppCommand) -> Option<Vec<u8>>;
    /// Number of keys.
    fn count(&self) -> usize;
    /// Every entry, in key order.
    fn export(&self) -> Vec<Entry>;
    /// Replaces every entry.
    fn import(&self, entries: Vec<Entry>);
}

/// An in-memory [`ApplicationStorage`].
#[derive(Default)]
pub struct MemoryBackend(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl MemoryBackend {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ApplicationStorage for MemoryBackend {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map().get(key).cloned()
    }
    fn execute(&self, cmd: AppCommand) -> Option<Vec<u8>> {
        match cmd {
            AppCommand::Put { key, value } => self.map().insert(key, value),
            AppCommand::Delete { key } => self.map().remove(&key),
        }
    }
    fn count(&self) -> usize {
        self.map().len()
    }
    fn export(&self) -> Vec<Entry> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn import(&self, entries: Vec<Entry>) {
        *self.map() = entries.into_iter().collect();
    }
}

/// The guide's machine.
pub struct CustomStateMachine {
    // Your storage backend
    backend: Arc<dyn ApplicationStorage>,
    /// The highest index applied: informational (see the module docs).
    last_applied: AtomicU64,
}

impl CustomStateMachine {
    /// A machine on an empty in-memory backend.
    pub fn new() -> Self {
        Self::with_backend(Arc::new(MemoryBackend::default()))
    }

    /// A machine on `backend`.
    pub fn with_backend(backend: Arc<dyn ApplicationStorage>) -> Self {
        Self {
            backend,
            last_applied: AtomicU64::new(0),
        }
    }

    /// The guide's `len()`: the number of keys.
    pub fn len(&self) -> usize {
        self.backend.count()
    }

    /// The guide's `is_empty()`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest index this machine applied (in memory).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.load(Ordering::Acquire)
    }

    fn apply_one(&self, command: &Command) -> CommandResult {
        let result = match AppCommand::decode(&command.data) {
            // Deserialize and process entries
            Ok(cmd) => Ok(Bytes::from(self.backend.execute(cmd).unwrap_or_default())),
            Err(e) => Err(CommandError(format!("entry {}: {e}", command.log_id))),
        };
        self.last_applied
            .fetch_max(command.log_id.index, Ordering::AcqRel);
        result
    }
}

impl Default for CustomStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// Snapshot layout: the entry count (`u64` LE), then per entry the key length (`u32`), the
/// key, the value length (`u32`) and the value. (lockstep frames it and checks its CRC.)
fn encode_snapshot(entries: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(&(entries.len() as u64).to_le_bytes())?;
    for (k, v) in entries {
        for part in [k, v] {
            out.write_all(&(part.len() as u32).to_le_bytes())?;
            out.write_all(part)?;
        }
    }
    Ok(())
}

fn decode_snapshot(mut b: &[u8]) -> Result<Vec<Entry>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("snapshot cut short".into());
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let count = u64::from_le_bytes(take(&mut b, 8)?.try_into().unwrap_or_default());
    if count > b.len() as u64 / 8 {
        return Err(format!("entry count {count} does not fit the snapshot"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut part = || -> Result<Vec<u8>, String> {
            let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap_or_default());
            Ok(take(&mut b, len as usize)?.to_vec())
        };
        let k = part()?;
        let v = part()?;
        entries.push((k, v));
    }
    if !b.is_empty() {
        return Err(format!("{} trailing bytes", b.len()));
    }
    Ok(entries)
}

#[async_trait]
impl StateMachine for CustomStateMachine {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        Ok(self.apply_one(command))
    }

    async fn apply_chunk(
        &self,
        chunk: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        // A durable backend would write the whole chunk and its last index atomically here.
        Ok(chunk.iter().map(|c| self.apply_one(c)).collect())
    }

    fn query(&self, key_buffer: &[u8]) -> CommandResult {
        // Retrieve value by key
        match self.backend.get(key_buffer) {
            Some(v) => Ok(Bytes::from(v)),
            None => Err(CommandError("key not found".into())),
        }
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        encode_snapshot(&self.backend.export(), out)
            .map_err(|e| StateMachineError::Other(format!("writing the snapshot: {e}")))
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        // Read to the end: lockstep checks the snapshot's checksum on the last read.
        let mut bytes = Vec::new();
        input
            .read_to_end(&mut bytes)
            .map_err(|e| StateMachineError::Other(format!("reading the snapshot: {e}")))?;
        // Checked whole before anything is replaced.
        let entries = decode_snapshot(&bytes).map_err(StateMachineError::InvalidSnapshot)?;
        self.backend.import(entries);
        self.last_applied.store(last.index, Ordering::Release);
        Ok(())
    }
}
