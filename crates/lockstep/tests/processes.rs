//! Real node processes over gRPC on 127.0.0.1 (§5.4 leader completeness, durability before
//! acknowledgement): writes under load, SIGKILL of the leader, restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep::processes::{smoke, ProcessCluster};
use lockstep::ReadLevel;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_loses_no_acknowledged_write_across_three_processes() {
    let mut cluster =
        ProcessCluster::start(BIN, 3, "file", "[snapshot]\nevery_entries = 300\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u32 {
        let c = cluster.client().await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Acquire) && i < 20_000 {
                let (k, v) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                c.put(k.clone(), v.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{k}: {e}"));
                acked.insert(k, v);
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probe = cluster.client().await.unwrap();
    let leader = probe.status().await.unwrap().leader.expect("a leader");
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart(leader).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let commit = probe.status().await.unwrap().commit;
    for id in 1..=3 {
        cluster.wait_applied(id, commit).await.unwrap();
        let one = cluster.client_for(id).await.unwrap();
        for (k, v) in &acked {
            let got = one.get_at(k.clone(), ReadLevel::Eventual).await.unwrap();
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "node {id} key {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_smoke_scenario_passes_on_file_storage() {
    smoke(BIN, "file").await.unwrap();
}
