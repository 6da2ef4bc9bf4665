//! The transport on its own: `send` never blocks, drops what it cannot deliver, and the
//! address book changes at run time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::{
    Message, MessageBody, SnapshotMeta, SnapshotReader, Transport, TransportError,
};
use lockstep_transport_grpc::{GrpcConfig, GrpcError, GrpcTransport};

fn cfg() -> GrpcConfig {
    let mut c = GrpcConfig::new("c", 1, "127.0.0.1:0".parse().unwrap());
    c.peer_queue_len = 16;
    c.max_message_bytes = 64 << 10;
    c.snapshot_chunk_bytes = 32 << 10;
    // Nobody listens on the discard port of the loopback interface.
    c.peers.insert(2, "127.0.0.1:9".into());
    c
}

fn heartbeat(to: u64) -> Message {
    Message {
        from: 1,
        to,
        term: 1,
        body: MessageBody::Heartbeat {
            leader_commit: 0,
            read_seq: 0,
        },
    }
}

#[tokio::test]
async fn send_never_blocks_and_drops_what_cannot_be_delivered() {
    let t = GrpcTransport::new(cfg()).unwrap();
    let start = Instant::now();
    for _ in 0..10_000 {
        t.send(heartbeat(2));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "send must not block: {:?}",
        start.elapsed()
    );
    assert!(
        t.dropped_messages() >= 10_000 - 16 - 64,
        "a full queue drops: {}",
        t.dropped_messages()
    );

    let before = t.dropped_messages();
    t.send(heartbeat(7));
    assert_eq!(
        t.dropped_messages(),
        before + 1,
        "unknown peers are dropped"
    );

    let big = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_log_id: Default::default(),
            entries: vec![lockstep_core::Entry {
                log_id: lockstep_core::LogId::new(1, 1),
                payload: lockstep_core::EntryPayload::Command {
                    session: None,
                    data: Bytes::from(vec![0u8; 100 << 10]),
                },
            }],
            leader_commit: 0,
        },
    };
    let before = t.dropped_messages();
    t.send(big);
    assert_eq!(
        t.dropped_messages(),
        before + 1,
        "oversized messages are dropped"
    );

    t.close();
    let before = t.dropped_messages();
    t.send(heartbeat(2));
    assert_eq!(t.dropped_messages(), before + 1, "a closed transport drops");
}

#[tokio::test]
async fn the_address_book_changes_at_run_time() {
    let t = GrpcTransport::new(cfg()).unwrap();
    assert!(t.knows(2));
    t.add_peer(3, "127.0.0.1:10").unwrap();
    t.add_peer(1, "127.0.0.1:11").unwrap(); // itself: ignored
    assert_eq!(
        t.peers().into_iter().collect::<Vec<_>>(),
        vec![
            (2, "127.0.0.1:9".to_string()),
            (3, "127.0.0.1:10".to_string())
        ]
    );
    assert!(t.remove_peer(2));
    assert!(!t.remove_peer(2));
    assert!(!t.knows(2));
    assert!(matches!(
        t.add_peer(4, "no port"),
        Err(GrpcError::InvalidAddress { id: 4, .. })
    ));
    assert!(matches!(
        t.add_peer(0, "127.0.0.1:1"),
        Err(GrpcError::InvalidAddress { id: 0, .. })
    ));
}

#[tokio::test]
async fn snapshots_to_unknown_or_unreachable_peers_fail() {
    let t = GrpcTransport::new(cfg()).unwrap();
    let msg = |to| Message {
        from: 1,
        to,
        term: 1,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta::default(),
        },
    };
    assert!(matches!(
        t.send_snapshot(msg(9), SnapshotReader::from_bytes(Bytes::from_static(b"x")))
            .await,
        Err(TransportError::Unreachable(9, _))
    ));
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        t.send_snapshot(
            msg(2),
            SnapshotReader::from_bytes(Bytes::from(vec![1u8; 100 << 10])),
        ),
    )
    .await
    .expect("fails in time");
    assert!(matches!(r, Err(TransportError::Unreachable(2, _))), "{r:?}");
    assert!(matches!(
        t.send_snapshot(heartbeat(2), SnapshotReader::from_bytes(Bytes::new()))
            .await,
        Err(TransportError::Other(_))
    ));
}

#[test]
fn the_transport_needs_a_runtime() {
    assert!(matches!(
        GrpcTransport::new(cfg()),
        Err(GrpcError::NoRuntime(_))
    ));
}

#[test]
fn an_invalid_config_is_refused_naming_the_key() {
    let mut c = cfg();
    c.cluster_id.clear();
    match GrpcTransport::new(c) {
        Err(GrpcError::Config(e)) => assert_eq!(e.key, "cluster_id"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
