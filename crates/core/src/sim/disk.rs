//! Simulated stable storage for one node: what is durable, and the writes queued since the
//! last fsync. A crash keeps the durable state plus a random prefix of the queued writes
//! (possibly tearing the last append); a failed fsync stops the node.

use super::kv::KvState;
use crate::rng::Rng;
use crate::types::{Entry, HardState, LogId, SnapshotMeta};

/// A queued, not yet synced write.
#[derive(Clone, Debug)]
enum Write {
    Truncate(u64),
    Append(Vec<Entry>),
}

/// The durable log of a node.
#[derive(Clone, Debug, Default)]
pub struct DurableLog {
    /// Entry before the first stored one.
    pub offset: LogId,
    /// Stored entries.
    pub entries: Vec<Entry>,
}

impl DurableLog {
    fn apply(&mut self, w: &Write) {
        match w {
            Write::Truncate(from) => {
                let keep = from.saturating_sub(self.offset.index + 1) as usize;
                self.entries.truncate(keep);
            }
            Write::Append(es) => self.entries.extend(es.iter().cloned()),
        }
    }

    /// Last stored entry id.
    pub fn last(&self) -> LogId {
        self.entries.last().map_or(self.offset, |e| e.log_id)
    }

    /// The stored entry at `index`.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset.index {
            return None;
        }
        self.entries.get((index - self.offset.index - 1) as usize)
    }

    fn purge(&mut self, up_to: LogId) {
        if up_to.index <= self.offset.index {
            return;
        }
        let n = ((up_to.index - self.offset.index) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.offset = up_to;
    }
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    /// Durable hard state.
    pub hard_state: HardState,
    pending_hs: Option<HardState>,
    /// A hard state made durable but not yet reported to the protocol.
    unreported_hs: Option<HardState>,
    /// Durable log.
    pub log: DurableLog,
    pending: Vec<Write>,
    /// Number of the last log write queued (reported back with each sync).
    last_write: u64,
    /// Durable snapshot (written atomically).
    pub snapshot: Option<(SnapshotMeta, KvState)>,
}

impl SimDisk {
    /// A founding member's disk: the bootstrap entry is durable.
    pub fn bootstrapped(first: Entry) -> Self {
        Self {
            log: DurableLog {
                offset: LogId::default(),
                entries: vec![first],
            },
            ..Self::default()
        }
    }

    /// Queues a hard-state write.
    pub fn save_hard_state(&mut self, hs: HardState) {
        self.pending_hs = Some(hs);
    }

    /// Queues a truncation (log write number `write`).
    pub fn truncate(&mut self, from: u64, write: u64) {
        self.pending.push(Write::Truncate(from));
        self.last_write = write;
    }

    /// Queues an append (log write number `write`).
    pub fn append(&mut self, entries: Vec<Entry>, write: u64) {
        self.pending.push(Write::Append(entries));
        self.last_write = write;
    }

    /// True if writes are waiting for a sync.
    pub fn dirty(&self) -> bool {
        self.pending_hs.is_some() || !self.pending.is_empty()
    }

    /// fsync: everything queued becomes durable. Returns the hard state made durable since
    /// the last report, the last durable log id and the number of the last log write.
    pub fn sync(&mut self) -> (Option<HardState>, LogId, u64) {
        self.flush();
        (self.unreported_hs.take(), self.log.last(), self.last_write)
    }

    /// Makes everything queued durable without reporting it (the next `sync` reports).
    fn flush(&mut self) {
        for w in std::mem::take(&mut self.pending) {
            self.log.apply(&w);
        }
        if let Some(h) = self.pending_hs.take() {
            self.hard_state = h;
            self.unreported_hs = Some(h);
        }
    }

    /// Purges durable entries behind a durable snapshot (crash-safe either way).
    pub fn purge(&mut self, up_to: LogId) {
        self.log.purge(up_to);
    }

    /// Stores a snapshot and resets or purges the log, durably: queued writes are flushed
    /// first (as a runtime's install fsyncs), and reported by the next `sync`.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta, state: KvState, reset_log: bool) {
        self.flush();
        let id = meta.last_log_id;
        if reset_log {
            self.log = DurableLog {
                offset: id,
                entries: Vec::new(),
            };
        } else {
            self.log.purge(id);
        }
        self.snapshot = Some((meta, state));
    }

    /// Stores a locally built snapshot.
    pub fn store_snapshot(&mut self, meta: SnapshotMeta, state: KvState) {
        self.snapshot = Some((meta, state));
    }

    /// A crash: a random prefix of the queued writes reaches the disk, the last one possibly
    /// torn (a prefix of its entries); the queued hard state survives or not (atomic rename).
    pub fn crash(&mut self, rng: &mut Rng, torn_writes: bool) {
        self.last_write = 0;
        let pending = std::mem::take(&mut self.pending);
        if torn_writes && !pending.is_empty() {
            let keep = rng.range(0, pending.len() as u64 + 1) as usize;
            for w in &pending[..keep] {
                self.log.apply(w);
            }
            if let Some(Write::Append(es)) = pending.get(keep) {
                let part = rng.range(0, es.len() as u64) as usize;
                self.log.apply(&Write::Append(es[..part].to_vec()));
            }
        }
        if let Some(hs) = self.pending_hs.take() {
            if torn_writes && rng.chance(0.5) {
                self.hard_state = hs;
            }
        }
    }

    /// True if `id` is durably stored (in the log or covered by the snapshot).
    pub fn holds(&self, id: LogId) -> bool {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|(m, _)| m.last_log_id.index >= id.index)
        {
            return true;
        }
        self.log.get(id.index).is_some_and(|e| e.log_id == id)
    }
}
