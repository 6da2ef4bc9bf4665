//! The storage a simulated node runs on, and what a crash does to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::rng::Rng;
use crate::storage::{LogStore, MemDisk, MemSnapshotStore, SnapshotStore};
use crate::types::{LogId, NodeId};

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

/// The log and snapshot stores of every simulated node, across restarts.
pub trait SimStorage: Send + Sync + 'static {
    /// Opens node `id`'s stores as a (re)started process finds them.
    fn open(&self, id: NodeId) -> Result<(Box<dyn LogStore>, Arc<dyn SnapshotStore>), String>;

    /// Node `id`'s process died this way (after its tasks stopped).
    fn crash(&self, id: NodeId, how: Crash, rng: &mut Rng);

    /// The next sync of node `id`'s log fails (fail-stop).
    fn fail_next_sync(&self, id: NodeId);

    /// Flips one bit of data node `id` already synced, if the storage models that; the
    /// returned text names where. The next start of the node must report corruption, never
    /// silently lose the data: [`SimStorage::repair`] undoes the flip afterwards.
    fn flip_synced_bit(&self, _id: NodeId, _rng: &mut Rng) -> Option<String> {
        None
    }

    /// Undoes the flip [`SimStorage::flip_synced_bit`] made on node `id`.
    fn repair(&self, _id: NodeId) {}

    /// Whether entry `entry` is durable on node `id` (in its log, or under its durable
    /// snapshot); `None` if the storage cannot tell. Lets the simulator check that every
    /// committed entry is durable on a majority.
    fn durably_holds(&self, _id: NodeId, _entry: LogId) -> Option<bool> {
        None
    }

    /// True if [`SimStorage::durably_holds`] and [`SimStorage::durable_term`] answer.
    fn models_durability(&self) -> bool {
        false
    }

    /// The term of the entry durable at `index` on node `id` (0 if a durable snapshot
    /// covers it), if the storage can tell.
    fn durable_term(&self, _id: NodeId, _index: u64) -> Option<u64> {
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
    fn open(&self, id: NodeId) -> Result<(Box<dyn LogStore>, Arc<dyn SnapshotStore>), String> {
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

    fn durably_holds(&self, id: NodeId, entry: LogId) -> Option<bool> {
        let nodes = self.nodes.lock().ok()?;
        Some(nodes.get(&id).is_some_and(|n| n.disk.durably_holds(entry)))
    }

    fn models_durability(&self) -> bool {
        true
    }

    fn durable_term(&self, id: NodeId, index: u64) -> Option<u64> {
        self.nodes.lock().ok()?.get(&id)?.disk.durable_term(index)
    }

    fn fail_next_sync(&self, id: NodeId) {
        if let Ok(nodes) = self.nodes.lock() {
            if let Some(switch) = nodes.get(&id).and_then(|n| n.fail_sync.clone()) {
                if let Ok(mut s) = switch.lock() {
                    *s = true;
                }
            }
        }
    }
}
