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
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::{BufMut, Bytes};

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

/// Shards of a [`KvStateMachine`]'s map. More shards make the copy a write pays during a
/// snapshot smaller, but spread writes over more cold tree nodes: 256 cost about 9% of
/// the cluster benchmark's write throughput, 16 nothing measurable.
const SHARDS: usize = 16;

/// The map, split by a hash of the key into sorted shards shared copy-on-write: cloning it
/// (for a snapshot) copies 16 pointers, and a write copies only the shard it changes, and
/// only while a snapshot still holds that shard.
#[derive(Clone, Debug)]
struct Shards(Vec<Arc<BTreeMap<Bytes, Bytes>>>);

impl Default for Shards {
    fn default() -> Self {
        Self(vec![Arc::default(); SHARDS])
    }
}

impl Shards {
    fn shard(key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % SHARDS
    }

    fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.0[Self::shard(key)].get(key)
    }

    fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        Arc::make_mut(&mut self.0[Self::shard(&key)]).insert(key, value)
    }

    fn remove(&mut self, key: &[u8]) -> Option<Bytes> {
        let shard = &mut self.0[Self::shard(key)];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).remove(key)
    }

    fn len(&self) -> usize {
        self.0.iter().map(|s| s.len()).sum()
    }

    fn from_map(map: BTreeMap<Bytes, Bytes>) -> Self {
        let mut s = Self::default();
        for (k, v) in map {
            s.insert(k, v);
        }
        s
    }

    /// Every entry in ascending key order (a merge of the shards; keys are in one shard
    /// each).
    fn sorted(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        let mut iters: Vec<_> = self.0.iter().map(|s| s.iter()).collect();
        let mut heap = std::collections::BinaryHeap::new();
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some((k, v)) = it.next() {
                heap.push(std::cmp::Reverse((k, i, v)));
            }
        }
        std::iter::from_fn(move || {
            let std::cmp::Reverse((k, i, v)) = heap.pop()?;
            if let Some((k2, v2)) = iters[i].next() {
                heap.push(std::cmp::Reverse((k2, i, v2)));
            }
            Some((k, v))
        })
    }

    /// Writes the snapshot (format on [`KvStateMachine`]) in pieces of about 64 KiB,
    /// checksummed as it goes.
    fn write_snapshot(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        const PIECE: usize = 64 << 10;
        let mut buf = Vec::with_capacity(PIECE + 64);
        buf.put_slice(SNAPSHOT_MAGIC);
        buf.put_u32_le(SNAPSHOT_VERSION);
        buf.put_u64_le(self.len() as u64);
        let mut crc = 0u32;
        for (k, v) in self.sorted() {
            put_field(&mut buf, k);
            put_field(&mut buf, v);
            if buf.len() >= PIECE {
                crc = crc32c::crc32c_append(crc, &buf);
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        crc = crc32c::crc32c_append(crc, &buf);
        buf.put_u32_le(crc);
        out.write_all(&buf)?;
        out.flush()
    }
}

/// A [`KvStateMachine`]'s state at one moment, for a snapshot written later.
struct KvView(Shards);

impl SnapshotView for KvView {
    fn write_to(self: Box<Self>, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.0
            .write_snapshot(out)
            .map_err(|e| StorageError::io("writing kv snapshot", e).into())
    }
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
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn cmd(i: u64, c: &KvCommand) -> Command {
        Command {
            log_id: LogId::new(1, i),
            session: None,
            data: c.encode(),
        }
    }

    fn put(k: &str, v: &str) -> KvCommand {
        KvCommand::Put {
            key: b(k),
            value: b(v),
        }
    }

    async fn run(sm: &KvStateMachine, c: KvCommand) -> KvResponse {
        let out = sm.apply(&cmd(1, &c)).await.unwrap().unwrap();
        KvResponse::decode(&out).unwrap()
    }

    fn get(sm: &KvStateMachine, k: &str) -> KvResponse {
        let out = sm.query(&KvQuery::Get { key: b(k) }.encode()).unwrap();
        KvResponse::decode(&out).unwrap()
    }

    async fn snapshot_of(sm: &KvStateMachine) -> Vec<u8> {
        let mut out = Vec::new();
        sm.snapshot(&mut out).await.unwrap();
        out
    }

    fn messages() -> (Vec<KvCommand>, Vec<KvQuery>, Vec<KvResponse>) {
        (
            vec![
                put("k", "v"),
                put("", ""),
                KvCommand::Delete { key: b("k") },
                KvCommand::Cas {
                    key: b("k"),
                    expected: None,
                    new: Some(b("x")),
                },
                KvCommand::Cas {
                    key: b("k"),
                    expected: Some(b("x")),
                    new: None,
                },
            ],
            vec![KvQuery::Get { key: b("key") }, KvQuery::Get { key: b("") }],
            vec![
                KvResponse::Value(None),
                KvResponse::Value(Some(b("v"))),
                KvResponse::Cas {
                    succeeded: true,
                    current: None,
                },
                KvResponse::Cas {
                    succeeded: false,
                    current: Some(b("zz")),
                },
            ],
        )
    }

    #[test]
    fn kv_messages_round_trip() {
        let (cmds, queries, resps) = messages();
        for c in cmds {
            assert_eq!(KvCommand::decode(&c.encode()).unwrap(), c);
        }
        for q in queries {
            assert_eq!(KvQuery::decode(&q.encode()).unwrap(), q);
        }
        for r in resps {
            assert_eq!(KvResponse::decode(&r.encode()).unwrap(), r);
        }
    }

    fn assert_rejects_damage(bytes: &[u8], fails: impl Fn(&[u8]) -> bool) {
        for cut in 0..bytes.len() {
            assert!(fails(&bytes[..cut]), "cut at {cut} of {bytes:?}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(fails(&longer), "trailing byte after {bytes:?}");
    }

    #[test]
    fn kv_every_truncation_and_extension_is_an_error_not_a_panic() {
        let (cmds, queries, resps) = messages();
        for c in cmds {
            assert_rejects_damage(&c.encode(), |x| KvCommand::decode(x).is_err());
        }
        for q in queries {
            assert_rejects_damage(&q.encode(), |x| KvQuery::decode(x).is_err());
        }
        for r in resps {
            assert_rejects_damage(&r.encode(), |x| KvResponse::decode(x).is_err());
        }
    }

    #[test]
    fn kv_bad_tags_and_flags_are_named_in_the_error() {
        let e = KvCommand::decode(&[9]).unwrap_err();
        assert!(e.to_string().contains("unknown tag 0x09"), "{e}");
        // A command is not a query and vice versa.
        let e = KvQuery::decode(&put("a", "b").encode()).unwrap_err();
        assert!(e.to_string().contains("kv query"), "{e}");
        assert!(KvCommand::decode(&KvQuery::Get { key: b("a") }.encode()).is_err());
        // Cas with a presence byte of 2.
        let mut bad = vec![TAG_CAS];
        put_field(&mut bad, b"k");
        bad.push(2);
        let e = KvCommand::decode(&bad).unwrap_err();
        assert!(e.detail.contains("presence byte 2"), "{e}");
        let e = KvResponse::decode(&[TAG_CAS_RESULT, 7, 0]).unwrap_err();
        assert!(e.detail.contains("flag byte 7"), "{e}");
        // A length prefix far beyond the input.
        let e = KvCommand::decode(&[TAG_DELETE, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.detail.contains("remain"), "{e}");
    }

    #[tokio::test]
    async fn kv_put_delete_and_get_return_previous_and_current_values() {
        let sm = KvStateMachine::new();
        assert!(sm.is_empty());
        assert_eq!(run(&sm, put("a", "1")).await, KvResponse::Value(None));
        assert_eq!(
            run(&sm, put("a", "2")).await,
            KvResponse::Value(Some(b("1")))
        );
        assert_eq!(get(&sm, "a"), KvResponse::Value(Some(b("2"))));
        assert_eq!(sm.get(b"a"), Some(b("2")));
        assert_eq!(sm.len(), 1);
        assert_eq!(
            run(&sm, KvCommand::Delete { key: b("a") }).await,
            KvResponse::Value(Some(b("2")))
        );
        assert_eq!(
            run(&sm, KvCommand::Delete { key: b("a") }).await,
            KvResponse::Value(None)
        );
        assert_eq!(get(&sm, "a"), KvResponse::Value(None));
        assert!(sm.is_empty());
    }

    #[tokio::test]
    async fn kv_cas_swaps_only_on_a_match() {
        let sm = KvStateMachine::new();
        let cas = |expected: Option<&str>, new: Option<&str>| KvCommand::Cas {
            key: b("k"),
            expected: expected.map(b),
            new: new.map(b),
        };
        // Create-if-absent.
        assert_eq!(
            run(&sm, cas(None, Some("1"))).await,
            KvResponse::Cas {
                succeeded: true,
                current: Some(b("1"))
            }
        );
        // Absent expected, but present: fails and reports the current value.
        assert_eq!(
            run(&sm, cas(None, Some("9"))).await,
            KvResponse::Cas {
                succeeded: false,
                current: Some(b("1"))
            }
        );
        // Wrong expected value.
        assert_eq!(
            run(&sm, cas(Some("0"), Some("9"))).await,
            KvResponse::Cas {
                succeeded: false,
                current: Some(b("1"))
            }
        );
        assert_eq!(sm.get(b"k"), Some(b("1")));
        // Matching swap, then matching delete.
        assert_eq!(
            run(&sm, cas(Some("1"), Some("2"))).await,
            KvResponse::Cas {
                succeeded: true,
                current: Some(b("2"))
            }
        );
        assert_eq!(
            run(&sm, cas(Some("2"), None)).await,
            KvResponse::Cas {
                succeeded: true,
                current: None
            }
        );
        assert!(sm.is_empty());
        // Expected value on an absent key.
        assert_eq!(
            run(&sm, cas(Some("2"), Some("3"))).await,
            KvResponse::Cas {
                succeeded: false,
                current: None
            }
        );
        assert!(sm.is_empty());
    }

    #[tokio::test]
    async fn kv_malformed_commands_and_queries_are_deterministic_rejections() {
        let sm = KvStateMachine::new();
        for data in [&b""[..], &[0xff], &[TAG_PUT, 1, 0, 0, 0]] {
            let c = Command {
                log_id: LogId::new(1, 1),
                session: None,
                data: Bytes::copy_from_slice(data),
            };
            let err = sm.apply(&c).await.unwrap().unwrap_err();
            assert!(err.0.contains("kv command"), "{err}");
        }
        assert!(sm.query(b"").unwrap_err().0.contains("kv query"));
        assert!(sm.query(&put("a", "b").encode()).is_err());
        assert!(sm.is_empty());
    }

    #[tokio::test]
    async fn kv_apply_chunk_equals_one_by_one() {
        let cmds: Vec<Command> = (0..50u64)
            .map(|i| {
                let c = match i % 4 {
                    0 | 1 => put(&format!("k{}", i % 7), &format!("v{i}")),
                    2 => KvCommand::Delete {
                        key: b(&format!("k{}", i % 5)),
                    },
                    _ => KvCommand::Cas {
                        key: b(&format!("k{}", i % 7)),
                        expected: None,
                        new: Some(b("c")),
                    },
                };
                cmd(i + 1, &c)
            })
            .chain(std::iter::once(Command {
                log_id: LogId::new(1, 51),
                session: None,
                data: Bytes::from_static(b"garbage"),
            }))
            .collect();
        let a = KvStateMachine::new();
        let one: Vec<_> = {
            let mut v = Vec::new();
            for c in &cmds {
                v.push(a.apply(c).await.unwrap());
            }
            v
        };
        let b2 = KvStateMachine::new();
        let batch = b2.apply_chunk(&cmds).await.unwrap();
        assert_eq!(one, batch);
        assert_eq!(snapshot_of(&a).await, snapshot_of(&b2).await);
    }

    #[tokio::test]
    async fn kv_snapshot_round_trips_and_is_deterministic() {
        let a = KvStateMachine::new();
        // Insert in descending order; the snapshot is ordered anyway.
        for i in (0..20u64).rev() {
            run(&a, put(&format!("key{i:02}"), &format!("value{i}"))).await;
        }
        let snap = snapshot_of(&a).await;
        assert_eq!(&snap[..4], SNAPSHOT_MAGIC);
        let b2 = KvStateMachine::new();
        run(&b2, put("other", "x")).await;
        b2.restore(LogId::new(1, 20), &mut &snap[..]).await.unwrap();
        assert_eq!(b2.len(), 20);
        assert_eq!(b2.get(b"other"), None);
        assert_eq!(b2.get(b"key07"), Some(b("value7")));
        assert_eq!(snapshot_of(&b2).await, snap);
    }

    #[tokio::test]
    async fn kv_empty_input_restores_the_empty_state() {
        let sm = KvStateMachine::new();
        run(&sm, put("a", "1")).await;
        sm.restore(LogId::default(), &mut &b""[..]).await.unwrap();
        assert!(sm.is_empty());
        // The snapshot of an empty machine restores too.
        let empty = snapshot_of(&KvStateMachine::new()).await;
        run(&sm, put("a", "1")).await;
        sm.restore(LogId::default(), &mut &empty[..]).await.unwrap();
        assert!(sm.is_empty());
    }

    #[tokio::test]
    async fn kv_corrupt_snapshots_are_rejected_and_the_old_state_kept() {
        let src = KvStateMachine::new();
        for i in 0..5u64 {
            run(&src, put(&format!("k{i}"), "v")).await;
        }
        let snap = snapshot_of(&src).await;
        let target = KvStateMachine::new();
        run(&target, put("mine", "1")).await;
        let before = snapshot_of(&target).await;

        let mut bad: Vec<Vec<u8>> = Vec::new();
        for cut in 1..snap.len() {
            bad.push(snap[..cut].to_vec());
        }
        for pos in 0..snap.len() {
            let mut s = snap.clone();
            s[pos] ^= 0x40;
            bad.push(s);
        }
        let mut longer = snap.clone();
        longer.push(0);
        bad.push(longer);
        for s in &bad {
            let err = target
                .restore(LogId::new(1, 5), &mut &s[..])
                .await
                .unwrap_err();
            assert!(
                matches!(err, StateMachineError::InvalidSnapshot(_)),
                "{err}"
            );
            assert_eq!(snapshot_of(&target).await, before);
        }
    }

    /// Builds a snapshot with a valid checksum around an arbitrary body.
    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.put_u32_le(crc32c::crc32c(body));
        v
    }

    #[test]
    fn kv_well_checksummed_but_invalid_snapshots_are_rejected() {
        let header = |magic: &[u8; 4], version: u32, count: u64| {
            let mut v = Vec::new();
            v.put_slice(magic);
            v.put_u32_le(version);
            v.put_u64_le(count);
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with_crc(&header(b"NOPE", 1, 0)), "bad magic"),
            (with_crc(&header(SNAPSHOT_MAGIC, 2, 0)), "version 2"),
            (
                with_crc(&header(SNAPSHOT_MAGIC, 1, u64::MAX)),
                "entry count",
            ),
            (
                {
                    let mut v = header(SNAPSHOT_MAGIC, 1, 2);
                    for k in ["b", "a"] {
                        put_field(&mut v, k.as_bytes());
                        put_field(&mut v, b"v");
                    }
                    with_crc(&v)
                },
                "ascending",
            ),
            (
                {
                    let mut v = header(SNAPSHOT_MAGIC, 1, 2);
                    for k in ["a", "a"] {
                        put_field(&mut v, k.as_bytes());
                        put_field(&mut v, b"v");
                    }
                    with_crc(&v)
                },
                "ascending",
            ),
            (
                {
                    let mut v = header(SNAPSHOT_MAGIC, 1, 0);
                    v.push(0);
                    with_crc(&v)
                },
                "trailing",
            ),
        ];
        for (snap, expected) in cases {
            let err = KvStateMachine::decode_snapshot(&snap).unwrap_err();
            assert!(err.contains(expected), "{err} (expected {expected})");
        }
    }

    #[tokio::test]
    async fn kv_a_snapshot_view_keeps_the_state_of_its_moment_while_writes_go_on() {
        let sm = KvStateMachine::new();
        let put = |i: u64| {
            cmd(
                i,
                &KvCommand::Put {
                    key: Bytes::from(format!("k{i:05}")),
                    value: Bytes::from(format!("v{i}")),
                },
            )
        };
        let first: Vec<Command> = (1..=2000).map(put).collect();
        sm.apply_chunk(&first).await.unwrap();
        let then = snapshot_of(&sm).await;
        let view = sm.snapshot_view().expect("the KV has point-in-time views");
        // Writes after the view: new keys, overwrites, deletes.
        let later: Vec<Command> = (1500..=3000).map(put).collect();
        sm.apply_chunk(&later).await.unwrap();
        let del = cmd(
            4000,
            &KvCommand::Delete {
                key: Bytes::from("k00007"),
            },
        );
        sm.apply_chunk(std::slice::from_ref(&del)).await.unwrap();
        let mut out = Vec::new();
        view.write_to(&mut out).unwrap();
        assert_eq!(out, then, "the view is the state when it was taken");
        let restored = KvStateMachine::new();
        restored.restore_bytes(&out).unwrap();
        assert_eq!(restored.len(), 2000);
        assert_eq!(restored.get(b"k00007"), Some(Bytes::from("v7")));
        assert_eq!(sm.len(), 2999);
        assert_eq!(sm.get(b"k00007"), None);
    }
}
