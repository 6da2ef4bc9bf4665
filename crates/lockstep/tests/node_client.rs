//! `RunningNode::client()`: embedded code proposes and reads on any node; a follower
//! forwards to the leader over gRPC under client sessions (thesis §6.3), many proposals in
//! flight at once, each applied exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::{BootstrapConfig, StorageKind};

const T: Duration = Duration::from_secs(20);

/// Three in-memory nodes over gRPC on 127.0.0.1 (ports chosen by the system, then the
/// address books filled in).
async fn cluster() -> Vec<RunningNode> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut c = Config::new(id);
        c.cluster_id = "node-client".into();
        c.listen = "127.0.0.1:0".into();
        c.storage = StorageKind::Memory;
        c.bootstrap = Some(BootstrapConfig {
            voters: vec![1, 2, 3],
        });
        nodes.push(NodeBuilder::from_config(c).start().await.unwrap());
    }
    let mut addrs = BTreeMap::new();
    for n in &nodes {
        addrs.insert(n.id(), n.local_addr().await.unwrap().to_string());
    }
    for n in &nodes {
        let t = n.grpc_transport().unwrap();
        for (id, addr) in &addrs {
            if *id != n.id() {
                t.add_peer(*id, addr.clone()).unwrap();
            }
        }
    }
    nodes
}

fn put(key: &str, value: &str) -> Bytes {
    KvCommand::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
    .encode()
}

fn get(key: &str) -> Bytes {
    KvQuery::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_node_client_forwards_proposals_and_reads_to_the_leader() {
    let nodes = cluster().await;
    nodes[0].wait_for(T, |s| s.leader.is_some()).await.unwrap();
    let leader = loop {
        if let Some(l) = nodes.iter().find(|n| n.is_leader()) {
            break l.id();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap();

    // The node itself refuses: it is not the leader.
    let refused = follower.propose(put("direct", "x")).await.unwrap_err();
    assert!(refused.leader_hint().is_some() || matches!(refused, NodeError::Client(_)));

    // Its client forwards, with 64 proposals in flight at once.
    let client = std::sync::Arc::new(follower.client());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.propose(put(&format!("k{i}"), &format!("v{i}"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("forwarded proposal succeeds");
    }
    let answer = client
        .read(get("k7"), ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        KvResponse::decode(&answer).unwrap(),
        KvResponse::Value(Some(Bytes::from_static(b"v7")))
    );
    // On the leader the same client type runs locally.
    let on_leader = nodes.iter().find(|n| n.id() == leader).unwrap().client();
    on_leader.propose(put("k7", "again")).await.unwrap();
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_forwarded_proposal_with_the_same_session_is_applied_once_thesis_6_3() {
    let nodes = cluster().await;
    let leader = loop {
        if let Some(l) = nodes.iter().find(|n| n.is_leader()) {
            break l.id();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap();
    let client = follower.client();
    let s = ClientSession {
        client_id: 4242,
        sequence: 1,
    };
    let first = client
        .propose_with_session(s, put("once", "a"))
        .await
        .unwrap();
    // A retry of the same (client, sequence) with another command is answered from the
    // session record: the previous value (none) again, and "a" stays.
    let retry = client
        .propose_with_session(s, put("once", "b"))
        .await
        .unwrap();
    assert_eq!(first, retry);
    let v = client
        .read(get("once"), ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        KvResponse::decode(&v).unwrap(),
        KvResponse::Value(Some(Bytes::from_static(b"a")))
    );
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
