//! The client-session table is bounded (thesis §6.3, sessions; issue: bounded resources):
//! large results are not retained, the table is capped by count and bytes, eviction is
//! deterministic, and a retry of a command whose result was not kept is answered with an
//! error, never applied twice.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::handler::{DefaultStateMachineHandler, EntriesSince, StateMachineHandler};
use lockstep_core::state_machine::{KvCommand, KvResponse};
use lockstep_core::storage::MemSnapshotStore;
use lockstep_core::{ClientSession, Entry, EntryPayload, KvStateMachine, LogId, SessionLimits};

const MIB: usize = 1 << 20;

fn put(index: u64, client: u64, value: Bytes) -> Entry {
    Entry {
        log_id: LogId::new(1, index),
        payload: EntryPayload::Command {
            session: Some(ClientSession {
                client_id: client,
                sequence: 1,
            }),
            data: KvCommand::Put {
                key: Bytes::from_static(b"k"),
                value,
            }
            .encode(),
        },
    }
}

fn handler(limits: SessionLimits) -> (DefaultStateMachineHandler, Arc<KvStateMachine>) {
    let kv = Arc::new(KvStateMachine::new());
    let h = DefaultStateMachineHandler::new(
        kv.clone(),
        Arc::new(MemSnapshotStore::new()),
        EntriesSince(u64::MAX),
    )
    .session_limits(limits);
    (h, kv)
}

/// Resident set of this process, in bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes of the handler's latest snapshot envelope (the session table travels in it).
async fn snapshot_len(h: &DefaultStateMachineHandler) -> u64 {
    let meta = h.build_snapshot().await.unwrap().expect("a snapshot");
    let mut r = h.snapshot_reader(&meta).await.unwrap();
    let mut sink = Vec::new();
    r.read_to_end(&mut sink).unwrap();
    sink.len() as u64
}

/// Applies 1,000 puts of 1 MiB to one key from 1,000 clients: each put's result is the
/// previous 1 MiB value.
async fn thousand_big_results(h: &DefaultStateMachineHandler) -> Vec<Bytes> {
    let mut firsts = Vec::new();
    for i in 1..=1000u64 {
        let value = Bytes::from(vec![(i % 251) as u8; MIB]);
        let out = h.apply(&[put(i, i, value)]).await.unwrap();
        let r = out[0].1.clone().unwrap();
        if i <= 2 {
            firsts.push(r);
        }
    }
    firsts
}

#[tokio::test]
async fn a_thousand_sessions_with_1_mib_results_keep_memory_bounded_thesis_6_3() {
    let before = rss_bytes();
    let (h, _kv) = handler(SessionLimits::default());
    let firsts = thousand_big_results(&h).await;
    // The first put had no previous value; the second's answer is the first value: the
    // caller always gets the full result.
    assert_eq!(
        KvResponse::decode(&firsts[1]).unwrap(),
        KvResponse::Value(Some(Bytes::from(vec![1u8; MIB])))
    );
    // 1,000 results of 1 MiB are not kept: the snapshot (which carries the session
    // table) holds one 1 MiB value and small records.
    let len = snapshot_len(&h).await;
    assert!(
        len < 2 * MIB as u64,
        "snapshot of {len} bytes: session results were retained"
    );
    if let (Some(b), Some(a)) = (before, rss_bytes()) {
        let grown = a.saturating_sub(b);
        eprintln!("RSS grew by {} MiB", grown >> 20);
        assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    }
    // A retry of a command whose result was dropped is answered, not applied again.
    let retry = h
        .apply(&[put(1001, 500, Bytes::from_static(b"again"))])
        .await
        .unwrap();
    let err = retry[0].1.clone().unwrap_err();
    assert!(err.0.contains("result no longer available"), "{err}");
    assert!(err.0.contains("max_result_bytes"), "{err}");
}

#[tokio::test]
async fn retained_results_are_capped_by_bytes_with_the_oldest_sessions_evicted() {
    // Results up to 2 MiB are kept, but the table holds at most 16 MiB.
    let limits = SessionLimits {
        max_clients: 100_000,
        max_bytes: 16 * MIB as u64,
        max_result_bytes: 2 * MIB,
    };
    let (h, _kv) = handler(limits);
    thousand_big_results(&h).await;
    let len = snapshot_len(&h).await;
    assert!(
        len <= 18 * MIB as u64,
        "snapshot of {len} bytes exceeds the 16 MiB session bound plus the state"
    );
    assert!(
        len > 10 * MIB as u64,
        "recent results are kept ({len} bytes)"
    );
    // The newest client's record is kept: its retry is a duplicate with the same answer.
    let dup = h
        .apply(&[put(1001, 1000, Bytes::from_static(b"again"))])
        .await
        .unwrap();
    assert_eq!(
        KvResponse::decode(dup[0].1.as_ref().unwrap()).unwrap(),
        KvResponse::Value(Some(Bytes::from(vec![(999 % 251) as u8; MIB])))
    );
}

#[tokio::test]
async fn two_replicas_with_the_same_limits_evict_the_same_sessions_and_snapshot_identically() {
    let limits = SessionLimits {
        max_clients: 10,
        max_bytes: 1 << 20,
        max_result_bytes: 1 << 10,
    };
    let (a, _) = handler(limits);
    let (b, _) = handler(limits);
    let entries: Vec<Entry> = (1..=50u64)
        .map(|i| put(i, (i * 7919) % 23 + 1, Bytes::from(vec![i as u8; 100])))
        .collect();
    // One replica applies in one batch, the other one entry at a time.
    a.apply(&entries).await.unwrap();
    for e in &entries {
        b.apply(std::slice::from_ref(e)).await.unwrap();
    }
    let ma = a.build_snapshot().await.unwrap().unwrap();
    let mb = b.build_snapshot().await.unwrap().unwrap();
    let mut da = Vec::new();
    a.snapshot_reader(&ma)
        .await
        .unwrap()
        .read_to_end(&mut da)
        .unwrap();
    let mut db = Vec::new();
    b.snapshot_reader(&mb)
        .await
        .unwrap()
        .read_to_end(&mut db)
        .unwrap();
    assert_eq!(da, db, "identical session tables and data");
}
