//! Point-in-time views of [`RocksKvStateMachine`] (`StateMachine::snapshot_view`, a RocksDB
//! snapshot streamed by a thread of its own): the view writes the state of the moment it
//! was taken, byte for byte, while puts, deletes, re-creations, CAS and even a restore go
//! on — also *during* `write_to`, between the pieces it writes.

use std::io::Write;
use std::sync::Arc;

use lockstep_core::testing::snapshot_views::*;
use lockstep_core::{KvStateMachine, LogId, StateMachine};
use lockstep_storage_rocksdb::RocksKvStateMachine;

#[tokio::test]
async fn rocks_view_writes_the_state_of_its_moment_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(RocksKvStateMachine::open(dir.path()).unwrap());
    let reference = KvStateMachine::new();
    let keys = 4000;
    let first = load(keys);
    m.apply_chunk(&first).await.unwrap();
    reference.apply_chunk(&first).await.unwrap();
    let then = answers(&*m, keys);
    let expected = reference.snapshot_bytes();
    assert_eq!(snapshot_of(&*m).await, expected);

    let view = m.view().unwrap();
    assert_eq!(view.last_applied(), Some(LogId::new(1, keys / 2)));
    // Writes before write_to starts...
    let before = churn(keys / 2 + 1, 800, keys, 1);
    m.apply_chunk(&before).await.unwrap();
    assert_eq!(view.len(), keys / 2);
    // ...and between its pieces.
    let during = churn(keys / 2 + 2000, 3000, keys, 2);
    let (out, applied) = write_while_applying(
        Box::new(view),
        m.clone(),
        during.chunks(50).map(<[_]>::to_vec).collect(),
    );
    assert!(
        applied > 5,
        "only {applied} chunks were applied during the write"
    );
    assert_eq!(out, expected, "the view is not the state of its moment");

    // The live state moved on (so a view of live data would have failed the check above).
    assert_ne!(answers(&*m, keys), then);
    assert_ne!(snapshot_of(&*m).await, expected);
    assert!(m.last_applied().is_some_and(|l| l.index > keys / 2 + 2000));

    // The view restores into a fresh machine, with the answers of its moment.
    let other = tempfile::tempdir().unwrap();
    let fresh = RocksKvStateMachine::open(other.path()).unwrap();
    fresh
        .restore(LogId::new(1, keys / 2), &mut &out[..])
        .await
        .unwrap();
    assert_eq!(answers(&fresh, keys), then);
    assert_eq!(fresh.last_applied(), Some(LogId::new(1, keys / 2)));
}

#[tokio::test]
async fn rocks_views_match_the_in_memory_kv_under_random_churn() {
    views_match_the_in_memory_kv_under_random_churn(|dir| {
        RocksKvStateMachine::open(dir).expect("opens")
    })
    .await;
}

#[tokio::test]
async fn rocks_view_survives_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(RocksKvStateMachine::open(dir.path()).unwrap());
    m.apply_chunk(&load(400)).await.unwrap();
    let expected = snapshot_of(&*m).await;
    let then = answers(&*m, 400);
    let view = m.snapshot_view().unwrap();

    // Another state replaces this one while the view lives, and moves on.
    let src = KvStateMachine::new();
    src.apply_chunk(&churn(1, 300, 400, 9)).await.unwrap();
    m.restore(LogId::new(2, 5000), &mut &src.snapshot_bytes()[..])
        .await
        .unwrap();
    m.apply_chunk(&churn(5001, 200, 400, 10)).await.unwrap();
    let mut out = Vec::new();
    view.write_to(&mut out).unwrap();
    assert_eq!(out, expected);
    let other = tempfile::tempdir().unwrap();
    let fresh = RocksKvStateMachine::open(other.path()).unwrap();
    fresh
        .restore(LogId::new(1, 200), &mut &out[..])
        .await
        .unwrap();
    assert_eq!(answers(&fresh, 400), then);
}

#[tokio::test]
async fn rocks_view_dropped_unwritten_ends_its_thread_and_the_database_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    m.apply_chunk(&load(100)).await.unwrap();
    let view = m.view().unwrap();
    drop(view);
    m.apply_chunk(&churn(51, 100, 100, 4)).await.unwrap();
    let a = snapshot_of(&m).await;
    let mut b = Vec::new();
    m.snapshot_view().unwrap().write_to(&mut b).unwrap();
    assert_eq!(a, b);
    // Every view thread has let go of the database: it opens again once the machine is
    // dropped.
    drop(m);
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    assert_eq!(snapshot_of(&m).await, a);
}

/// A writer failing on its first write.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn rocks_view_reports_a_failing_writer_and_stops_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    m.apply_chunk(&load(2000)).await.unwrap();
    let view = m.snapshot_view().unwrap();
    let err = view.write_to(&mut Broken).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    drop(m);
    RocksKvStateMachine::open(dir.path()).unwrap();
}
