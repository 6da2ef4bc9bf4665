//! The d-engine guide's tests (section 4) and registration (section 5), on lockstep.

use std::time::Duration;

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::testing::sm_suite::{checks, BoxError};
use lockstep::testing::{StateMachineBuilder, StateMachineTestSuite};
use lockstep::{Command, LogId};
use seed_guides::d_engine::testing::MyStateMachineBuilder;
use seed_guides::d_engine::{register, AppCommand};

const T: Duration = Duration::from_secs(10);

/// The guide's `create_test_entry(1, 1)`: a committed command at index 1, term 1.
fn create_test_entry(index: u64, term: u64) -> Command {
    Command {
        log_id: LogId::new(term, index),
        session: None,
        data: AppCommand::Put {
            key: format!("key-{index}").into_bytes(),
            value: b"value".to_vec(),
        }
        .encode(),
    }
}

/// 4.1, "Functional Tests", with what has no counterpart left out (`start`, `stop`,
/// `is_running`: a machine has no lifecycle in lockstep).
#[tokio::test]
async fn test_custom_state_machine() -> Result<(), BoxError> {
    let builder = MyStateMachineBuilder::new();
    let dir = tempfile::tempdir()?;
    let sm = builder.build(dir.path()).await?;

    // Test apply_chunk with sample entries
    let entries = vec![create_test_entry(1, 1)];
    let answers = sm.apply_chunk(&entries).await?;
    assert_eq!(answers.len(), 1, "one answer per command");
    assert_eq!(sm.len(), 1);

    // Test snapshot operations: d-engine's `generate_snapshot_data(dir, LogId::new(1, 1))`
    // writes a file and returns its checksum; lockstep hands the machine a writer and adds
    // the checksum and framing itself.
    let mut snapshot = Vec::new();
    sm.snapshot(&mut snapshot).await?;
    assert!(!snapshot.is_empty());

    let restored = builder.build(dir.path()).await?;
    restored
        .restore(LogId::new(1, 1), &mut snapshot.as_slice())
        .await?;
    assert_eq!(restored.query(b"key-1"), Ok(Bytes::from("value")));

    // An undecodable command is an answer, not a machine failure.
    let garbage = Command {
        log_id: LogId::new(1, 2),
        session: None,
        data: Bytes::from_static(b"\x07junk"),
    };
    assert!(sm.apply(&garbage).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn the_custom_machine_passes_the_suite() {
    let report = StateMachineTestSuite::run_all_tests(MyStateMachineBuilder::new())
        .await
        .expect("the guide's machine conforms");
    for n in &report.notes {
        println!("note: {n}");
    }
    for check in [
        checks::DETERMINISM,
        checks::SNAPSHOT_ROUND_TRIP,
        checks::RESTORE_REPLACES_STATE,
        checks::EMPTY_SNAPSHOT,
        checks::CORRUPT_SNAPSHOT,
        checks::BATCH_APPLY,
    ] {
        assert!(report.passed(check), "{check}: {report:?}");
    }
}

/// 4.2, "Performance Tests". The guide marks it `#[ignore]` (run with
/// `cargo test -- --ignored`); this in-memory machine is fast enough to run every time.
#[tokio::test]
async fn test_performance() -> Result<(), BoxError> {
    let builder = MyStateMachineBuilder::new();
    // Runs smoke test (100 entries < 1s) and scalability test (O(N) complexity)
    let perf = StateMachineTestSuite::run_performance_tests(builder).await?;
    println!(
        "100 entries: {:?}, 1,000 entries: {:?} ({:.1}x)",
        perf.small, perf.large, perf.ratio
    );
    Ok(())
}

async fn leader_of(nodes: &[RunningNode]) -> &RunningNode {
    let s = nodes[0]
        .wait_for(T, |s| s.leader.is_some())
        .await
        .expect("a leader");
    nodes
        .iter()
        .find(|n| Some(n.id()) == s.leader)
        .expect("the leader is one of the nodes")
}

/// Section 5: `NodeBuilder::new(config, shutdown_rx).state_machine(custom_sm).start()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_registered_with_node_builder_replicate_and_stop_on_the_signal() {
    let net = ChannelNetwork::new();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(());
    let mut nodes = Vec::new();
    let mut machines = Vec::new();
    for id in 1..=3 {
        let (node, sm) = register::start_node(register::config(id), shutdown_rx.clone(), &net)
            .await
            .unwrap();
        nodes.push(node);
        machines.push(sm);
    }
    let leader = leader_of(&nodes).await;
    let put = AppCommand::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    leader.propose(put.encode()).await.unwrap();
    let v = leader
        .read(&b"k"[..], ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(v, Bytes::from("v"));
    let commit = leader.status().commit;
    for (n, sm) in nodes.iter().zip(&machines) {
        n.wait_for(T, |s| s.applied >= commit).await.unwrap();
        // A machine with a read-only query answers on any node (eventual consistency).
        assert_eq!(n.query(b"k").await.unwrap(), Bytes::from("v"));
        assert_eq!(sm.len(), 1);
    }

    shutdown_tx.send(()).unwrap();
    for n in &nodes {
        n.wait_for(T, |s| s.stopped.is_some()).await.ok();
        assert!(n.status().stopped.is_some(), "node {} still runs", n.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_shutdown_sender_does_not_stop_the_nodes() {
    let net = ChannelNetwork::new();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let (node, _) = register::start_node(register::config(id), shutdown_rx.clone(), &net)
            .await
            .unwrap();
        nodes.push(node);
    }
    drop(shutdown_rx);
    drop(shutdown_tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leader = leader_of(&nodes).await;
    let put = AppCommand::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    leader.propose(put.encode()).await.unwrap();
    for n in &nodes {
        assert!(n.status().stopped.is_none(), "node {} stopped", n.id());
        n.shutdown().await.unwrap();
    }
}
