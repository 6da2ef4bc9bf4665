//! Memory under attack from the network: a snapshot stream whose envelope announces a
//! header of almost 4 GiB is refused at its first bytes, without buffering them (measured
//! by this test process's peak resident set; this file holds one test, so nothing else
//! runs in the process while it measures).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use lockstep_core::MembershipConfig;
use lockstep_transport_grpc::proto::peer as pb;
use lockstep_transport_grpc::proto::peer::peer_client::PeerClient;

const MIB: usize = 1 << 20;

/// Peak resident set of this process so far, in bytes (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn data(offset: u64, bytes: Bytes) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        frame: Some(pb::snapshot_chunk::Frame::Data(pb::SnapshotData {
            offset,
            crc32c: crc32c::crc32c(&bytes),
            data: bytes,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_announcing_a_4_gib_header_is_refused_without_buffering_it() {
    let mut cfg = config(1, None);
    cfg.peers.insert(2, "127.0.0.1:1".into());
    let node = start_node(cfg, Some(MembershipConfig::new_voters([1, 2]))).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut peer = PeerClient::new(channel)
        .max_encoding_message_size(64 * MIB)
        .max_decoding_message_size(64 * MIB);
    let before = peak_rss();

    // A snapshot far ahead of the node, so it wants the data; 5 GiB announced in total.
    let begin = snapshot_begin(2, 1, 5, vec![1, 2], 5 << 30);
    // The envelope prefix: magic, a header length of 0xFFFF_FFFF, a checksum; then header
    // bytes, 1 MiB a frame, up to 512 MiB (generated as the stream is sent).
    let mut first = b"LSSNAP03".to_vec();
    first.extend_from_slice(&u32::MAX.to_le_bytes());
    first.extend_from_slice(&0u32.to_le_bytes());
    first.resize(MIB, 0);
    let frames = std::iter::once(begin).chain((0..512u64).map(move |i| {
        let bytes = if i == 0 {
            Bytes::from(first.clone())
        } else {
            Bytes::from(vec![0u8; MIB])
        };
        data(i * MIB as u64, bytes)
    }));
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        peer.install_snapshot(tokio_stream::iter(frames)),
    )
    .await
    .expect("the node answers");
    let status = answer.expect_err("the snapshot is refused");
    assert!(
        status.message().contains("max_snapshot_header_bytes"),
        "the refusal names the limit: {status:?}"
    );
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB", grown >> 20);
    assert!(
        grown < 128 * MIB as u64,
        "peak RSS grew by {} MiB while refusing the snapshot",
        grown >> 20
    );
    // The node still works.
    assert!(node.node.status().stopped.is_none());
}
