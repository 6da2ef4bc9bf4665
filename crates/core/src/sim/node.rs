//! One simulated node process: the protocol instance, its disk, its state machine, and the
//! bookkeeping of requests it is serving.

use std::collections::BTreeMap;

use super::disk::SimDisk;
use super::kv::KvState;
use crate::config::RaftConfig;
use crate::raft::{InitError, InitialState, Raft};
use crate::types::{NodeId, RequestId, SnapshotMeta};

/// Who is waiting for a request a node serves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Waiter {
    /// A client attempt; reads carry their key.
    Client {
        client: usize,
        attempt: u64,
        read_key: Option<u64>,
    },
    /// The nemesis' operator (membership change, transfer).
    Operator,
    /// The final liveness write.
    Liveness,
}

pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    /// `None` while crashed.
    pub(crate) raft: Option<Raft>,
    pub(crate) disk: SimDisk,
    pub(crate) kv: KvState,
    /// Bumped at every crash so stale timers are ignored.
    pub(crate) generation: u64,
    pub(crate) sync_scheduled: bool,
    pub(crate) fail_next_sync: bool,
    pub(crate) paused_until: u64,
    pub(crate) missed_ticks: u64,
    /// Tick length in microseconds (nodes' clocks drift slightly apart).
    pub(crate) tick_micros: u64,
    pub(crate) waiters: BTreeMap<RequestId, Waiter>,
    pub(crate) next_request: RequestId,
    /// Snapshot data that arrived with the last InstallSnapshot message.
    pub(crate) incoming_snapshot: Option<(SnapshotMeta, KvState)>,
}

impl SimNode {
    pub(crate) fn new(id: NodeId, disk: SimDisk, tick_micros: u64) -> Self {
        Self {
            id,
            raft: None,
            disk,
            kv: KvState::default(),
            generation: 0,
            sync_scheduled: false,
            fail_next_sync: false,
            paused_until: 0,
            missed_ticks: 0,
            tick_micros,
            waiters: BTreeMap::new(),
            next_request: 1,
            incoming_snapshot: None,
        }
    }

    /// Starts (or restarts) the process from its durable state only.
    pub(crate) fn boot(&mut self, template: &RaftConfig, seed: u64) -> Result<(), InitError> {
        let (meta, state) = self.disk.snapshot.clone().unwrap_or_default();
        let init = InitialState {
            hard_state: self.disk.hard_state,
            applied: meta.last_log_id.index,
            snapshot: meta,
            log_offset: self.disk.log.offset,
            entries: self.disk.log.entries.clone(),
        };
        let cfg = RaftConfig {
            id: self.id,
            ..template.clone()
        };
        self.generation += 1;
        self.raft = Some(Raft::new(cfg, init, seed.wrapping_add(self.generation))?);
        self.kv = state;
        self.sync_scheduled = false;
        self.fail_next_sync = false;
        self.paused_until = 0;
        self.missed_ticks = 0;
        self.waiters.clear();
        self.incoming_snapshot = None;
        Ok(())
    }

    pub(crate) fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    pub(crate) fn register(&mut self, waiter: Waiter) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.waiters.insert(id, waiter);
        id
    }
}
