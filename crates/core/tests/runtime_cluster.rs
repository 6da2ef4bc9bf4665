//! End-to-end tests of the runtime on in-process clusters: each test names the Raft paper
//! (or thesis) section whose rule it checks through the running system.

mod common;

use std::time::Duration;

use common::{converged, journal_cluster, Load};
use lockstep_core::runtime::ReadLevel;
use lockstep_core::{ClientError, ClientSession, NodeError};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_apply_every_proposal_everywhere_5_2_5_3() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let mut acked = Vec::new();
    for v in 1..=50u64 {
        let r = leader.propose(v.to_le_bytes().to_vec()).await.unwrap();
        assert_eq!(
            u64::from_le_bytes(r[..].try_into().unwrap()),
            v,
            "answer is the journal length"
        );
        acked.push(v);
    }
    let j = converged(&c, &acked).await;
    assert_eq!(j, acked, "applied in proposal order");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_proposals_and_names_the_leader_5_1() {
    let c = journal_cluster(&[1, 2, 3]).await;
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
async fn leader_crash_mid_load_loses_no_acknowledged_write_5_4() {
    let c = journal_cluster(&[1, 2, 3]).await;
    c.wait_for_leader(T).await.unwrap();
    let load = Load::start(&c, 4, 1_000_000);
    load.progress(200).await;
    let old = c.wait_for_leader(T).await.unwrap().id();
    c.crash(old).await;
    let new = c.wait_for_leader(T).await.unwrap();
    assert_ne!(new.id(), old);
    load.progress(200).await;
    c.restart(old).await.unwrap();
    load.progress(200).await;
    let acked = load.finish().await;
    converged(&c, &acked).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_proposal_with_the_same_session_is_applied_once_thesis_6_3() {
    let c = journal_cluster(&[1, 2, 3]).await;
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
    let j = converged(&c, &[77]).await;
    assert_eq!(j, vec![77], "applied once");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_to_a_loaded_cluster_catches_up_through_a_snapshot_7() {
    let mut opts = common::fast_options();
    opts.snapshot_every = 100;
    opts.raft.purge_keep_entries = 50;
    let c = common::journal_cluster_with(&[1, 2, 3], opts).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let load = Load::start(&c, 4, 1_000_000);
    // Enough entries that the log behind the first snapshots is purged (a snapshot every 100
    // entries, 50 kept behind it), so the learner cannot be served from the log.
    leader
        .wait_for(T * 3, |s| s.snapshot.index >= 400)
        .await
        .unwrap();
    let learner = c.add_node(4).await.unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.add_learner(4).await.unwrap();
    learner
        .wait_for(T, |s| s.snapshot.index > 0)
        .await
        .expect("installed a snapshot");
    load.progress(200).await;
    let acked = load.finish().await;
    converged(&c, &acked).await;
    assert!(c.node(4).unwrap().status().membership.learners.contains(&4));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_consensus_change_from_123_to_345_under_load_thesis_4_3() {
    let c = journal_cluster(&[1, 2, 3]).await;
    c.wait_for_leader(T).await.unwrap();
    let load = Load::start(&c, 3, 1_000_000);
    load.progress(100).await;
    c.add_node(4).await.unwrap();
    c.add_node(5).await.unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.add_learner(4).await.unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.add_learner(5).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let cfg = leader.set_voters([3, 4, 5]).await.unwrap();
    assert_eq!(cfg.voters, [3, 4, 5].into());
    assert!(
        cfg.outgoing.is_empty(),
        "the final configuration is not joint"
    );
    load.progress(100).await;
    // The removed nodes leave; the new configuration keeps serving writes.
    c.crash(1).await;
    c.crash(2).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    assert!([3, 4, 5].contains(&leader.id()));
    load.progress(100).await;
    let acked = load.finish().await;
    converged(&c, &acked).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_under_load_hands_over_without_losing_writes_thesis_3_10() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let load = Load::start(&c, 3, 1_000_000);
    load.progress(100).await;
    let target = if leader.id() == 3 { 2 } else { 3 };
    let mut transferred = false;
    for _ in 0..20 {
        let leader = c.wait_for_leader(T).await.unwrap();
        if leader.id() == target {
            transferred = true;
            break;
        }
        match leader.transfer_leader(target).await {
            Ok(id) => {
                assert_eq!(id, target);
                transferred = true;
                break;
            }
            Err(e) => eprintln!("transfer attempt failed: {e}"),
        }
    }
    assert!(transferred, "leadership moved to {target}");
    c.node(target)
        .unwrap()
        .wait_for(T, |s| s.is_leader())
        .await
        .unwrap();
    load.progress(100).await;
    let acked = load.finish().await;
    converged(&c, &acked).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_never_serves_a_stale_linearizable_read_thesis_6_4() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let old = c.wait_for_leader(T).await.unwrap();
    old.propose(1u64.to_le_bytes().to_vec()).await.unwrap();
    c.network().isolate(old.id());
    // The majority elects a new leader and commits a write the old leader cannot see.
    let new = loop {
        let l = c.wait_for_leader(T).await.unwrap();
        if l.id() != old.id() && l.status().term > old.status().term {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    new.propose(2u64.to_le_bytes().to_vec()).await.unwrap();
    for level in [ReadLevel::Linearizable, ReadLevel::Lease] {
        match old.read(&b"ALL"[..], level).await {
            Ok(r) => {
                let seen = common::decode(&r).unwrap();
                assert!(
                    seen.contains(&2),
                    "stale {level:?} read on the old leader: {seen:?}"
                );
            }
            Err(NodeError::Client(ClientError::NotLeader { .. }))
            | Err(NodeError::Client(ClientError::LeadershipLost))
            | Err(NodeError::Timeout(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // The eventual level is allowed to be stale, and says so by its name.
    let local = common::decode(&old.read(&b"ALL"[..], ReadLevel::Eventual).await.unwrap()).unwrap();
    assert_eq!(local, vec![1]);
    c.network().heal();
    let r = new
        .read(&b"ALL"[..], ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(common::decode(&r).unwrap(), vec![1, 2]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_linearizable_reads_on_the_leader_see_every_acknowledged_write_thesis_6_4_1() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    for v in 1..=20u64 {
        leader.propose(v.to_le_bytes().to_vec()).await.unwrap();
        for level in [ReadLevel::Linearizable, ReadLevel::Lease] {
            let r = leader.read(&b"ALL"[..], level).await.unwrap();
            assert_eq!(common::decode(&r).unwrap().len() as u64, v, "{level:?}");
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_is_answered_with_the_machines_error_and_the_node_carries_on() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let err = leader.propose(&b"bad"[..]).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Rejected(ref e) if e.0.contains("bad command")),
        "{err}"
    );
    leader.propose(5u64.to_le_bytes().to_vec()).await.unwrap();
    converged(&c, &[5]).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_restart_recovers_every_write_5_3() {
    let c = journal_cluster(&[1, 2, 3]).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let acked: Vec<u64> = (1..=30).collect();
    for v in &acked {
        leader.propose(v.to_le_bytes().to_vec()).await.unwrap();
    }
    converged(&c, &acked).await;
    c.shutdown().await;
    for id in [1, 2, 3] {
        c.restart(id).await.unwrap();
    }
    let leader = c.wait_for_leader(T).await.unwrap();
    leader.propose(31u64.to_le_bytes().to_vec()).await.unwrap();
    let mut all = acked.clone();
    all.push(31);
    assert_eq!(converged(&c, &all).await, all);
    c.shutdown().await;
}
