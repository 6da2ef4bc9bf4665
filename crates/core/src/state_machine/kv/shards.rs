//! The copy-on-write, sharded map behind [`super::KvStateMachine`] and its point-in-time
//! snapshot view.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use bytes::{BufMut, Bytes};

use super::{put_field, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::error::{StateMachineError, StorageError};
use crate::state_machine::SnapshotView;

/// Shards of a [`KvStateMachine`](super::KvStateMachine)'s map. More shards make the copy a write pays during a
/// snapshot smaller, but spread writes over more cold tree nodes: 256 cost about 9% of
/// the cluster benchmark's write throughput, 16 nothing measurable.
const SHARDS: usize = 16;

/// The map, split by a hash of the key into sorted shards shared copy-on-write: cloning it
/// (for a snapshot) copies 16 pointers, and a write copies only the shard it changes, and
/// only while a snapshot still holds that shard.
#[derive(Clone, Debug)]
pub(super) struct Shards(Vec<Arc<BTreeMap<Bytes, Bytes>>>);

impl Default for Shards {
    fn default() -> Self {
        Self(vec![Arc::default(); SHARDS])
    }
}

impl Shards {
    fn shard(key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % SHARDS
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.0[Self::shard(key)].get(key)
    }

    pub(super) fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        Arc::make_mut(&mut self.0[Self::shard(&key)]).insert(key, value)
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Bytes> {
        let shard = &mut self.0[Self::shard(key)];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).remove(key)
    }

    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|s| s.len()).sum()
    }

    pub(super) fn from_map(map: BTreeMap<Bytes, Bytes>) -> Self {
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

    /// Writes the snapshot (format on [`KvStateMachine`](super::KvStateMachine)) in pieces of about 64 KiB,
    /// checksummed as it goes.
    pub(super) fn write_snapshot(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
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

/// A [`KvStateMachine`](super::KvStateMachine)'s state at one moment, for a snapshot written later.
pub(super) struct KvView(pub(super) Shards);

impl SnapshotView for KvView {
    fn write_to(self: Box<Self>, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.0
            .write_snapshot(out)
            .map_err(|e| StorageError::io("writing kv snapshot", e).into())
    }
}
