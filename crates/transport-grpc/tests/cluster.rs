//! A 3-node cluster over gRPC on 127.0.0.1: elects a leader, takes writes and linearizable
//! reads through `Client`, survives the leader's crash, and catches a learner up by
//! snapshot.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::runtime::ReadLevel;
use lockstep_core::LogId;
use lockstep_transport_grpc::{CasOutcome, Client, ClientConfig, ClientError};

fn key(i: usize) -> String {
    format!("key-{i:04}")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_leader_crash_and_a_learner_catches_up_by_snapshot() {
    tokio::time::timeout(Duration::from_secs(90), scenario())
        .await
        .expect("the scenario finishes in time");
}

async fn scenario() {
    let mut nodes = start_cluster(&[1, 2, 3], None).await;
    let first_leader =
        wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;

    let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
    let client = Client::connect(addrs, ClientConfig::new(CLUSTER))
        .await
        .expect("client connects");
    let status = client.status().await.expect("status");
    assert_eq!(status.leader, Some(first_leader));
    assert_eq!(status.membership.voters, [1, 2, 3].into());

    for i in 0..200 {
        let prev = client.put(key(i), value(i)).await.expect("put");
        assert_eq!(prev, None);
    }
    for i in 0..200 {
        let got = client.get(key(i)).await.expect("get");
        assert_eq!(got, Some(Bytes::from(value(i))), "{}", key(i));
    }
    // The other operations of the KV machine.
    assert_eq!(
        client.put(key(0), "changed").await.unwrap(),
        Some(Bytes::from(value(0)))
    );
    assert_eq!(
        client
            .cas(key(0), Some(Bytes::from("wrong")), Some(Bytes::from("x")))
            .await
            .unwrap(),
        CasOutcome {
            succeeded: false,
            current: Some(Bytes::from("changed"))
        }
    );
    assert!(
        client
            .cas(
                key(0),
                Some(Bytes::from("changed")),
                Some(Bytes::from(value(0)))
            )
            .await
            .unwrap()
            .succeeded
    );
    client.put("doomed", "x").await.unwrap();
    assert_eq!(
        client.delete("doomed").await.unwrap(),
        Some(Bytes::from("x"))
    );
    assert_eq!(client.get("doomed").await.unwrap(), None);
    assert_eq!(
        client.get_at(key(1), ReadLevel::Lease).await.unwrap(),
        Some(Bytes::from(value(1)))
    );
    // A command the state machine cannot decode is rejected, not retried.
    match client.propose(Bytes::from_static(b"\xffgarbage")).await {
        Err(ClientError::Rejected(m)) => assert!(m.contains("tag"), "{m}"),
        other => panic!("expected a rejection, got {other:?}"),
    }

    // Kill the leader; the client finds the new one and keeps writing.
    let idx = nodes.iter().position(|n| n.id == first_leader).unwrap();
    nodes[idx].kill().await;
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.id != first_leader).collect();
    let second_leader = wait_for_leader(&survivors, Duration::from_secs(10)).await;
    assert_ne!(second_leader, first_leader);
    for i in 200..300 {
        client
            .put(key(i), value(i))
            .await
            .expect("put after failover");
    }
    for i in 0..300 {
        assert_eq!(
            client.get(key(i)).await.expect("get after failover"),
            Some(Bytes::from(value(i))),
            "{}",
            key(i)
        );
    }
    let leader_status = client.status().await.unwrap();
    assert_eq!(leader_status.node_id, second_leader);
    let commit = leader_status.commit;
    for n in &survivors {
        eventually(
            "survivors apply everything",
            Duration::from_secs(10),
            || n.node.status().applied >= commit,
        )
        .await;
        for i in 0..300 {
            assert_eq!(
                n.machine.get(key(i).as_bytes()),
                Some(Bytes::from(value(i)))
            );
        }
    }

    // A new node joins as a learner through the client API. The log was purged behind
    // snapshots (EntriesSince(50), purge_keep_entries 10), so it catches up by snapshot.
    let leader_node = survivors.iter().find(|n| n.id == second_leader).unwrap();
    eventually(
        "the leader took a snapshot",
        Duration::from_secs(10),
        || leader_node.node.status().snapshot.index > 0,
    )
    .await;
    let mut cfg4 = config(4, None);
    for n in &survivors {
        cfg4.peers.insert(n.id, n.addr_string());
    }
    let learner = start_node(cfg4, None).await;
    let m = client
        .add_learner(4, learner.addr_string())
        .await
        .expect("add learner");
    assert!(m.learners.contains(&4), "{m}");
    assert!(
        leader_node.transport.knows(4),
        "the leader learned the address"
    );
    let target = client.status().await.unwrap().commit;
    eventually("the learner catches up", Duration::from_secs(20), || {
        learner.node.status().applied >= target
    })
    .await;
    assert_ne!(
        learner.node.status().snapshot,
        LogId::default(),
        "the learner installed a snapshot"
    );
    for i in 0..300 {
        assert_eq!(
            learner.machine.get(key(i).as_bytes()),
            Some(Bytes::from(value(i))),
            "learner: {}",
            key(i)
        );
    }
    let status = client.status().await.unwrap();
    assert!(status.membership.learners.contains(&4));

    // Watching the leader reports the current one first.
    let mut watch = client.watch_leader().await.expect("watch");
    let ev = watch.message().await.expect("event").expect("an event");
    assert_eq!(ev.leader_id, second_leader);
    assert!(!ev.leader_addr.is_empty());

    for n in nodes.iter_mut().chain(std::iter::once(&mut { learner })) {
        if n.server.is_some() {
            let _ = n.node.shutdown().await;
            n.kill().await;
        }
    }
}

/// One `Client` shared by many tasks keeps many proposals in flight, each under a session
/// of its own (so each is still applied exactly once, thesis §6.3), never more sessions
/// than `max_sessions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_keeps_many_proposals_in_flight_each_under_its_own_session_thesis_6_3() {
    let nodes = start_cluster(&[1, 2, 3], None).await;
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
    for max in [64, 4] {
        let client = std::sync::Arc::new(
            Client::connect(
                addrs.clone(),
                ClientConfig {
                    max_sessions: max,
                    ..ClientConfig::new(CLUSTER)
                },
            )
            .await
            .expect("client connects"),
        );
        let puts = (0..32).map(|i| {
            let c = client.clone();
            async move { c.put(format!("{max}-{}", key(i)), value(i)).await }
        });
        for (i, r) in futures_util::future::join_all(puts)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap(), None, "put {i} applied once, on an absent key");
        }
        assert_eq!(
            client.sessions(),
            max.min(32),
            "sessions with max_sessions {max}"
        );
        for i in 0..32 {
            let got = client.get(format!("{max}-{}", key(i))).await.unwrap();
            assert_eq!(got.as_deref(), Some(value(i).as_bytes()));
        }
    }
    let bad = Client::connect(
        addrs,
        ClientConfig {
            max_sessions: 0,
            ..ClientConfig::new(CLUSTER)
        },
    )
    .await;
    assert!(
        matches!(
            bad,
            Err(ClientError::Config {
                key: "max_sessions",
                ..
            })
        ),
        "{bad:?}"
    );
}
