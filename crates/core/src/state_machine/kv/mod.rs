//! The default in-memory key-value state machine, [`KvStateMachine`].
//!
//! Keys and values are arbitrary bytes. Commands ([`KvCommand`]) change the map, queries
//! ([`KvQuery`]) read it, and both are answered with a [`KvResponse`]. All three travel in
//! a binary encoding; decoding never panics, and a command that does not decode is
//! rejected deterministically with a [`CommandError`] naming what was wrong.
//!
//! The formats are documented on [`KvStateMachine`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::{BufMut, Bytes};

mod shards;

use self::shards::{KvView, Shards};
use super::{Command, SnapshotView, StateMachine};
use crate::codec::{CodecError, Reader};
use crate::error::{CommandError, CommandResult, StateMachineError, StorageError};
use crate::types::LogId;

const TAG_PUT: u8 = 0x01;
const TAG_DELETE: u8 = 0x02;
const TAG_CAS: u8 = 0x03;
const TAG_GET: u8 = 0x10;
const TAG_VALUE: u8 = 0x20;
const TAG_CAS_RESULT: u8 = 0x21;

const SNAPSHOT_MAGIC: &[u8; 4] = b"LKVS";
const SNAPSHOT_VERSION: u32 = 1;
/// Magic, version and count.
const SNAPSHOT_HEADER_LEN: usize = 16;
const SNAPSHOT_CRC_LEN: usize = 4;

/// A state-changing command of the [`KvStateMachine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Sets `key` to `value`. Answered with [`KvResponse::Value`] holding the previous value.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Removes `key`. Answered with [`KvResponse::Value`] holding the previous value.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Compare-and-swap: if the current value of `key` equals `expected` (`None` = the key is
    /// absent), sets it to `new` (`None` = delete it). Answered with [`KvResponse::Cas`].
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must currently have; `None` means "must be absent".
        expected: Option<Bytes>,
        /// The value to store on success; `None` deletes the key.
        new: Option<Bytes>,
    },
}

/// A read-only query of the [`KvStateMachine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// Reads `key`. Answered with [`KvResponse::Value`].
    Get {
        /// The key.
        key: Bytes,
    },
}

/// The answer of the [`KvStateMachine`] to a command or query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A value: the current one for `Get`, the previous one for `Put` and `Delete`
    /// (`None` = the key was absent).
    Value(Option<Bytes>),
    /// The outcome of a `Cas`.
    Cas {
        /// Whether the comparison matched and the new value was stored.
        succeeded: bool,
        /// The value of the key after the command (`None` = absent): the new value on
        /// success, the unchanged mismatching value on failure.
        current: Option<Bytes>,
    },
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.put_u32_le(field.len() as u32);
    out.put_slice(field);
}

fn put_opt_field(out: &mut Vec<u8>, field: Option<&Bytes>) {
    match field {
        None => out.put_u8(0),
        Some(f) => {
            out.put_u8(1);
            put_field(out, f);
        }
    }
}

fn field_len(field: &[u8]) -> usize {
    4 + field.len()
}

fn opt_field_len(field: Option<&Bytes>) -> usize {
    1 + field.map_or(0, |f| field_len(f))
}

fn get_field(r: &mut Reader<'_>) -> Result<Bytes, CodecError> {
    let len = r.u32()? as usize;
    Ok(Bytes::copy_from_slice(r.bytes(len)?))
}

fn get_opt_field(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Bytes>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_field(r)?)),
        x => Err(CodecError {
            what,
            detail: format!(
                "presence byte {x} at offset {} is neither 0 nor 1",
                r.position() - 1
            ),
        }),
    }
}

fn get_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, CodecError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(CodecError {
            what,
            detail: format!("flag byte {x} is neither 0 nor 1"),
        }),
    }
}

fn unknown_tag(what: &'static str, tag: u8) -> CodecError {
    CodecError {
        what,
        detail: format!("unknown tag {tag:#04x}"),
    }
}

impl KvCommand {
    const WHAT: &'static str = "kv command";

    /// Encodes the command (format documented on [`KvStateMachine`]).
    pub fn encode(&self) -> Bytes {
        let len = 1 + match self {
            KvCommand::Put { key, value } => field_len(key) + field_len(value),
            KvCommand::Delete { key } => field_len(key),
            KvCommand::Cas { key, expected, new } => {
                field_len(key) + opt_field_len(expected.as_ref()) + opt_field_len(new.as_ref())
            }
        };
        let mut out = Vec::with_capacity(len);
        match self {
            KvCommand::Put { key, value } => {
                out.put_u8(TAG_PUT);
                put_field(&mut out, key);
                put_field(&mut out, value);
            }
            KvCommand::Delete { key } => {
                out.put_u8(TAG_DELETE);
                put_field(&mut out, key);
            }
            KvCommand::Cas { key, expected, new } => {
                out.put_u8(TAG_CAS);
                put_field(&mut out, key);
                put_opt_field(&mut out, expected.as_ref());
                put_opt_field(&mut out, new.as_ref());
            }
        }
        Bytes::from(out)
    }

