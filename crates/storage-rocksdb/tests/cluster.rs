//! The runtime's cluster scenarios on RocksDB storage: every node keeps its log in a
//! `RocksLogStore` and its snapshots in a `FileSnapshotStore` under a temporary directory.

use std::sync::Arc;

use lockstep_core::runtime::cluster::{ClusterStorage, NodeStorage};
use lockstep_core::{NodeId, StorageError};
use lockstep_storage_file::FileSnapshotStore;
use lockstep_storage_rocksdb::RocksLogStore;

struct RocksStorage {
    dir: tempfile::TempDir,
}

impl ClusterStorage for RocksStorage {
    fn open(&self, id: NodeId) -> Result<NodeStorage, StorageError> {
        let base = self.dir.path().join(format!("n{id}"));
        let log = RocksLogStore::open(base.join("log"))?;
        let snaps = FileSnapshotStore::open(base.join("snapshots"))?;
        Ok((Box::new(log), Arc::new(snaps)))
    }
}

fn storage() -> Arc<RocksStorage> {
    Arc::new(RocksStorage {
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

lockstep_core::cluster_scenarios!(storage());
