//! The storage a simulated node runs on, and what a crash does to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::rng::Rng;
use crate::storage::{LogStore, MemDisk, MemSnapshotStore, SnapshotStore};
use crate::types::{HardState, LogId, NodeId};

/// How a simulated node's process died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The process was killed (`SIGKILL`): the OS page cache survives, so data written but
    /// not fsynced may still be read at the next start; only a later power loss drops it.
    Process,
    /// The machine lost power: everything not fsynced is gone (file data and directory
    /// entries alike); with `torn`, a prefix of the unsynced writes survives, the last one
    /// possibly cut short.
    PowerLoss {
        /// Tear the tail.
        torn: bool,
    },
}

/// What a node holds durably at one index ([`SimStorage::durable_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// An entry of this term.
    Entry(u64),
    /// The index is covered by a durable snapshot.
    Snapshot,
    /// Nothing.
    Nothing,
}

impl Held {
    /// What a durable log with this snapshot and these entries holds at `index`.
    pub fn in_log(snapshot: Option<LogId>, entries: &[LogId], index: u64) -> Held {
        if snapshot.is_some_and(|s| s.index >= index) {
            return Held::Snapshot;
        }
        match entries.iter().find(|e| e.index == index) {
            Some(e) => Held::Entry(e.term),
            None => Held::Nothing,
        }
    }
}

/// A node's log store and snapshot store, as one start opens them.
pub type Stores = (Box<dyn LogStore>, Arc<dyn SnapshotStore>);

/// The log and snapshot stores of every simulated node, across restarts.
pub trait SimStorage: Send + Sync + 'static {
    /// Opens node `id`'s stores as a (re)started process finds them.
    fn open(&self, id: NodeId) -> Result<Stores, String>;

    /// Node `id`'s process died this way (after its tasks stopped).
    fn crash(&self, id: NodeId, how: Crash, rng: &mut Rng);

    /// One of the next syncs of node `id`'s storage fails (fail-stop).
    fn fail_next_sync(&self, id: NodeId, rng: &mut Rng);

    /// Flips one bit of data node `id` already synced, if the storage models that; the
    /// returned text names where. The next start of the node must report corruption, never
    /// silently lose the data: [`SimStorage::repair`] undoes the flip afterwards.
    fn flip_synced_bit(&self, _id: NodeId, _rng: &mut Rng) -> Option<String> {
        None
    }

    /// Undoes the flip [`SimStorage::flip_synced_bit`] made on node `id`.
    fn repair(&self, _id: NodeId) {}

    /// What node `id` holds durably at `index` (what a power loss now would leave);
    /// `None` if the storage cannot tell. Lets the simulator check that every committed
    /// entry is durable on a majority.
    fn durable_at(&self, _id: NodeId, _index: u64) -> Option<Held> {
        None
    }

    /// The term and vote node `id` holds durably (what a power loss now would leave);
    /// `None` if the storage cannot tell. Lets the simulator check that a granted vote is on
    /// disk before the candidate hears of it (§5.2, Figure 2: persistent state).
    fn durable_hard_state(&self, _id: NodeId) -> Option<HardState> {
        None
    }
}

/// In-memory stores: the log on a [`MemDisk`] (a crash keeps exactly what was synced), the
/// snapshots in a [`MemSnapshotStore`] (committed atomically and durably).
#[derive(Default)]
pub struct MemStorage {
    nodes: Mutex<BTreeMap<NodeId, MemNode>>,
}

#[derive(Clone)]
struct MemNode {
    disk: MemDisk,
    snapshots: MemSnapshotStore,
    /// The running incarnation's sync-failure switch.
    fail_sync: Option<Arc<Mutex<bool>>>,
}

impl SimStorage for MemStorage {
    fn open(&self, id: NodeId) -> Result<Stores, String> {
        let mut nodes = self.nodes.lock().map_err(|_| "storage lock poisoned")?;
        let n = nodes.entry(id).or_insert_with(|| MemNode {
            disk: MemDisk::new(),
            snapshots: MemSnapshotStore::new(),
            fail_sync: None,
        });
        let log = n.disk.open();
        n.fail_sync = Some(log.sync_failure_switch());
        Ok((Box::new(log), Arc::new(n.snapshots.clone())))
    }

    fn crash(&self, _id: NodeId, _how: Crash, _rng: &mut Rng) {
        // A MemDisk keeps exactly what was synced, whatever the kind of crash.
    }

    fn durable_at(&self, id: NodeId, index: u64) -> Option<Held> {
        let nodes = self.nodes.lock().ok()?;
        let Some(n) = nodes.get(&id) else {
            return Some(Held::Nothing);
        };
        Some(n.disk.durable_at(index))
    }

    fn durable_hard_state(&self, id: NodeId) -> Option<HardState> {
        let nodes = self.nodes.lock().ok()?;
        Some(
            nodes
                .get(&id)
                .map_or(HardState::default(), |n| n.disk.durable_hard_state()),
        )
    }

    fn fail_next_sync(&self, id: NodeId, _rng: &mut Rng) {
        if let Ok(nodes) = self.nodes.lock() {
            if let Some(switch) = nodes.get(&id).and_then(|n| n.fail_sync.clone()) {
                if let Ok(mut s) = switch.lock() {
                    *s = true;
                }
            }
        }
    }
}
