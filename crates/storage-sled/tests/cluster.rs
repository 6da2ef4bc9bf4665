//! The runtime's cluster scenarios on sled storage: every node keeps its log in a
//! `SledLogStore` and its snapshots in a `FileSnapshotStore`, under a temporary directory.

use std::sync::Arc;

use lockstep_core::runtime::cluster::{ClusterStorage, NodeStorage};
use lockstep_core::testing::cluster_suite as suite;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_replicates_in_order_5_3() {
    suite::replicate_in_order(storage()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_leader_crash_mid_load_loses_no_acknowledged_write_5_4() {
    suite::leader_crash_mid_load(storage()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_learner_catches_up_through_a_snapshot_7() {
    suite::learner_catches_up_by_snapshot(storage())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_joint_consensus_change_thesis_4_3() {
    suite::joint_consensus_change(storage()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_leader_transfer_under_load_thesis_3_10() {
    suite::leader_transfer_under_load(storage()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_partitioned_leader_serves_no_stale_reads_thesis_6_4() {
    suite::partitioned_leader_reads(storage()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_cluster_full_restart_keeps_every_write_5_3() {
    suite::full_restart_keeps_every_write(storage())
        .await
        .unwrap();
}
