//! End-to-end tests of the runtime on in-process clusters with in-memory storage: the
//! storage-independent scenarios of `testing::cluster_suite` (which every storage backend
//! also runs), plus client-facing behaviour. Each test names the rule it checks.

use std::sync::Arc;
use std::time::Duration;

use lockstep_core::runtime::cluster::MemoryStorage;
use lockstep_core::runtime::ReadLevel;
use lockstep_core::testing::cluster_suite::{
    self as suite, converged, decode_values, fast_options, journal_cluster,
};
use lockstep_core::{ClientSession, NodeError};

const T: Duration = Duration::from_secs(10);

fn mem() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_apply_every_proposal_everywhere_5_2_5_3() {
    suite::replicate_in_order(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_mid_load_loses_no_acknowledged_write_5_4() {
    suite::leader_crash_mid_load(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_to_a_loaded_cluster_catches_up_through_a_snapshot_7() {
    suite::learner_catches_up_by_snapshot(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_consensus_change_from_123_to_345_under_load_thesis_4_3() {
    suite::joint_consensus_change(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_under_load_hands_over_without_losing_writes_thesis_3_10() {
    suite::leader_transfer_under_load(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_never_serves_a_stale_linearizable_read_thesis_6_4() {
    suite::partitioned_leader_reads(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_restart_recovers_every_write_5_3() {
    suite::full_restart_keeps_every_write(mem()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_proposals_and_names_the_leader_5_1() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.propose(1u64.to_le_bytes().to_vec()).await.unwrap();
    let follower = c
        .nodes()
        .into_iter()
        .find(|n| n.id() != leader.id())
        .unwrap();
    follower
        .wait_for(T, |s| s.leader == Some(leader.id()))
        .await
        .unwrap();
    let err = follower
        .propose(2u64.to_le_bytes().to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.leader_hint(), Some(leader.id()), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_proposal_with_the_same_session_is_applied_once_thesis_6_3() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let s = ClientSession {
        client_id: 9,
        sequence: 1,
    };
    let first = leader
        .propose_with_session(s, 77u64.to_le_bytes().to_vec())
        .await
        .unwrap();
    let retry = leader
        .propose_with_session(s, 77u64.to_le_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(first, retry, "the retry gets the original answer");
    let j = converged("session", &c, &[77]).await.unwrap();
    assert_eq!(j, vec![77], "applied once");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_linearizable_reads_on_the_leader_see_every_acknowledged_write_thesis_6_4_1() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    for v in 1..=20u64 {
        leader.propose(v.to_le_bytes().to_vec()).await.unwrap();
        for level in [ReadLevel::Linearizable, ReadLevel::Lease] {
            let r = leader.read(&b"ALL"[..], level).await.unwrap();
            assert_eq!(decode_values(&r).unwrap().len() as u64, v, "{level:?}");
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_is_answered_with_the_machines_error_and_the_node_carries_on() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let err = leader.propose(&b"bad"[..]).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Rejected(ref e) if e.0.contains("bad command")),
        "{err}"
    );
    leader.propose(5u64.to_le_bytes().to_vec()).await.unwrap();
    converged("rejected", &c, &[5]).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_snapshot_builds_one_and_the_leader_reports_peer_progress_7() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    for v in 1..=10u64 {
        leader.propose(v.to_le_bytes().to_vec()).await.unwrap();
    }
    let meta = leader
        .trigger_snapshot()
        .await
        .unwrap()
        .expect("a new snapshot");
    assert!(meta.last_log_id.index >= 11, "{meta:?}");
    assert_eq!(meta.membership.voters, [1, 2, 3].into());
    let s = leader
        .wait_for(T, |s| s.snapshot == meta.last_log_id)
        .await
        .unwrap();
    assert_eq!(
        leader.trigger_snapshot().await.unwrap(),
        None,
        "nothing new to snapshot"
    );
    let peers: Vec<u64> = s
        .progress
        .keys()
        .copied()
        .filter(|p| *p != leader.id())
        .collect();
    assert_eq!(
        peers.len(),
        2,
        "progress of both followers: {:?}",
        s.progress
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_kv_state_machine_serves_put_get_delete_and_cas_through_the_cluster() {
    use lockstep_core::runtime::cluster::InProcessCluster;
    use lockstep_core::state_machine::{KvCommand, KvQuery, KvResponse};
    use lockstep_core::KvStateMachine;
    let c = InProcessCluster::start([1, 2, 3], |_| KvStateMachine::new(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let put = |k: &'static str, v: &'static str| KvCommand::Put {
        key: k.into(),
        value: v.into(),
    };
    leader.propose(put("a", "1").encode()).await.unwrap();
    let get = |k: &'static str| KvQuery::Get { key: k.into() }.encode();
    let r = leader
        .read(get("a"), ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        KvResponse::decode(&r).unwrap(),
        KvResponse::Value(Some("1".into()))
    );
    let cas = KvCommand::Cas {
        key: "a".into(),
        expected: Some("1".into()),
        new: Some("2".into()),
    };
    let r = KvResponse::decode(&leader.propose(cas.encode()).await.unwrap()).unwrap();
    assert!(
        matches!(
            r,
            KvResponse::Cas {
                succeeded: true,
                ..
            }
        ),
        "{r:?}"
    );
    leader
        .propose(KvCommand::Delete { key: "a".into() }.encode())
        .await
        .unwrap();
    let r = leader.read(get("a"), ReadLevel::Lease).await.unwrap();
    assert_eq!(KvResponse::decode(&r).unwrap(), KvResponse::Value(None));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_served_beside_the_core_see_every_acknowledged_write_thesis_6_4_1() {
    let c = journal_cluster(&[1, 2, 3], mem(), fast_options())
        .await
        .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    // Concurrent writers and lease readers: every read sees at least every write that was
    // acknowledged before the read started.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (l, acked) = (leader.clone(), acked.clone());
        tokio::spawn(async move {
            for v in 1..=300u64 {
                l.propose(v.to_le_bytes().to_vec()).await.unwrap();
                acked.store(v, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let floor = acked.load(std::sync::atomic::Ordering::SeqCst);
        let seen =
            decode_values(&leader.read(&b"ALL"[..], ReadLevel::Lease).await.unwrap()).unwrap();
        assert!(
            (1..=floor).all(|v| seen.contains(&v)),
            "a lease read missed an acknowledged write (floor {floor}, saw {} values)",
            seen.len()
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 10, "only {reads} reads overlapped the writes");
}

/// The seed's counter: a minimal machine with no read-only query.
#[derive(Default)]
struct SeedCounter(std::sync::RwLock<i64>);

impl lockstep_core::StateMachineTrait for SeedCounter {
    fn apply(&self, command: &[u8]) -> Result<bytes::Bytes, String> {
        let mut c = self.0.write().unwrap();
        match command {
            b"INCREMENT" => *c += 1,
            b"GET" => {}
            _ => return Err("Unknown command".into()),
        }
        Ok(bytes::Bytes::from(c.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.read().unwrap().to_le_bytes().to_vec()
    }
    fn restore(&self, s: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = s.try_into().map_err(|_| "Invalid snapshot size")?;
        *self.0.write().unwrap() = i64::from_le_bytes(b);
        Ok(())
    }
}

/// Regression (a query changed one replica): a minimal machine has no read-only query, and
/// `query`/`read` called its `apply` on the local replica, so a write sent as a query
/// (`INCREMENT`) changed that node only. Such a query now goes through the log: every
/// replica applies it, none alone (state machine safety, §5.4.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_as_a_query_changes_no_replica_alone_5_4_3() {
    let c = lockstep_core::runtime::cluster::InProcessCluster::start(
        [1, 2, 3],
        |_| SeedCounter::default(),
        fast_options(),
    )
    .await
    .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.propose(&b"INCREMENT"[..]).await.unwrap();
    assert_eq!(leader.query(b"INCREMENT").await.unwrap(), "2");
    for level in [
        ReadLevel::Eventual,
        ReadLevel::Lease,
        ReadLevel::Linearizable,
    ] {
        leader.read(&b"INCREMENT"[..], level).await.unwrap();
    }
    let follower = c
        .nodes()
        .into_iter()
        .find(|n| n.id() != leader.id())
        .unwrap();
    let refused = follower.query(b"INCREMENT").await;
    assert!(
        matches!(refused, Err(NodeError::Client(_))),
        "a follower cannot send a query through the log: {refused:?}"
    );
    assert_eq!(leader.query(b"GET").await.unwrap(), "5");
    // Every replica reaches the same count, and none goes past it.
    let deadline = std::time::Instant::now() + T;
    loop {
        let counts: Vec<i64> = c
            .ids()
            .into_iter()
            .map(|id| *c.machine(id).unwrap().0.read().unwrap())
            .collect();
        assert!(counts.iter().all(|n| *n <= 5), "{counts:?}");
        if counts.iter().all(|n| *n == 5) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas differ: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.shutdown().await;
}
