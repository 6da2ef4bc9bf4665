//! The runtime's cluster scenarios on sled storage: every node keeps its log in a
//! `SledLogStore` and its snapshots in a `FileSnapshotStore`, under a temporary directory.

use std::sync::Arc;

use lockstep_core::runtime::cluster::{ClusterStorage, NodeStorage};
use lockstep_core::{NodeId, StorageError};
use lockstep_storage_file::FileSnapshotStore;
use lockstep_storage_sled::SledLogStore;

struct SledStorage {
    dir: tempfile::TempDir,
}

impl ClusterStorage for SledStorage {
    fn open(&self, id: NodeId) -> Result<NodeStorage, StorageError> {
        let base = self.dir.path().join(format!("n{id}"));
        let log = SledLogStore::open(base.join("log"))?;
        let snaps = FileSnapshotStore::open(base.join("snapshots"))?;
        Ok((Box::new(log), Arc::new(snaps)))
    }
}

fn storage() -> Arc<SledStorage> {
    Arc::new(SledStorage {
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

lockstep_core::cluster_scenarios!(storage());
