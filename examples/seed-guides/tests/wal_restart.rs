//! The WAL-backed machine on a 3-node in-process cluster, restarted in the middle of the
//! log: it recovers from its own files, reports `last_applied`, and the node does not feed
//! it an entry it already holds. `INCR` is not idempotent, so an entry applied twice would
//! show in the count.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::{ClusterOptions, InProcessCluster, LogId};
use seed_guides::octopii::DurableStateMachine;

const T: Duration = Duration::from_secs(10);

type Cluster = InProcessCluster<DurableStateMachine>;

/// Every machine instance a node has had, oldest first.
#[derive(Default)]
struct Incarnations(BTreeMap<u64, Vec<Arc<DurableStateMachine>>>);

impl Incarnations {
    fn record(&mut self, cluster: &Cluster) {
        for id in cluster.ids() {
            let m = cluster.machine(id).expect("a member");
            let list = self.0.entry(id).or_default();
            if !list.iter().any(|x| Arc::ptr_eq(x, &m)) {
                list.push(m);
            }
        }
    }

    /// No entry was applied twice by the instances of one node, and none after a restart
    /// at or below what the restarted instance recovered.
    fn check_nothing_applied_twice(&self) {
        for (id, list) in &self.0 {
            let mut seen: BTreeMap<u64, LogId> = BTreeMap::new();
            for m in list {
                let opened = m.opened_at().map_or(0, |l| l.index);
                for at in m.executed() {
                    assert!(
                        at.index > opened,
                        "node {id}: entry {at} applied again after reopening at {opened}"
                    );
                    assert!(
                        seen.insert(at.index, at).is_none(),
                        "node {id}: entry {at} applied twice"
                    );
                }
            }
        }
    }
}

/// Proposes `INCR n` `n` times through whichever node leads. The session makes a retry
/// after a leader change safe (applied at most once), so any double application the
/// counts show would be the machine's.
async fn incr_n(cluster: &Cluster, sequence: &mut u64, n: u64) {
    for _ in 0..n {
        *sequence += 1;
        let session = ClientSession {
            client_id: 1,
            sequence: *sequence,
        };
        cluster.propose(session, &b"INCR n"[..], T).await.unwrap();
    }
}

async fn wait_for_counts(cluster: &Cluster, want: i64) {
    let deadline = tokio::time::Instant::now() + T;
    for id in cluster.ids() {
        loop {
            let got = cluster.machine(id).expect("a member").counter("n");
            if got == want {
                break;
            }
            assert!(
                got < want,
                "node {id} counts {got}: more than the {want} INCRs"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} counts {got}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn start_options(snapshot_every: u64) -> ClusterOptions {
    ClusterOptions {
        snapshot_every,
        ..ClusterOptions::default()
    }
}

async fn start(dir: PathBuf, snapshot_every: u64) -> Cluster {
    // The factory opens node `id`'s machine from its directory, again after each restart.
    InProcessCluster::start(
        [1, 2, 3],
        move |id| DurableStateMachine::open(dir.join(format!("n{id}"))).expect("opening the WAL"),
        start_options(snapshot_every),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_wal_machine_is_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    // No snapshot in this run: after a restart the node feeds the log from its start, and
    // skips what the machine already holds.
    let cluster = start(dir.path().to_path_buf(), 1_000_000).await;
    let mut seen = Incarnations::default();
    seen.record(&cluster);
    let mut seq = 0;

    incr_n(&cluster, &mut seq, 10).await;
    wait_for_counts(&cluster, 10).await;
    let follower = {
        let leader = cluster.wait_for_leader(T).await.unwrap();
        cluster
            .ids()
            .into_iter()
            .find(|&i| i != leader.id())
            .unwrap()
    };
    cluster.restart(follower).await.unwrap();
    seen.record(&cluster);
    let restarted = cluster.machine(follower).unwrap();
    assert!(
        restarted.opened_at().is_some_and(|l| l.index >= 10),
        "recovered {:?}",
        restarted.opened_at()
    );
    assert_eq!(restarted.counter("n"), 10, "recovered from its own WAL");

    incr_n(&cluster, &mut seq, 10).await;
    // The leader too, mid-log.
    let leader = cluster.wait_for_leader(T).await.unwrap().id();
    cluster.restart(leader).await.unwrap();
    seen.record(&cluster);
    incr_n(&cluster, &mut seq, 10).await;

    wait_for_counts(&cluster, 30).await;
    seen.check_nothing_applied_twice();
    for id in cluster.ids() {
        let m = cluster.machine(id).unwrap();
        assert_eq!(m.query(b"GET n"), Some(Ok(Bytes::from("30"))));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_snapshots_and_wal_compaction_a_restart_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot every 4 entries: `compact` checkpoints the machine after each, and a
    // restarted node finds a snapshot the machine is already past.
    let cluster = start(dir.path().to_path_buf(), 4).await;
    let mut seen = Incarnations::default();
    seen.record(&cluster);
    let mut seq = 0;

    incr_n(&cluster, &mut seq, 15).await;
    wait_for_counts(&cluster, 15).await;
    for id in cluster.ids() {
        cluster.restart(id).await.unwrap();
        seen.record(&cluster);
        incr_n(&cluster, &mut seq, 5).await;
    }
    wait_for_counts(&cluster, 30).await;
    seen.check_nothing_applied_twice();
    for id in cluster.ids() {
        let s = cluster.node(id).unwrap().status();
        assert!(s.snapshot.index > 0, "node {id} took no snapshot: {s:?}");
    }
    cluster.shutdown().await;
}
