//! The file store's own code under lockstep's production simulator: every node's log and
//! snapshots live on a [`SimFs`], which loses what was not synced at a power loss, tears
//! tails, fails fsyncs and flips bits of synced data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lockstep_core::fs::{BitFlip, Fs, SimFs};
use lockstep_core::rng::Rng;
use lockstep_core::sim::production::{Crash, Held, SimStorage, Stores};
use lockstep_core::storage::LogStore;
use lockstep_core::types::{HardState, LogId, NodeId};

use crate::{FileLogStore, FileSnapshotStore};

/// One simulated disk per node, holding `/node-<id>/log` and `/node-<id>/snapshots`.
#[derive(Default)]
pub struct SimFileStorage {
    disks: Mutex<BTreeMap<NodeId, Disk>>,
}

struct Disk {
    fs: SimFs,
    flip: Option<BitFlip>,
}

impl SimFileStorage {
    /// Empty disks.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, id: NodeId, f: impl FnOnce(&mut Disk) -> T) -> T {
        let mut disks = self.disks.lock().unwrap_or_else(|p| p.into_inner());
        let d = disks.entry(id).or_insert_with(|| Disk {
            fs: SimFs::new(),
            flip: None,
        });
        f(d)
    }
}

fn root(id: NodeId) -> PathBuf {
    PathBuf::from(format!("/node-{id}"))
}

/// What a power loss now would leave of node `id`'s log, read by the store's own recovery
/// on a copy of the disk: the snapshot it names and the entries.
fn durable_entries(fs: &SimFs, id: NodeId) -> Result<(Option<LogId>, Vec<LogId>), String> {
    let copy = fs.durable_copy();
    let mut store =
        FileLogStore::open_in(Arc::new(copy), root(id).join("log")).map_err(|e| e.to_string())?;
    let stored = store.load().map_err(|e| e.to_string())?;
    let ids = stored.entries.iter().map(|e| e.log_id).collect();
    Ok((stored.snapshot.map(|m| m.last_log_id), ids))
}

impl SimStorage for SimFileStorage {
    fn open(&self, id: NodeId) -> Result<Stores, String> {
        // This incarnation's view: once the process dies, nothing of it touches the disk.
        let fs: Arc<dyn Fs> = Arc::new(self.with(id, |d| d.fs.process_view()));
        let log =
            FileLogStore::open_in(fs.clone(), root(id).join("log")).map_err(|e| e.to_string())?;
        let snaps = FileSnapshotStore::open_in(fs, root(id).join("snapshots"))
            .map_err(|e| e.to_string())?;
        Ok((Box::new(log), Arc::new(snaps)))
    }

    fn crash(&self, id: NodeId, how: Crash, rng: &mut Rng) {
        self.with(id, |d| {
            // A sync failure armed for the dead incarnation does not carry over.
            d.fs.fail_syncs(0);
            match how {
                Crash::Process => d.fs.kill_process(),
                Crash::PowerLoss { torn } => d.fs.crash(rng, torn),
            }
        });
    }

    fn fail_next_sync(&self, id: NodeId, rng: &mut Rng) {
        // Not always the very next one: a crash point anywhere in the next few syncs, so
        // that what the earlier ones made durable stays durable.
        let skip = rng.range(0, 4) as u32;
        self.with(id, |d| d.fs.fail_syncs_after(skip, 1));
    }

    fn flip_synced_bit(&self, id: NodeId, rng: &mut Rng) -> Option<String> {
        self.with(id, |d| {
            let before = durable_entries(&d.fs, id);
            for _ in 0..8 {
                let flip = d.fs.flip_bit(rng)?;
                if let (Ok((_, before)), Ok((_, after))) = (&before, durable_entries(&d.fs, id)) {
                    if after.len() + 1 == before.len() && before.starts_with(&after) {
                        // Damage to the very last record of the log reads as a torn tail
                        // (as in every WAL that does not sync a tail marker): a documented
                        // limitation, not simulated. Try another bit.
                        let _ = d.fs.unflip(&flip);
                        continue;
                    }
                }
                let at = format!(
                    "{} byte {} (mask {:#04x})",
                    flip.path.display(),
                    flip.offset,
                    flip.mask
                );
                d.flip = Some(flip);
                return Some(at);
            }
            None
        })
    }

    fn durable_at(&self, id: NodeId, index: u64) -> Option<Held> {
        let (snapshot, ids) = self.with(id, |d| durable_entries(&d.fs, id)).ok()?;
        Some(Held::in_log(snapshot, &ids, index))
    }

    fn durable_hard_state(&self, id: NodeId) -> Option<HardState> {
        self.with(id, |d| {
            let copy = d.fs.durable_copy();
            let mut store = FileLogStore::open_in(Arc::new(copy), root(id).join("log")).ok()?;
            store.load().ok().map(|s| s.hard_state)
        })
    }

    fn repair(&self, id: NodeId) {
        self.with(id, |d| {
            if let Some(f) = d.flip.take() {
                let _ = d.fs.unflip(&f);
            }
        });
    }
}
