//! Point-in-time views of [`SledKvStateMachine`] (`StateMachine::snapshot_view`): the view
//! writes the state of the moment it was taken, byte for byte, while puts, deletes,
//! re-creations, CAS and even a restore go on — also *during* `write_to`, between the
//! pieces it writes.

use std::sync::Arc;

use lockstep_core::testing::snapshot_views::*;
use lockstep_core::{KvStateMachine, LogId, StateMachine};
use lockstep_storage_sled::{SledKvStateMachine, KV_DATA_TREE_PREFIX};

#[tokio::test]
async fn sled_view_writes_the_state_of_its_moment_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SledKvStateMachine::open(dir.path()).unwrap());
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
    assert!(view.overlay_len() > 0);
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
    assert_eq!(m.live_views(), 0);

    // The view restores into a fresh machine, with the answers of its moment.
    let other = tempfile::tempdir().unwrap();
    let fresh = SledKvStateMachine::open(other.path()).unwrap();
    fresh
        .restore(LogId::new(1, keys / 2), &mut &out[..])
        .await
        .unwrap();
    assert_eq!(answers(&fresh, keys), then);
    assert_eq!(fresh.last_applied(), Some(LogId::new(1, keys / 2)));
}

#[tokio::test]
async fn sled_views_match_the_in_memory_kv_under_random_churn() {
    views_match_the_in_memory_kv_under_random_churn(|dir| {
        SledKvStateMachine::open(dir).expect("opens")
    })
    .await;
}

#[tokio::test]
async fn sled_view_survives_a_restore_and_the_old_tree_is_dropped_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(SledKvStateMachine::open(dir.path()).unwrap());
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
    let data_trees = |m: &SledKvStateMachine| {
        m.db()
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(KV_DATA_TREE_PREFIX.as_bytes()))
            .count()
    };
    assert_eq!(data_trees(&m), 2, "the view's tree is kept while it lives");

    let mut out = Vec::new();
    view.write_to(&mut out).unwrap();
    assert_eq!(out, expected);
    assert_eq!(
        data_trees(&m),
        1,
        "the replaced tree is dropped with the last view"
    );
    let other = tempfile::tempdir().unwrap();
    let fresh = SledKvStateMachine::open(other.path()).unwrap();
    fresh
        .restore(LogId::new(1, 200), &mut &out[..])
        .await
        .unwrap();
    assert_eq!(answers(&fresh, 400), then);
}

#[tokio::test]
async fn sled_view_dropped_unwritten_costs_nothing_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let m = SledKvStateMachine::open(dir.path()).unwrap();
    m.apply_chunk(&load(100)).await.unwrap();
    let view = m.view().unwrap();
    assert_eq!(m.live_views(), 1);
    drop(view);
    assert_eq!(m.live_views(), 0);
    m.apply_chunk(&churn(51, 100, 100, 4)).await.unwrap();
    // The snapshot (itself written through a view) still matches a fresh view.
    let a = snapshot_of(&m).await;
    let mut b = Vec::new();
    m.snapshot_view().unwrap().write_to(&mut b).unwrap();
    assert_eq!(a, b);
}
