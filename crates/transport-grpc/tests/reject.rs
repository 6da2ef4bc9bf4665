//! Requests that must never reach the protocol: a wrong cluster id, an unknown sender, a
//! version mismatch, malformed and oversized frames, corrupt snapshot chunks. Each is
//! refused with a gRPC status whose message says what was wrong. Raw tonic clients build
//! the bad requests.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::MembershipConfig;
use lockstep_transport_grpc::proto::client as cpb;
use lockstep_transport_grpc::proto::client::client_api_client::ClientApiClient;
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;
use lockstep_transport_grpc::{Client, ClientConfig, ClientError, PROTOCOL_VERSION};
use tonic::transport::Channel;
use tonic::Code;

/// Node 1 alone (it leads), knowing peer 2 only by an address nobody listens on.
async fn single_node() -> TestNode {
    let mut cfg = config(1, None);
    cfg.max_message_bytes = 64 << 10;
    cfg.snapshot_chunk_bytes = 32 << 10;
    cfg.peers.insert(2, "127.0.0.1:9".into());
    let n = start_node(cfg, Some(MembershipConfig::new_voters([1]))).await;
    wait_for_leader(&[&n], Duration::from_secs(10)).await;
    n
}

async fn channel(n: &TestNode) -> Channel {
    Channel::from_shared(format!("http://{}", n.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn header(cluster: &str, from: u64, to: u64, version: u32) -> Option<pb::Header> {
    Some(pb::Header {
        cluster_id: cluster.into(),
        from,
        to,
        protocol_version: version,
    })
}

/// A vote request with a huge term: if it reached the protocol, the node's term would jump.
fn vote(header: Option<pb::Header>) -> pb::PeerEnvelope {
    pb::PeerEnvelope {
        header,
        term: 1_000,
        body: Some(pb::peer_envelope::Body::VoteRequest(pb::VoteRequest {
            pre_vote: false,
            last_log_id: Some(pb::LogId {
                term: 999,
                index: 999,
            }),
            transfer: true,
        })),
    }
}

async fn send(n: &TestNode, envs: Vec<pb::PeerEnvelope>) -> tonic::Status {
    let mut c = PeerClient::new(channel(n).await).max_encoding_message_size(64 << 20);
    let r = tokio::time::timeout(Duration::from_secs(5), c.messages(tokio_stream::iter(envs)))
        .await
        .expect("answered in time");
    r.expect_err("the stream is refused")
}

fn assert_status(st: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(st.code(), code, "{st:?}");
    assert!(
        st.message().contains(needle),
        "status message {:?} should mention {needle:?}",
        st.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requests_from_the_wrong_place_are_refused_and_never_reach_the_protocol() {
    let n = single_node().await;
    let term = n.node.status().term;

    let st = send(
        &n,
        vec![vote(header("other-cluster", 2, 1, PROTOCOL_VERSION))],
    )
    .await;
    assert_status(&st, Code::FailedPrecondition, "wrong cluster id");
    assert_status(&st, Code::FailedPrecondition, "other-cluster");

    let st = send(&n, vec![vote(header(CLUSTER, 9, 1, PROTOCOL_VERSION))]).await;
    assert_status(&st, Code::PermissionDenied, "unknown node id 9");

    let st = send(&n, vec![vote(header(CLUSTER, 2, 1, PROTOCOL_VERSION + 1))]).await;
    assert_status(&st, Code::FailedPrecondition, "protocol version mismatch");

    let st = send(&n, vec![vote(header(CLUSTER, 2, 5, PROTOCOL_VERSION))]).await;
    assert_status(
        &st,
        Code::FailedPrecondition,
        "message for node 5 reached node 1",
    );

    assert_eq!(
        n.node.status().term,
        term,
        "no refused message reached the protocol"
    );
    assert!(n.node.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_refused() {
    let n = single_node().await;
    let term = n.node.status().term;
    let ok = header(CLUSTER, 2, 1, PROTOCOL_VERSION);

    let st = send(&n, vec![vote(None)]).await;
    assert_status(&st, Code::InvalidArgument, "`header`");

    let mut e = vote(ok.clone());
    e.body = None;
    assert_status(&send(&n, vec![e]).await, Code::InvalidArgument, "`body`");

    let st = send(&n, vec![vote(header(CLUSTER, 0, 1, PROTOCOL_VERSION))]).await;
    assert_status(&st, Code::InvalidArgument, "`header.from`");

    let append = |index: u64, data: Bytes| pb::PeerEnvelope {
        header: ok.clone(),
        term: 1_000,
        body: Some(pb::peer_envelope::Body::AppendEntries(pb::AppendEntries {
            prev_log_id: Some(pb::LogId { term: 0, index: 0 }),
            entries: vec![pb::Entry {
                log_id: Some(pb::LogId { term: 1_000, index }),
                payload: Some(pb::entry::Payload::Command(pb::Command {
                    session: None,
                    data,
                })),
            }],
            leader_commit: 0,
        })),
    };
    let st = send(&n, vec![append(0, Bytes::new())]).await;
    assert_status(&st, Code::InvalidArgument, "entries[0].log_id.index");
    assert_status(&st, Code::InvalidArgument, "entry index 0");

    // An envelope above max_message_bytes (64 KiB here).
    let big = Bytes::from(vec![7u8; 100 << 10]);
    let st = send(&n, vec![append(1, big.clone())]).await;
    assert_status(&st, Code::ResourceExhausted, "65536 bytes");

    // The same limit on the client API (a unary call).
    let mut c = ClientApiClient::new(channel(&n).await).max_encoding_message_size(64 << 20);
    let st = c
        .propose(cpb::ProposeRequest {
            header: Some(cpb::RequestHeader {
                cluster_id: CLUSTER.into(),
                protocol_version: PROTOCOL_VERSION,
            }),
            session: None,
            command: big,
        })
        .await
        .expect_err("too large");
    assert_status(&st, Code::ResourceExhausted, "65536 bytes");

    // A stream whose first messages are fine is ended at the first bad one; the good ones
    // before it are delivered (here: a heartbeat response from a known peer, harmless).
    let good = pb::PeerEnvelope {
        header: ok.clone(),
        term,
        body: Some(pb::peer_envelope::Body::HeartbeatResponse(
            pb::HeartbeatResponse {
                read_seq: 0,
                durable: 0,
            },
        )),
    };
    let mut bad = good.clone();
    bad.body = Some(pb::peer_envelope::Body::AppendResponse(
        pb::AppendResponse { result: None },
    ));
    let st = send(&n, vec![good, bad]).await;
    assert_status(&st, Code::InvalidArgument, "append_response.result");

    assert_eq!(n.node.status().term, term, "nothing reached the protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_out_of_order_snapshot_streams_are_refused() {
    use pb::snapshot_chunk::Frame;
    let n = single_node().await;
    let begin = |total_len: u64| pb::SnapshotChunk {
        frame: Some(Frame::Begin(pb::SnapshotBegin {
            header: header(CLUSTER, 2, 1, PROTOCOL_VERSION),
            term: 1_000,
            meta: Some(pb::SnapshotMeta {
                last_log_id: Some(pb::LogId { term: 1, index: 5 }),
                membership: Some(pb::Membership {
                    voters: vec![1, 2],
                    outgoing: vec![],
                    learners: vec![],
                    addrs: Default::default(),
                }),
            }),
            total_len,
        })),
    };
    let data = |offset: u64, data: &'static [u8], crc: u32| pb::SnapshotChunk {
        frame: Some(Frame::Data(pb::SnapshotData {
            offset,
            data: Bytes::from_static(data),
            crc32c: crc,
        })),
    };
    let end = |crc: u32| pb::SnapshotChunk {
        frame: Some(Frame::End(pb::SnapshotEnd { crc32c: crc })),
    };
    let run = |frames: Vec<pb::SnapshotChunk>| {
        let n = &n;
        async move {
            let mut c = PeerClient::new(channel(n).await);
            tokio::time::timeout(
                Duration::from_secs(5),
                c.install_snapshot(tokio_stream::iter(frames)),
            )
            .await
            .expect("answered in time")
            .expect_err("refused")
        }
    };
    let good_crc = crc32c::crc32c(b"abcd");

    let st = run(vec![data(0, b"abcd", good_crc)]).await;
    assert_status(
        &st,
        Code::InvalidArgument,
        "the first frame must be `begin`",
    );

    let st = run(vec![begin(4), data(0, b"abcd", good_crc ^ 1)]).await;
    assert_status(&st, Code::DataLoss, "CRC-32C");

    let st = run(vec![
        begin(4),
        data(0, b"abcd", good_crc),
        end(good_crc ^ 1),
    ])
    .await;
    assert_status(&st, Code::DataLoss, "whole-data CRC-32C");

    let st = run(vec![begin(4), data(2, b"abcd", good_crc)]).await;
    assert_status(&st, Code::InvalidArgument, "offset");

    let st = run(vec![begin(4), data(0, b"ab", crc32c::crc32c(b"ab"))]).await;
    assert_status(&st, Code::InvalidArgument, "without an `end` frame");

    let st = run(vec![begin(1 << 40)]).await;
    assert_status(&st, Code::ResourceExhausted, "max_snapshot_bytes");

    // A well-formed transfer of data that is not a snapshot envelope: refused by the
    // node's verification, reported as such.
    let st = run(vec![begin(4), data(0, b"abcd", good_crc), end(good_crc)]).await;
    assert_status(&st, Code::FailedPrecondition, "snapshot not installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_api_checks_cluster_version_and_values() {
    let n = single_node().await;
    let mut c = ClientApiClient::new(channel(&n).await);
    let hdr = |cluster: &str, version: u32| {
        Some(cpb::RequestHeader {
            cluster_id: cluster.into(),
            protocol_version: version,
        })
    };
    let st = c
        .status(cpb::StatusRequest {
            header: hdr("nope", PROTOCOL_VERSION),
        })
        .await
        .unwrap_err();
    assert_status(&st, Code::FailedPrecondition, "wrong cluster id");
    let st = c
        .status(cpb::StatusRequest {
            header: hdr(CLUSTER, 77),
        })
        .await
        .unwrap_err();
    assert_status(&st, Code::FailedPrecondition, "version 77");
    let st = c
        .status(cpb::StatusRequest { header: None })
        .await
        .unwrap_err();
    assert_status(&st, Code::InvalidArgument, "`header`");
    let st = c
        .read(cpb::ReadRequest {
            header: hdr(CLUSTER, PROTOCOL_VERSION),
            query: Bytes::new(),
            consistency: 9,
        })
        .await
        .unwrap_err();
    assert_status(&st, Code::InvalidArgument, "consistency");
    let st = c
        .change_membership(cpb::ChangeMembershipRequest {
            header: hdr(CLUSTER, PROTOCOL_VERSION),
            change: Some(cpb::change_membership_request::Change::SetVoters(
                cpb::SetVoters { voters: vec![1, 0] },
            )),
        })
        .await
        .unwrap_err();
    assert_status(&st, Code::InvalidArgument, "set_voters.voters[1]");
    let st = c
        .change_membership(cpb::ChangeMembershipRequest {
            header: hdr(CLUSTER, PROTOCOL_VERSION),
            change: Some(cpb::change_membership_request::Change::AddLearner(
                cpb::AddLearner {
                    id: 5,
                    addr: "not an address".into(),
                },
            )),
        })
        .await
        .unwrap_err();
    assert_status(&st, Code::InvalidArgument, "add_learner.addr");

    // Cluster-level refusals are answered in the response, with a kind.
    let r = c
        .transfer_leader(cpb::TransferLeaderRequest {
            header: hdr(CLUSTER, PROTOCOL_VERSION),
            to: 42,
        })
        .await
        .unwrap()
        .into_inner();
    match r.outcome {
        Some(cpb::transfer_leader_response::Outcome::Error(e)) => {
            assert_eq!(e.kind, cpb::ErrorKind::Invalid as i32, "{e:?}");
            assert!(e.message.contains("42"), "{e:?}");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // The Rust client reports a wrong cluster id at once instead of retrying.
    let mut cfg = ClientConfig::new("nope");
    cfg.timeout = Duration::from_secs(3);
    match Client::connect(vec![n.addr_string()], cfg).await {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, Code::FailedPrecondition);
            assert!(message.contains("wrong cluster id"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And gives up on an address nobody listens on within its deadline.
    let mut cfg = ClientConfig::new(CLUSTER);
    cfg.timeout = Duration::from_millis(500);
    assert!(matches!(
        Client::connect(vec!["127.0.0.1:9".into()], cfg).await,
        Err(ClientError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_node_already_holds_is_answered_at_once_without_its_data() {
    // A leader resending a large snapshot while the follower installs it (or after): the
    // follower answers after `begin` and never reads the data. Here the node's applied
    // index is already past the snapshot; the message itself (an old term) is ignored by
    // the protocol.
    use pb::snapshot_chunk::Frame;
    let n = single_node().await;
    let applied = n.node.status().applied;
    assert!(applied >= 1);
    let chunk = Bytes::from(vec![7u8; 32 << 10]);
    let pieces = 256u64;
    let mut frames = vec![pb::SnapshotChunk {
        frame: Some(Frame::Begin(pb::SnapshotBegin {
            header: header(CLUSTER, 2, 1, PROTOCOL_VERSION),
            term: 0,
            meta: Some(pb::SnapshotMeta {
                last_log_id: Some(pb::LogId {
                    term: 1,
                    index: applied,
                }),
                membership: Some(pb::Membership {
                    voters: vec![1],
                    outgoing: vec![],
                    learners: vec![],
                    addrs: Default::default(),
                }),
            }),
            total_len: pieces * chunk.len() as u64,
        })),
    }];
    for i in 0..pieces {
        frames.push(pb::SnapshotChunk {
            frame: Some(Frame::Data(pb::SnapshotData {
                offset: i * chunk.len() as u64,
                crc32c: crc32c::crc32c(&chunk),
                data: chunk.clone(),
            })),
        });
    }
    let mut c = PeerClient::new(channel(&n).await);
    let ack = tokio::time::timeout(
        Duration::from_secs(5),
        c.install_snapshot(tokio_stream::iter(frames)),
    )
    .await
    .expect("answered in time")
    .expect("accepted without the data");
    assert_eq!(ack.get_ref().received, 0, "no data was taken");
    assert!(n.node.status().stopped.is_none());
}

/// `WatchLeader` streams are bounded: one past `max_watch_streams` is refused with
/// `RESOURCE_EXHAUSTED` naming the limit, and a slot frees when a stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_leader_streams_beyond_the_limit_are_refused_until_one_ends() {
    let mut cfg = config(1, None);
    cfg.max_watch_streams = 2;
    let n = start_node(cfg, Some(MembershipConfig::new_voters([1]))).await;
    wait_for_leader(&[&n], Duration::from_secs(10)).await;
    let client = Client::connect(vec![n.addr_string()], ClientConfig::new(CLUSTER))
        .await
        .unwrap();
    let first = client.watch_leader().await.unwrap();
    let _second = client.watch_leader().await.unwrap();
    match client.watch_leader().await {
        Err(ClientError::Rpc { code, message }) => {
            assert_eq!(code, Code::ResourceExhausted, "{message}");
            assert!(message.contains("max_watch_streams"), "{message}");
        }
        other => panic!("a third stream was served: {:?}", other.map(|_| ())),
    }
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.watch_leader().await {
            Ok(_s) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no slot freed after a stream ended: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn grpc_health_reports_serving_then_not_serving_once_the_node_stopped() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let n = single_node().await;
    let mut h = HealthClient::new(channel(&n).await);
    for service in ["", "lockstep.client.v1.ClientApi"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "service {service:?}");
    }
    // A fail-stop or shutdown leaves the server up but the node stopped.
    n.node.shutdown().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = h
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status() == ServingStatus::NotServing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
