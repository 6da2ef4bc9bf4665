//! Inbound snapshot streams are bounded: one per peer at a time, and
//! `max_inbound_snapshots` (default 2) in all. Streams here send their `begin` frame and
//! then hold the stream open, as a slow (or hostile) sender would.

mod common;

use std::time::Duration;

use common::*;
use lockstep_core::{MembershipConfig, NodeId};
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Node 1 alone (it leads), with peers `peers` in its address book (not running: only the
/// address book decides who may send).
async fn node_knowing(peers: &[NodeId], max_inbound_snapshots: usize) -> TestNode {
    let mut cfg = config(1, None);
    cfg.max_inbound_snapshots = max_inbound_snapshots;
    for p in peers {
        cfg.peers.insert(*p, format!("127.0.0.1:{}", 1 + *p));
    }
    start_node(cfg, Some(MembershipConfig::new_voters([1]))).await
}

/// Starts an `InstallSnapshot` stream from `from` that sends `begin` and then stays open
/// while the returned sender lives; the task ends with the call's outcome.
async fn open_stream(
    n: &TestNode,
    from: NodeId,
) -> (
    mpsc::Sender<pb::SnapshotChunk>,
    tokio::task::JoinHandle<(NodeId, Result<pb::SnapshotAck, tonic::Status>)>,
) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", n.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(snapshot_begin(from, 1, 1, vec![1], 1 << 20))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let mut c = PeerClient::new(channel);
        let r = c
            .install_snapshot(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner());
        (from, r)
    });
    (tx, task)
}

/// Waits for the first of `tasks` to end (the others hold their streams open) and returns
/// its outcome.
async fn first_to_end(
    tasks: &mut Vec<tokio::task::JoinHandle<(NodeId, Result<pb::SnapshotAck, tonic::Status>)>>,
) -> (NodeId, Result<pb::SnapshotAck, tonic::Status>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
            return tasks.remove(i).await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stream was refused: every one is held open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_snapshot_stream_from_the_same_peer_is_refused() {
    let mut n = node_knowing(&[2], 2).await;
    wait_for_leader(&[&n], Duration::from_secs(10)).await;
    let (tx_a, a) = open_stream(&n, 2).await;
    let (tx_b, b) = open_stream(&n, 2).await;
    let mut tasks = vec![a, b];
    // Whichever reached the node second is refused; the other stays open.
    let (_, r) = first_to_end(&mut tasks).await;
    let st = r.expect_err("one of two streams from node 2 is refused");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(
        st.message()
            .contains("already receiving a snapshot from node 2"),
        "{st:?}"
    );
    assert!(
        st.message().contains("one inbound snapshot per peer"),
        "{st:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!tasks[0].is_finished(), "the first stream is still served");
    // Once the first has ended, node 2 may send again.
    drop((tx_a, tx_b));
    let _ = tasks.remove(0).await;
    let (tx_c, c) = open_stream(&n, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !c.is_finished(),
        "a new stream is taken once the old one ended"
    );
    drop(tx_c);
    let _ = c.await;
    n.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_snapshot_streams_beyond_the_global_limit_are_refused() {
    let mut n = node_knowing(&[2, 3, 4], 2).await;
    wait_for_leader(&[&n], Duration::from_secs(10)).await;
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for from in [2, 3, 4] {
        let (tx, t) = open_stream(&n, from).await;
        senders.push(tx);
        tasks.push(t);
    }
    // Three peers, two slots: one of the three is refused, naming the limit.
    let (_, r) = first_to_end(&mut tasks).await;
    let st = r.expect_err("the third stream is refused");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("the limit is 2"), "{st:?}");
    assert!(st.message().contains("max_inbound_snapshots"), "{st:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "the other two are still served"
    );
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    n.kill().await;
}
