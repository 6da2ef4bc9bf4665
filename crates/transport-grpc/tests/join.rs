//! A node joining a running cluster: `AddLearner` spreads its address to every member
//! (`RegisterPeer`), so after its promotion it votes and is replicated to by whichever node
//! leads. `RegisterPeer` is checked like every peer request, and `AddLearner` refuses an id
//! known under another address.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::state_machine::{KvQuery, KvResponse};
use lockstep_core::{MembershipConfig, NodeId};
use lockstep_transport_grpc::proto::client as cpb;
use lockstep_transport_grpc::proto::client::client_api_client::ClientApiClient;
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;
use lockstep_transport_grpc::{Client, ClientConfig, ClientError, PROTOCOL_VERSION};
use tonic::transport::Channel;
use tonic::Code;

fn key(i: usize) -> String {
    format!("join-key-{i:04}")
}

fn value(i: usize) -> String {
    format!("join-value-{i}")
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Reads `key` from `addr`'s own state machine (eventual consistency: no leader involved).
async fn eventual_get(api: &mut ClientApiClient<Channel>, key: &str) -> Option<Bytes> {
    let req = cpb::ReadRequest {
        header: Some(cpb::RequestHeader {
            cluster_id: CLUSTER.into(),
            protocol_version: PROTOCOL_VERSION,
        }),
        query: KvQuery::Get {
            key: Bytes::from(key.to_string()),
        }
        .encode(),
        consistency: cpb::Consistency::Eventual as i32,
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), api.read(req))
        .await
        .expect("read answered in time")
        .expect("read accepted")
        .into_inner();
    match resp.outcome {
        Some(cpb::read_response::Outcome::Result(b)) => match KvResponse::decode(&b) {
            Ok(KvResponse::Value(v)) => v,
            other => panic!("unexpected answer to a get: {other:?}"),
        },
        other => panic!("eventual read failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_announced_to_every_member_and_votes_after_promotion() {
    tokio::time::timeout(Duration::from_secs(90), join_scenario())
        .await
        .expect("the scenario finishes in time");
}

async fn join_scenario() {
    let mut nodes = start_cluster(&[1, 2, 3], None).await;
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
    let client = Client::connect(addrs, ClientConfig::new(CLUSTER))
        .await
        .expect("client connects");
    for i in 0..50 {
        client.put(key(i), value(i)).await.expect("put");
    }

    // Node 4 starts empty, knowing the members' addresses, and joins as a learner.
    let mut cfg4 = config(4, None);
    for n in &nodes {
        cfg4.peers.insert(n.id, n.addr_string());
    }
    nodes.push(start_node(cfg4, None).await);
    let addr4 = nodes[3].addr_string();
    let m = client
        .add_learner(4, addr4.clone())
        .await
        .expect("add learner");
    assert!(m.learners.contains(&4), "{m}");
    for n in &nodes[..3] {
        eventually(
            &format!("node {} learns node 4's address", n.id),
            Duration::from_secs(5),
            || n.transport.peer_addr(4).as_deref() == Some(addr4.as_str()),
        )
        .await;
    }
    let target = client.status().await.expect("status").commit;
    eventually("node 4 catches up", Duration::from_secs(20), || {
        nodes[3].node.status().applied >= target
    })
    .await;

    // Promote it; wait until every node runs the final (non-joint) configuration.
    let m = client.set_voters([1, 2, 3, 4]).await.expect("set voters");
    assert!(m.voters.contains(&4), "{m}");
    for n in &nodes {
        eventually(
            &format!("node {} runs voters [1, 2, 3, 4]", n.id),
            Duration::from_secs(10),
            || {
                let m = n.node.status().membership;
                !m.is_joint() && m.voters == [1, 2, 3, 4].into()
            },
        )
        .await;
    }

    // Crash the leader (one of the founders). Three voters of four remain, so no leader can
    // be elected and nothing committed without node 4: the others must accept its votes and
    // messages, and the new leader must reach it.
    let mut old_leader =
        wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    if old_leader == 4 {
        client.transfer_leader(1).await.expect("transfer to node 1");
        old_leader =
            wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    }
    let idx = nodes.iter().position(|n| n.id == old_leader).unwrap();
    nodes[idx].kill().await;
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.id != old_leader).collect();
    assert!(survivors.iter().any(|n| n.id == 4));
    let new_leader = wait_for_leader(&survivors, Duration::from_secs(15)).await;
    assert_ne!(new_leader, old_leader);

    for i in 50..100 {
        client
            .put(key(i), value(i))
            .await
            .expect("put after the failover");
    }
    let commit = client.status().await.expect("status").commit;
    eventually(
        "node 4 applies the new writes",
        Duration::from_secs(10),
        || nodes[3].node.status().applied >= commit,
    )
    .await;
    let mut api = ClientApiClient::new(channel(&addr4).await);
    for i in 0..100 {
        assert_eq!(
            eventual_get(&mut api, &key(i)).await,
            Some(Bytes::from(value(i))),
            "node 4: {}",
            key(i)
        );
    }

    for n in nodes.iter_mut() {
        if n.server.is_some() {
            let _ = n.node.shutdown().await;
            n.kill().await;
        }
    }
}

/// Node 1 alone (it leads), knowing peer 2 only by an address nobody listens on.
async fn single_node() -> TestNode {
    let mut cfg = config(1, None);
    cfg.peers.insert(2, "127.0.0.1:9".into());
    let n = start_node(cfg, Some(MembershipConfig::new_voters([1]))).await;
    wait_for_leader(&[&n], Duration::from_secs(10)).await;
    n
}

fn register(
    cluster: &str,
    from: NodeId,
    to: NodeId,
    version: u32,
    id: NodeId,
    addr: &str,
) -> pb::RegisterPeerRequest {
    pb::RegisterPeerRequest {
        header: Some(pb::Header {
            cluster_id: cluster.into(),
            from,
            to,
            protocol_version: version,
        }),
        id,
        addr: addr.into(),
    }
}

async fn call(
    n: &TestNode,
    req: pb::RegisterPeerRequest,
) -> Result<pb::RegisterPeerResponse, tonic::Status> {
    let mut c = PeerClient::new(channel(&n.addr_string()).await);
    tokio::time::timeout(Duration::from_secs(5), c.register_peer(req))
        .await
        .expect("answered in time")
        .map(|r| r.into_inner())
}

fn assert_status(r: Result<pb::RegisterPeerResponse, tonic::Status>, code: Code, needle: &str) {
    let st = r.expect_err("the registration is refused");
    assert_eq!(st.code(), code, "{st:?}");
    assert!(
        st.message().contains(needle),
        "status message {:?} should mention {needle:?}",
        st.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_peer_is_checked_like_every_peer_request() {
    let n = single_node().await;
    let book = n.transport.peers();
    let v = PROTOCOL_VERSION;

    let r = call(&n, register("other-cluster", 2, 1, v, 7, "127.0.0.1:7007")).await;
    assert_status(r, Code::FailedPrecondition, "wrong cluster id");
    let r = call(&n, register(CLUSTER, 9, 1, v, 7, "127.0.0.1:7007")).await;
    assert_status(r, Code::PermissionDenied, "unknown node id 9");
    // An unknown node cannot register itself either.
    let r = call(&n, register(CLUSTER, 7, 1, v, 7, "127.0.0.1:7007")).await;
    assert_status(r, Code::PermissionDenied, "unknown node id 7");
    let r = call(&n, register(CLUSTER, 2, 1, v + 1, 7, "127.0.0.1:7007")).await;
    assert_status(r, Code::FailedPrecondition, "protocol version mismatch");
    let r = call(&n, register(CLUSTER, 2, 5, v, 7, "127.0.0.1:7007")).await;
    assert_status(
        r,
        Code::FailedPrecondition,
        "message for node 5 reached node 1",
    );
    let r = call(&n, register(CLUSTER, 2, 1, v, 0, "127.0.0.1:7007")).await;
    assert_status(r, Code::InvalidArgument, "node id 0 is reserved");
    let r = call(&n, register(CLUSTER, 2, 1, v, 7, "no port")).await;
    assert_status(r, Code::InvalidArgument, "invalid `addr`");
    let mut no_header = register(CLUSTER, 2, 1, v, 7, "127.0.0.1:7007");
    no_header.header = None;
    assert_status(call(&n, no_header).await, Code::InvalidArgument, "header");
    assert_eq!(
        n.transport.peers(),
        book,
        "no refused registration changed the book"
    );

    // Node 2 is in the address book but not a member: it may not announce anyone.
    let r = call(&n, register(CLUSTER, 2, 1, v, 7, "127.0.0.1:7007")).await;
    assert_status(r, Code::PermissionDenied, "node 2 is not a member");
    assert_eq!(n.transport.peers(), book);

    // Once a member, it adds a node; the same registration again changes nothing, and an
    // announcement never moves a known address.
    n.node.add_learner(2).await.unwrap();
    let r = call(&n, register(CLUSTER, 2, 1, v, 7, "127.0.0.1:7007")).await;
    assert_eq!(
        r.expect("accepted"),
        pb::RegisterPeerResponse {
            changed: true,
            previous_addr: String::new()
        }
    );
    assert_eq!(n.transport.peer_addr(7).as_deref(), Some("127.0.0.1:7007"));
    let r = call(&n, register(CLUSTER, 2, 1, v, 7, "127.0.0.1:7007")).await;
    assert!(!r.expect("accepted").changed);
    let r = call(&n, register(CLUSTER, 2, 1, v, 7, "127.0.0.1:7008")).await;
    assert_status(r, Code::PermissionDenied, "never moves by announcement");
    assert_eq!(n.transport.peer_addr(7).as_deref(), Some("127.0.0.1:7007"));
    // Node 7 is known now but not a member: it cannot announce either.
    let r = call(&n, register(CLUSTER, 7, 1, v, 8, "127.0.0.1:7009")).await;
    assert_status(r, Code::PermissionDenied, "node 7 is not a member");
    // Registering the receiver itself is a no-op.
    let r = call(&n, register(CLUSTER, 2, 1, v, 1, "127.0.0.1:7010")).await;
    assert!(!r.expect("accepted").changed);
    assert_eq!(n.transport.peer_addr(1), Some(n.addr_string()));
    assert!(n.node.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_refuses_an_id_known_under_another_address() {
    let mut n = single_node().await;
    let client = Client::connect(vec![n.addr_string()], ClientConfig::new(CLUSTER))
        .await
        .expect("client connects");
    let before = n.node.status().membership;

    match client.add_learner(2, "127.0.0.1:10").await {
        Err(ClientError::Api { kind, message }) => {
            assert_eq!(kind, cpb::ErrorKind::AddressConflict, "{message}");
            assert!(message.contains("127.0.0.1:9"), "{message}");
        }
        other => panic!("expected an address conflict, got {other:?}"),
    }
    assert_eq!(n.transport.peer_addr(2).as_deref(), Some("127.0.0.1:9"));
    assert_eq!(
        n.node.status().membership,
        before,
        "the membership is untouched"
    );

    // The same id at the same address is fine (e.g. a retry).
    let m = client
        .add_learner(2, "127.0.0.1:9")
        .await
        .expect("same address");
    assert!(m.learners.contains(&2), "{m}");
    let _ = n.node.shutdown().await;
    n.kill().await;
}
