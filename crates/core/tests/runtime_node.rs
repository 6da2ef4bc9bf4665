//! Runtime behaviour of a single node: fail-stop on storage errors, a slow state machine
//! that must not stall heartbeats, configuration checks.

use std::sync::Arc;
use std::time::Duration;

use lockstep_core::handler::{DefaultStateMachineHandler, Never};
use lockstep_core::runtime::cluster::InProcessCluster;
use lockstep_core::runtime::{Node, NodeParts, RuntimeConfig, StartError};
use lockstep_core::testing::cluster_suite::{decode_values, fast_options, Journal};
use lockstep_core::transport::ChannelNetwork;
use lockstep_core::{MemLogStore, MemSnapshotStore, MembershipConfig, NodeError, RaftConfig};

const T: Duration = Duration::from_secs(10);

fn parts(store: MemLogStore, machine: Arc<Journal>) -> NodeParts {
    NodeParts {
        raft: RaftConfig::default(),
        runtime: RuntimeConfig {
            tick: Duration::from_millis(2),
            ..RuntimeConfig::default()
        },
        log_store: Box::new(store),
        handler: Arc::new(DefaultStateMachineHandler::new(
            Arc::new(lockstep_core::state_machine::MinimalStateMachine::new(
                machine,
            )),
            Arc::new(MemSnapshotStore::new()),
            Never,
        )),
        transport: ChannelNetwork::new().transport(1),
        bootstrap: Some(MembershipConfig::new_voters([1])),
        seed: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_and_nothing_is_acknowledged_after_it_5_3_durability() {
    let store = MemLogStore::new();
    let fail = store.sync_failure_switch();
    let disk = store.disk();
    let node = Node::start(parts(store, Arc::default())).await.unwrap();
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    node.propose(1u64.to_le_bytes().to_vec()).await.unwrap();
    *fail.lock().unwrap() = true;
    let err = node.propose(2u64.to_le_bytes().to_vec()).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Stopped(ref r) if r.contains("injected")),
        "the write fails with the storage error: {err}"
    );
    let s = node.status();
    assert!(
        s.stopped.as_deref().unwrap_or("").contains("log store"),
        "{s:?} after {err}"
    );
    let err = node.propose(3u64.to_le_bytes().to_vec()).await.unwrap_err();
    assert!(matches!(err, NodeError::Stopped(_)), "{err}");
    // The durable log holds the bootstrap entry, the leader's blank entry and write 1 only.
    let mut reopened = disk.open();
    let log = lockstep_core::LogStore::load(&mut reopened).unwrap();
    let commands = log
        .entries
        .iter()
        .filter(|e| matches!(e.payload, lockstep_core::EntryPayload::Command { .. }))
        .count();
    assert_eq!(commands, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_state_machine_does_not_stall_heartbeats_or_trigger_elections_5_2() {
    let c = InProcessCluster::start(
        [1, 2, 3],
        |_| Journal::slow(Duration::from_millis(20)),
        fast_options(),
    )
    .await
    .unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let term = leader.status().term;
    // 30 commands at 20 ms each keep every applier busy for 600 ms, six election timeouts.
    let mut tasks = Vec::new();
    for v in 0..30u64 {
        let l = leader.clone();
        tasks.push(tokio::spawn(async move {
            l.propose(v.to_le_bytes().to_vec()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for n in c.nodes() {
        assert_eq!(n.status().term, term, "node {} saw a new election", n.id());
    }
    c.shutdown().await;
}

#[tokio::test]
async fn an_invalid_runtime_setting_is_refused_with_its_name() {
    let mut p = parts(MemLogStore::new(), Arc::default());
    p.runtime.tick = Duration::ZERO;
    let err = Node::start(p).await.err().expect("refused");
    assert!(
        matches!(err, StartError::Config(ref c) if c.key == "tick"),
        "{err}"
    );
    let mut p = parts(MemLogStore::new(), Arc::default());
    p.raft.heartbeat_ticks = 50;
    let err = Node::start(p).await.err().expect("refused");
    assert!(err.to_string().contains("election_ticks"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_bootstrap_again() {
    let store = MemLogStore::new();
    let disk = store.disk();
    let node = Node::start(parts(store, Arc::default())).await.unwrap();
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    node.propose(1u64.to_le_bytes().to_vec()).await.unwrap();
    node.shutdown().await.unwrap();
    // Restart with a different bootstrap configuration: it is ignored.
    let mut p = parts(disk.open(), Arc::default());
    p.bootstrap = Some(MembershipConfig::new_voters([1, 2, 3]));
    let node = Node::start(p).await.unwrap();
    let s = node.wait_for(T, |s| s.is_leader()).await.unwrap();
    assert_eq!(s.membership, MembershipConfig::new_voters([1]));
    let r = node
        .read(&b"ALL"[..], lockstep_core::runtime::ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        decode_values(&r).unwrap(),
        vec![1],
        "the write survived the restart"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_refused_before_it_reaches_the_log() {
    let mut p = parts(MemLogStore::new(), Arc::default());
    p.runtime.max_command_bytes = 1024;
    let node = Node::start(p).await.unwrap();
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    let err = node.propose(vec![0u8; 1025]).await.unwrap_err();
    assert_eq!(
        err,
        NodeError::TooLarge {
            size: 1025,
            max: 1024
        }
    );
    assert!(!lockstep_core::runtime::cluster::retryable(&err));
    node.propose(7u64.to_le_bytes().to_vec()).await.unwrap();
    node.shutdown().await.unwrap();
}
