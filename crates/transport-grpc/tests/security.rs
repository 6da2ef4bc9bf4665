//! Attacks on the peer port of a node without mutual TLS, and what stops them: the shared
//! peer secret (compared in constant time), RegisterPeer only from members and never
//! moving a known address, AddLearner only on the leader.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use lockstep_core::{MembershipConfig, NodeId};
use lockstep_transport_grpc::config::PeerSecret;
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;
use lockstep_transport_grpc::{Client, ClientConfig, PROTOCOL_VERSION};
use tonic::Code;

const SECRET: &str = "correct-horse-battery-staple";

async fn cluster_with_secret(ids: &[NodeId]) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for &id in ids {
        let mut cfg = config(id, None);
        cfg.peer_secret = Some(PeerSecret::new(SECRET).unwrap());
        let boot = MembershipConfig::new_voters(ids.iter().copied());
        // Slow elections: a test that checks a term did not change is not disturbed by one.
        nodes.push(start_node_with(cfg, Some(boot), |r| r.election_ticks = 50).await);
    }
    let book: BTreeMap<NodeId, String> = nodes.iter().map(|n| (n.id, n.addr_string())).collect();
    for n in &nodes {
        for (id, addr) in &book {
            if *id != n.id {
                n.transport.add_peer(*id, addr.clone()).unwrap();
            }
        }
    }
    nodes
}

/// A forged RegisterPeer from member `from`, with `secret` if given.
async fn forged_register(
    n: &TestNode,
    from: NodeId,
    secret: Option<&str>,
) -> Result<pb::RegisterPeerResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", n.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = PeerClient::new(channel);
    let mut req = tonic::Request::new(pb::RegisterPeerRequest {
        header: Some(pb::Header {
            cluster_id: CLUSTER.into(),
            from,
            to: n.id,
            protocol_version: PROTOCOL_VERSION,
        }),
        id: from,
        addr: "127.0.0.1:1".into(),
    });
    if let Some(s) = secret {
        req.metadata_mut()
            .insert(PeerSecret::HEADER, s.parse().unwrap());
    }
    c.register_peer(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_peer_secret_the_cluster_works_and_a_forged_peer_call_is_refused() {
    let nodes = cluster_with_secret(&[1, 2, 3]).await;
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let leader = wait_for_leader(&refs, Duration::from_secs(10)).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr_string()).collect();
    let client = Client::connect(addrs, ClientConfig::new(CLUSTER))
        .await
        .unwrap();
    client.put("k", "v").await.unwrap();

    let target = nodes.iter().find(|n| n.id != leader).unwrap();
    let book = target.transport.peers();
    // Re-pointing the leader's address (a one-request partition) without the secret...
    let st = forged_register(target, leader, None).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("no peer secret"), "{st:?}");
    // ... or with a wrong one, is refused, and changes nothing.
    let st = forged_register(target, leader, Some("not-the-secret-at-all"))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("wrong peer secret"), "{st:?}");
    // Even with the secret, a known address never moves by announcement.
    let st = forged_register(target, leader, Some(SECRET))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("never moves"), "{st:?}");
    assert_eq!(target.transport.peers(), book);
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_peer_secret_is_compared_whole_and_never_printed() {
    let s = PeerSecret::new(SECRET).unwrap();
    assert!(s.matches(SECRET.as_bytes()));
    assert!(!s.matches(&SECRET.as_bytes()[..SECRET.len() - 1]));
    assert!(!s.matches(format!("{SECRET}x").as_bytes()));
    assert!(!s.matches(b""));
    assert!(!format!("{s:?}").contains(SECRET));
    assert!(PeerSecret::new("short").is_err());
    assert!(PeerSecret::new("has a space in it, long enough").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_on_a_follower_is_refused_before_the_address_book_changes() {
    let nodes = start_cluster(&[1, 2, 3], None).await;
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let leader = wait_for_leader(&refs, Duration::from_secs(10)).await;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let book = follower.transport.peers();
    // Straight to the follower's client API (a Client would follow the leader).
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", follower.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c =
        lockstep_transport_grpc::proto::client::client_api_client::ClientApiClient::new(channel);
    use lockstep_transport_grpc::proto::client as cpb;
    let r = c
        .change_membership(cpb::ChangeMembershipRequest {
            header: Some(cpb::RequestHeader {
                cluster_id: CLUSTER.into(),
                protocol_version: PROTOCOL_VERSION,
            }),
            change: Some(cpb::change_membership_request::Change::AddLearner(
                cpb::AddLearner {
                    id: 9,
                    addr: "127.0.0.1:9999".into(),
                },
            )),
        })
        .await
        .unwrap()
        .into_inner();
    match r.outcome {
        Some(cpb::change_membership_response::Outcome::Error(e)) => {
            assert_eq!(e.kind, cpb::ErrorKind::NotLeader as i32, "{e:?}");
        }
        other => panic!("a follower must refuse AddLearner: {other:?}"),
    }
    assert_eq!(
        follower.transport.peers(),
        book,
        "the address book is untouched"
    );
    assert!(!follower.transport.knows(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_timeout_now_without_the_peer_secret_is_refused_and_the_follower_keeps_its_term() {
    let mut nodes = cluster_with_secret(&[1, 2, 3]).await;
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let leader = wait_for_leader(&refs, Duration::from_secs(20)).await;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let term = follower.node.status().term;
    // TimeoutNow "from the leader" in the current term would make the follower campaign at
    // once, past its stickiness.
    let forged = lockstep_transport_grpc::convert::message_to_envelope(
        CLUSTER,
        &lockstep_core::Message {
            from: leader,
            to: follower.id,
            term,
            body: lockstep_core::MessageBody::TimeoutNow,
        },
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", follower.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for secret in [None, Some("not-the-secret-at-all")] {
        let mut req = tonic::Request::new(tokio_stream::iter(vec![forged.clone()]));
        if let Some(s) = secret {
            req.metadata_mut()
                .insert(PeerSecret::HEADER, s.parse().unwrap());
        }
        let st = PeerClient::new(channel.clone())
            .messages(req)
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
        assert!(st.message().contains("peer secret"), "{st:?}");
    }
    // A campaign would raise the follower's term within a tick; give it 50.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        follower.node.status().term,
        term,
        "the follower did not campaign"
    );
    assert_eq!(follower.node.status().leader, Some(leader));
    for n in &mut nodes {
        n.kill().await;
    }
}