    /// Decodes a command that fills `buf` exactly.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, Self::WHAT);
        let cmd = match r.u8()? {
            TAG_PUT => KvCommand::Put {
                key: get_field(&mut r)?,
                value: get_field(&mut r)?,
            },
            TAG_DELETE => KvCommand::Delete {
                key: get_field(&mut r)?,
            },
            TAG_CAS => KvCommand::Cas {
                key: get_field(&mut r)?,
                expected: get_opt_field(&mut r, Self::WHAT)?,
                new: get_opt_field(&mut r, Self::WHAT)?,
            },
            t => return Err(unknown_tag(Self::WHAT, t)),
        };
        r.finish()?;
        Ok(cmd)
    }
}

impl KvQuery {
    const WHAT: &'static str = "kv query";

    /// Encodes the query (format documented on [`KvStateMachine`]).
    pub fn encode(&self) -> Bytes {
        let KvQuery::Get { key } = self;
        let mut out = Vec::with_capacity(1 + field_len(key));
        out.put_u8(TAG_GET);
        put_field(&mut out, key);
        Bytes::from(out)
    }

    /// Decodes a query that fills `buf` exactly.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, Self::WHAT);
        let query = match r.u8()? {
            TAG_GET => KvQuery::Get {
                key: get_field(&mut r)?,
            },
            t => return Err(unknown_tag(Self::WHAT, t)),
        };
        r.finish()?;
        Ok(query)
    }
}

impl KvResponse {
    const WHAT: &'static str = "kv response";

