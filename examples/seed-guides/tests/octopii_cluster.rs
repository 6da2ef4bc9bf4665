//! The Octopii guide's counter on a 3-node in-process cluster: proposals, and queries on a
//! machine without a read-only query path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::{octopii, ClientError, ClusterOptions, InProcessCluster};
use seed_guides::octopii::{CounterStateMachine, MyStateMachine};

const T: Duration = Duration::from_secs(10);

async fn wait_for_count(cluster: &InProcessCluster<CounterStateMachine>, id: u64, want: i64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got = cluster.machine(id).expect("a member").value();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} counts {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_replicates_and_queries_go_through_the_log() {
    // The factory returns the minimal machine itself; no adapter to name.
    let cluster = InProcessCluster::start(
        [1, 2, 3],
        |_| CounterStateMachine::new(),
        ClusterOptions::default(),
    )
    .await
    .unwrap();
    let leader = cluster.wait_for_leader(T).await.unwrap();
    for i in 1..=10 {
        let answer = leader.propose(&b"INCREMENT"[..]).await.unwrap();
        assert_eq!(answer, Bytes::from(i.to_string()));
    }

    // No read-only `query`: a query is applied through the log, on the leader, and answered
    // by `apply`; it is linearizable whatever the read level.
    assert_eq!(leader.query(b"GET").await.unwrap(), Bytes::from("10"));
    let eventual = leader.read(&b"GET"[..], ReadLevel::Eventual).await.unwrap();
    assert_eq!(eventual, Bytes::from("10"));

    // So a follower refuses it, as it refuses a proposal.
    let follower = cluster
        .nodes()
        .into_iter()
        .find(|n| n.id() != leader.id())
        .unwrap();
    let err = follower.query(b"GET").await.unwrap_err();
    assert!(
        matches!(err, NodeError::Client(ClientError::NotLeader { .. })),
        "{err}"
    );

    // A write sent as a query is a command like any other: applied on every replica.
    assert_eq!(leader.query(b"INCREMENT").await.unwrap(), Bytes::from("11"));
    for id in 1..=3 {
        wait_for_count(&cluster, id, 11).await;
    }

    // An unknown command is the machine's deterministic answer; the node carries on.
    let err = leader.propose(&b"DECREMENT"[..]).await.unwrap_err();
    assert!(matches!(err, NodeError::Rejected(_)), "{err}");
    assert_eq!(leader.query(b"GET").await.unwrap(), Bytes::from("11"));

    // A crash and restart: the restarted node rebuilds the counter from its log.
    let victim = follower.id();
    cluster.restart(victim).await.unwrap();
    leader.propose(&b"INCREMENT"[..]).await.unwrap();
    for id in 1..=3 {
        wait_for_count(&cluster, id, 12).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_octopii_handle_type_runs_in_a_cluster() {
    // The guide's `let state_machine: StateMachine = Arc::new(MyStateMachine::new());`.
    let cluster = InProcessCluster::start(
        [1, 2, 3],
        |_| -> octopii::StateMachine { Arc::new(MyStateMachine::new()) },
        ClusterOptions::default(),
    )
    .await
    .unwrap();
    let leader = cluster.wait_for_leader(T).await.unwrap();
    let ok = leader.propose(b"SET key value".to_vec()).await.unwrap();
    assert_eq!(ok, Bytes::from("OK"));
    assert_eq!(
        leader.query(b"GET key").await.unwrap(),
        Bytes::from("value")
    );
    cluster.shutdown().await;
}
