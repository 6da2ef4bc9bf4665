//! Behaviour of [`SledKvStateMachine`] beyond the conformance suite: it answers and
//! snapshots exactly like the in-memory `KvStateMachine`, and restores atomically.

use bytes::Bytes;
use lockstep_core::state_machine::{KvCommand, KvQuery};
use lockstep_core::{Command, KvStateMachine, LogId, StateMachine, StateMachineError};
use lockstep_storage_sled::{SledKvStateMachine, SledStoreError, KV_DATA_TREE_PREFIX};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A deterministic mix of every command kind, plus a garbage one.
fn workload(n: u64) -> Vec<Command> {
    (1..=n)
        .map(|i| {
            let k = b(&format!("k{}", i % 17));
            let data = match i % 7 {
                0 => KvCommand::Delete { key: k }.encode(),
                1 => KvCommand::Cas {
                    key: k,
                    expected: None,
                    new: Some(b(&format!("c{i}"))),
                }
                .encode(),
                2 => KvCommand::Cas {
                    key: k,
                    expected: Some(b(&format!("v{}", i - 1))),
                    new: None,
                }
                .encode(),
                3 if i % 5 == 0 => Bytes::from_static(b"\x7fgarbage"),
                _ => KvCommand::Put {
                    key: k,
                    value: b(&format!("v{i}")),
                }
                .encode(),
            };
            Command {
                log_id: LogId::new(1 + i / 50, i),
                session: None,
                data,
            }
        })
        .collect()
}

async fn snapshot_of(m: &dyn StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    m.snapshot(&mut out).await.unwrap();
    out
}

fn queries(m: &dyn StateMachine) -> Vec<lockstep_core::CommandResult> {
    (0..20)
        .map(|i| {
            m.query(
                &KvQuery::Get {
                    key: b(&format!("k{i}")),
                }
                .encode(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sled_kv_answers_and_snapshots_exactly_like_kv_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let sled_kv = SledKvStateMachine::open(dir.path()).unwrap();
    let mem = KvStateMachine::new();
    let cmds = workload(300);
    let mut got = Vec::new();
    for part in cmds.chunks(7) {
        got.extend(sled_kv.apply_chunk(part).await.unwrap());
    }
    let want = mem.apply_chunk(&cmds).await.unwrap();
    assert_eq!(got, want);
    assert!(
        got.iter().any(|r| r.is_err()),
        "the workload has a garbage command"
    );
    assert_eq!(queries(&sled_kv), queries(&mem));
    assert_eq!(sled_kv.query(b"\x01bad"), mem.query(b"\x01bad"));
    let snap = snapshot_of(&sled_kv).await;
    assert_eq!(snap, snapshot_of(&mem).await);
    assert_eq!(sled_kv.last_applied(), Some(LogId::new(7, 300)));

    // Snapshots cross over in both directions.
    let other_dir = tempfile::tempdir().unwrap();
    let other = SledKvStateMachine::open(other_dir.path()).unwrap();
    let mem_snap = mem.snapshot_bytes();
    other
        .restore(LogId::new(7, 300), &mut &mem_snap[..])
        .await
        .unwrap();
    assert_eq!(queries(&other), queries(&mem));
    let fresh_mem = KvStateMachine::new();
    fresh_mem.restore_bytes(&snapshot_of(&other).await).unwrap();
    assert_eq!(queries(&fresh_mem), queries(&mem));
}

fn data_trees(db: &sled::Db) -> Vec<String> {
    db.tree_names()
        .into_iter()
        .filter(|n| n.starts_with(KV_DATA_TREE_PREFIX.as_bytes()))
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

#[tokio::test]
async fn sled_kv_restore_is_atomic_durable_and_drops_the_old_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = KvStateMachine::new();
    src.apply_chunk(&workload(100)).await.unwrap();
    let snap = src.snapshot_bytes();
    {
        let m = SledKvStateMachine::open(dir.path()).unwrap();
        m.apply_chunk(&workload(20)).await.unwrap();
        let before = snapshot_of(&m).await;
        // A damaged snapshot: rejected, state and last_applied kept, no tree left behind.
        let mut bad = snap.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let err = m
            .restore(LogId::new(3, 100), &mut &bad[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StateMachineError::InvalidSnapshot(_)),
            "{err}"
        );
        assert_eq!(snapshot_of(&m).await, before);
        assert_eq!(m.last_applied(), Some(LogId::new(1, 20)));
        assert_eq!(data_trees(m.db()), [format!("{KV_DATA_TREE_PREFIX}0")]);
        // A good one replaces everything.
        m.restore(LogId::new(3, 100), &mut &snap[..]).await.unwrap();
        assert_eq!(m.last_applied(), Some(LogId::new(3, 100)));
        assert_eq!(snapshot_of(&m).await, snap);
        assert_eq!(data_trees(m.db()), [format!("{KV_DATA_TREE_PREFIX}1")]);
    }
    let m = SledKvStateMachine::open(dir.path()).unwrap();
    assert_eq!(m.last_applied(), Some(LogId::new(3, 100)));
    assert_eq!(snapshot_of(&m).await, snap);
    assert_eq!(queries(&m), queries(&src));
}

#[tokio::test]
async fn sled_kv_a_tree_left_by_an_interrupted_restore_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let m = SledKvStateMachine::open(dir.path()).unwrap();
        m.apply_chunk(&workload(30)).await.unwrap();
        // What a crash in the middle of a restore leaves: a half-filled next generation.
        let t = m.db().open_tree(format!("{KV_DATA_TREE_PREFIX}1")).unwrap();
        t.insert(b"\x01half", b"written").unwrap();
        m.db().flush().unwrap();
        snapshot_of(&m).await
    };
    let m = SledKvStateMachine::open(dir.path()).unwrap();
    assert_eq!(data_trees(m.db()), [format!("{KV_DATA_TREE_PREFIX}0")]);
    assert_eq!(snapshot_of(&m).await, before);
    assert_eq!(m.last_applied(), Some(LogId::new(1, 30)));
}

#[tokio::test]
async fn sled_kv_entries_at_or_below_last_applied_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let m = SledKvStateMachine::open(dir.path()).unwrap();
    let cmds = workload(10);
    m.apply_chunk(&cmds).await.unwrap();
    let before = snapshot_of(&m).await;
    let again = m.apply_chunk(&cmds[5..]).await.unwrap();
    assert!(again
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.0.contains("already applied"))));
    assert_eq!(snapshot_of(&m).await, before);
    assert_eq!(m.last_applied(), Some(LogId::new(1, 10)));
}

#[test]
fn sled_kv_a_directory_of_another_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state"), b"FKV1").unwrap();
    let err = SledKvStateMachine::open(dir.path()).unwrap_err();
    assert!(matches!(err, SledStoreError::Incompatible { .. }), "{err}");
}