    /// Encodes the response (format documented on [`KvStateMachine`]).
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
            KvResponse::Value(v) => {
                out = Vec::with_capacity(1 + opt_field_len(v.as_ref()));
                out.put_u8(TAG_VALUE);
                put_opt_field(&mut out, v.as_ref());
            }
            KvResponse::Cas { succeeded, current } => {
                out = Vec::with_capacity(2 + opt_field_len(current.as_ref()));
                out.put_u8(TAG_CAS_RESULT);
                out.put_u8(u8::from(*succeeded));
                put_opt_field(&mut out, current.as_ref());
            }
        }
        Bytes::from(out)
    }

    /// Decodes a response that fills `buf` exactly.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, Self::WHAT);
        let resp = match r.u8()? {
            TAG_VALUE => KvResponse::Value(get_opt_field(&mut r, Self::WHAT)?),
            TAG_CAS_RESULT => KvResponse::Cas {
                succeeded: get_bool(&mut r, Self::WHAT)?,
                current: get_opt_field(&mut r, Self::WHAT)?,
            },
            t => return Err(unknown_tag(Self::WHAT, t)),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// The default state machine: an in-memory ordered map from byte keys to byte values.
///
/// It keeps no data of its own on disk ([`StateMachine::last_applied`] is `None`): a node
/// rebuilds it from the latest snapshot and the log at every start.
///
/// Commands ([`KvCommand`]) change the map, queries ([`KvQuery`]) read it, and both are
/// answered with a [`KvResponse`], all in the encoding below. A command that does not
/// decode is answered with a [`CommandError`] naming what was wrong (a deterministic
/// rejection, never a panic).
///
/// # Wire format
///
/// Every message starts with a tag byte. Integers are little-endian. A *field* is a `u32`
/// length followed by that many bytes; an *optional field* is a presence byte (`0` absent,
/// `1` present) followed, if present, by a field. A message must be consumed exactly:
/// trailing bytes are an error.
///
/// | message | tag | body |
/// |---|---|---|
/// | `KvCommand::Put` | `0x01` | key field, value field |
/// | `KvCommand::Delete` | `0x02` | key field |
/// | `KvCommand::Cas` | `0x03` | key field, optional `expected` field, optional `new` field |
/// | `KvQuery::Get` | `0x10` | key field |
/// | `KvResponse::Value` | `0x20` | optional value field |
/// | `KvResponse::Cas` | `0x21` | succeeded byte (`0`/`1`), optional current-value field |
///
/// Commands and queries use distinct tags, so a command sent as a query (or the reverse) is
/// rejected instead of being misread.
///
/// # Snapshot format
///
/// | offset | content |
/// |---|---|
/// | 0 | magic `b"LKVS"` |
/// | 4 | format version, `u32` (currently 1) |
/// | 8 | entry count, `u64` |
/// | 16 | `count` × (key field, value field), keys in strictly ascending byte order |
/// | end − 4 | CRC-32C of every preceding byte, `u32` |
///
/// The map is kept in sorted `BTreeMap` shards (by a hash of the key) shared copy-on-write, and
/// snapshots list every shard's entries merged in key order, so equal states always give
/// byte-identical snapshots. Taking a snapshot copies no data
/// ([`StateMachine::snapshot_view`]): the next write to a shard copies that shard alone
/// (1/16 of the state) while a snapshot of it is being written. An empty input (zero
/// bytes) restores the empty state. [`StateMachine::restore`] decodes and checks
/// the whole snapshot before touching the current state: a corrupt snapshot is
/// rejected with [`StateMachineError::InvalidSnapshot`] and the old state is kept.
#[derive(Debug, Default)]
pub struct KvStateMachine {
    map: RwLock<Shards>,
}

impl KvStateMachine {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read().get(key).cloned()
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.read().len() == 0
    }

    /// The snapshot of the current state, synchronously (what [`StateMachine::snapshot`]
    /// writes; format documented on [`KvStateMachine`]).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.encode_snapshot()
    }

    /// Replaces the state with a snapshot, synchronously (what [`StateMachine::restore`]
    /// does). The snapshot is validated completely first: on error the state is unchanged.
    pub fn restore_bytes(&self, snapshot: &[u8]) -> Result<(), StateMachineError> {
        let map = Self::decode_snapshot(snapshot).map_err(StateMachineError::InvalidSnapshot)?;
        *self.write() = Shards::from_map(map);
        Ok(())
    }

    // A poisoned lock only means another thread panicked while holding it; every update
    // below is a single map operation, so the map itself is always consistent.
    fn read(&self) -> RwLockReadGuard<'_, Shards> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Shards> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes and applies one command to `map`.
    fn apply_to(map: &mut Shards, data: &[u8]) -> CommandResult {
        let cmd = KvCommand::decode(data).map_err(|e| CommandError(e.to_string()))?;
        let resp = match cmd {
            KvCommand::Put { key, value } => KvResponse::Value(map.insert(key, value)),
            KvCommand::Delete { key } => KvResponse::Value(map.remove(&key)),
            KvCommand::Cas { key, expected, new } => {
                let current = map.get(&key);
                if current == expected.as_ref() {
                    match &new {
                        Some(v) => {
                            map.insert(key, v.clone());
                        }
                        None => {
                            map.remove(&key);
                        }
                    }
                    KvResponse::Cas {
                        succeeded: true,
                        current: new,
                    }
                } else {
                    KvResponse::Cas {
                        succeeded: false,
                        current: current.cloned(),
                    }
                }
            }
        };
        Ok(resp.encode())
    }

    fn apply_batch(&self, commands: &[Command]) -> Vec<CommandResult> {
        let mut map = self.write();
        commands
            .iter()
            .map(|c| Self::apply_to(&mut map, &c.data))
            .collect()
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        let state = self.read().clone();
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = state.write_snapshot(&mut out);
        out
    }

    /// Decodes and fully validates a snapshot without touching any state.
    fn decode_snapshot(buf: &[u8]) -> Result<BTreeMap<Bytes, Bytes>, String> {
        if buf.is_empty() {
            return Ok(BTreeMap::new());
        }
        if buf.len() < SNAPSHOT_HEADER_LEN + SNAPSHOT_CRC_LEN {
            return Err(format!(
                "{} bytes is shorter than the {}-byte minimum",
                buf.len(),
                SNAPSHOT_HEADER_LEN + SNAPSHOT_CRC_LEN
            ));
        }
        let (body, crc_bytes) = buf.split_at(buf.len() - SNAPSHOT_CRC_LEN);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(crc_bytes);
        let stored = u32::from_le_bytes(crc);
        let actual = crc32c::crc32c(body);
        if stored != actual {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ));
        }
        let mut r = Reader::new(body, "kv snapshot");
        let magic = r.bytes(4).map_err(|e| e.to_string())?;
        if magic != SNAPSHOT_MAGIC {
            return Err(format!(
                "bad magic {magic:02x?}, expected {SNAPSHOT_MAGIC:02x?}"
            ));
        }
        let version = r.u32().map_err(|e| e.to_string())?;
        if version != SNAPSHOT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this build reads {SNAPSHOT_VERSION})"
            ));
        }
        let count = r.u64().map_err(|e| e.to_string())?;
        // Every entry takes at least 8 bytes: reject absurd counts before looping.
        if count.saturating_mul(8) > r.remaining() as u64 {
            return Err(format!(
                "entry count {count} cannot fit in the remaining {} bytes",
                r.remaining()
            ));
        }
        let mut map = BTreeMap::new();
        let mut prev: Option<Bytes> = None;
        for i in 0..count {
            let key = get_field(&mut r).map_err(|e| format!("entry {i}: {e}"))?;
            let value = get_field(&mut r).map_err(|e| format!("entry {i}: {e}"))?;
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(format!(
                    "entry {i}: keys are not in strictly ascending order"
                ));
            }
            prev = Some(key.clone());
            map.insert(key, value);
        }
        r.finish().map_err(|e| e.to_string())?;
        Ok(map)
    }
}

#[async_trait]
impl StateMachine for KvStateMachine {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        Ok(Self::apply_to(&mut self.write(), &command.data))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        Ok(self.apply_batch(commands))
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        let KvQuery::Get { key } =
            KvQuery::decode(query).map_err(|e| CommandError(e.to_string()))?;
        Ok(KvResponse::Value(self.get(&key)).encode())
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        let state = self.read().clone();
        state
            .write_snapshot(out)
            .map_err(|e| StorageError::io("writing kv snapshot", e).into())
    }

    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        Some(Box::new(KvView(self.read().clone())))
    }

    async fn restore(
        &self,
        _last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| StorageError::io("reading kv snapshot", e))?;
        self.restore_bytes(&data)
    }
}

#[cfg(test)]
mod tests;
