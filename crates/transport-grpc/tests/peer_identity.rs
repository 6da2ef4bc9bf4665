//! With TLS, a peer call is bound to the node certificate it comes with
//! (`lockstep://CLUSTER/node/ID`): attacks by holders of some certificate of the cluster's
//! CA, and what stops each.

mod common;

use std::time::Duration;

use common::*;
use lockstep_core::{Message, MessageBody, NodeId};
use lockstep_transport_grpc::certs::{generate, CertifiedKey, CertsSpec, ClusterCerts};
use lockstep_transport_grpc::convert::message_to_envelope;
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;
use lockstep_transport_grpc::PROTOCOL_VERSION;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

fn certs() -> ClusterCerts {
    // Node 7 and 9 have certificates but are not members of the cluster of 1, 2, 3.
    generate(&CertsSpec::new(CLUSTER, [1, 2, 3, 7, 9]).with_clients(["ops"])).unwrap()
}

/// A raw peer client to `n` over TLS, presenting `identity` (if any).
async fn peer_client(
    n: &TestNode,
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> PeerClient<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(c) = identity {
        tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
    }
    let channel = Channel::from_shared(format!("https://{}", n.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TLS connection");
    PeerClient::new(channel)
}

fn register(from: NodeId, to: NodeId, id: NodeId, addr: &str) -> pb::RegisterPeerRequest {
    pb::RegisterPeerRequest {
        header: Some(pb::Header {
            cluster_id: CLUSTER.into(),
            from,
            to,
            protocol_version: PROTOCOL_VERSION,
        }),
        id,
        addr: addr.into(),
    }
}

fn assert_denied(st: &tonic::Status, needle: &str) {
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains(needle), "{needle:?} not in {st:?}");
}

/// The running nodes 1, 2, 3 with a leader; (nodes, leader).
async fn running(certs: &ClusterCerts, require_client_cert: bool) -> (Vec<TestNode>, NodeId) {
    let nodes = tls_cluster(certs, &[1, 2, 3], require_client_cert).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    (nodes, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_peer_with_a_client_certificate_is_refused() {
    let certs = certs();
    let (mut nodes, leader) = running(&certs, true).await;
    let target = nodes.iter().find(|n| n.id != leader).unwrap();
    let mut c = peer_client(target, certs.ca.cert_pem(), Some(&certs.clients["ops"])).await;
    // A client's certificate speaking as the leader announces a new node 9.
    let st = c
        .register_peer(register(leader, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "a client certificate cannot call the peer service");
    assert!(!target.transport.knows(9), "the address book is untouched");
    for n in &mut nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_peer_from_a_non_member_node_certificate_is_refused() {
    let certs = certs();
    let (mut nodes, leader) = running(&certs, true).await;
    let target = nodes.iter().find(|n| n.id != leader).unwrap();
    let seven = Some(&certs.nodes[&7]);
    // Node 7 is not in the address book...
    let mut c = peer_client(target, certs.ca.cert_pem(), seven).await;
    let st = c
        .register_peer(register(7, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "unknown node id 7");
    // ... and once it is, it is still not a member, so it may not announce anyone.
    target.transport.add_peer(7, "127.0.0.1:7").unwrap();
    let st = c
        .register_peer(register(7, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "node 7 is not a member");
    // Claiming to be a member with node 7's certificate does not help either.
    let st = c
        .register_peer(register(leader, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(
        &st,
        &format!("certificate identifies node 7 of cluster \"{CLUSTER}\", but the message claims to be from node {leader}"),
    );
    assert!(!target.transport.knows(9));
    for n in &mut nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_envelope_whose_from_differs_from_the_certificate_is_refused() {
    let certs = certs();
    let (mut nodes, leader) = running(&certs, true).await;
    let target = nodes.iter().find(|n| n.id != leader).unwrap();
    let other = nodes
        .iter()
        .find(|n| n.id != leader && n.id != target.id)
        .unwrap();
    let stale = |from: NodeId| {
        // Term 0: stale, ignored by the protocol if it were let through.
        message_to_envelope(
            CLUSTER,
            &Message {
                from,
                to: target.id,
                term: 0,
                body: MessageBody::TimeoutNow,
            },
        )
    };
    let mut c = peer_client(target, certs.ca.cert_pem(), Some(&certs.nodes[&other.id])).await;
    // The first envelope is from the certificate's node; the second, on the same stream,
    // claims to be from the leader: every envelope is checked, not only the first.
    let st = c
        .messages(tokio_stream::iter(vec![stale(other.id), stale(leader)]))
        .await
        .unwrap_err();
    assert_denied(
        &st,
        &format!(
            "certificate identifies node {} of cluster \"{CLUSTER}\", but the message claims to be from node {leader}",
            other.id
        ),
    );
    // The stream of the certificate's own node goes through.
    let ack = c
        .messages(tokio_stream::iter(vec![stale(other.id)]))
        .await
        .expect("a node's own messages are accepted");
    assert_eq!(ack.get_ref().received, 1);
    for n in &mut nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_timeout_now_from_another_nodes_certificate_is_refused_and_the_follower_keeps_its_term(
) {
    let certs = certs();
    let (mut nodes, leader) = running(&certs, true).await;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let third = nodes
        .iter()
        .find(|n| n.id != leader && n.id != follower.id)
        .unwrap();
    let term = follower.node.status().term;
    // TimeoutNow "from the leader" in the current term would make the follower campaign at
    // once, past its stickiness, while the real leader's lease holds.
    let forged = message_to_envelope(
        CLUSTER,
        &Message {
            from: leader,
            to: follower.id,
            term,
            body: MessageBody::TimeoutNow,
        },
    );
    let mut c = peer_client(follower, certs.ca.cert_pem(), Some(&certs.nodes[&third.id])).await;
    let st = c
        .messages(tokio_stream::iter(vec![forged]))
        .await
        .unwrap_err();
    assert_denied(
        &st,
        &format!(
            "certificate identifies node {} of cluster \"{CLUSTER}\", but the message claims to be from node {leader}",
            third.id
        ),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_require_client_cert_a_peer_call_still_needs_a_node_certificate() {
    let certs = certs();
    // Client certificates optional: the peer service still requires a node certificate.
    let (mut nodes, leader) = running(&certs, false).await;
    let target = nodes.iter().find(|n| n.id != leader).unwrap();
    let ca = certs.ca.cert_pem();

    let mut anonymous = peer_client(target, ca, None).await;
    let st = anonymous
        .register_peer(register(leader, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "no client certificate presented");

    // A certificate of the CA without a lockstep identity.
    let plain = certs
        .ca
        .leaf("no identity", &["localhost".to_string()], &[], false)
        .unwrap();
    let mut c = peer_client(target, ca, Some(&plain)).await;
    let st = c
        .register_peer(register(leader, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "no lockstep identity");

    // A node certificate of another cluster from the same CA.
    let foreign = certs.ca.node_cert("another-cluster", leader, &[]).unwrap();
    let mut c = peer_client(target, ca, Some(&foreign)).await;
    let st = c
        .register_peer(register(leader, target.id, 9, "127.0.0.1:9"))
        .await
        .unwrap_err();
    assert_denied(&st, "of cluster \"another-cluster\"");
    assert!(!target.transport.knows(9));

    // The cluster itself works: the nodes present their node certificates to each other.
    let client = lockstep_transport_grpc::Client::connect(
        nodes.iter().map(|n| n.addr_string()).collect(),
        {
            let mut c = lockstep_transport_grpc::ClientConfig::new(CLUSTER);
            c.tls = Some(lockstep_transport_grpc::ClientTls {
                ca_pem: ca.to_string(),
                identity: None,
                domain_name: None,
            });
            c
        },
    )
    .await
    .unwrap();
    client.put("k", "v").await.unwrap();
    for n in &mut nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_names_another_node_does_not_start() {
    let certs = certs();
    let mut cfg = config(1, certs.node_tls(2, true));
    cfg.peers.insert(2, "127.0.0.1:1".into());
    let e = lockstep_transport_grpc::GrpcTransport::new(cfg).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("tls.cert_pem"), "{text}");
    assert!(
        text.contains(&format!("node 2 of cluster \"{CLUSTER}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("lockstep://{CLUSTER}/node/1")),
        "{text}"
    );
}
