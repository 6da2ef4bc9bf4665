//! Unit tests of the default handler: sessions, snapshots by policy, verified installs.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;
use crate::state_machine::StateMachineTrait;
use crate::storage::MemSnapshotStore;
use crate::types::ClientSession;

/// Keeps the commands it applied; a snapshot starting with `!` fails to restore.
#[derive(Default)]
struct Log(Mutex<Vec<Vec<u8>>>);

impl StateMachineTrait for Log {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        if command == b"reject" {
            return Err("rejected".into());
        }
        let mut v = self.0.lock().unwrap();
        v.push(command.to_vec());
        Ok(Bytes::from(v.len().to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.lock().unwrap().join(&b","[..])
    }
    fn restore(&self, s: &[u8]) -> Result<(), String> {
        if s.first() == Some(&b'!') {
            return Err("refused".into());
        }
        *self.0.lock().unwrap() = s
            .split(|b| *b == b',')
            .filter(|p| !p.is_empty())
            .map(|p| p.to_vec())
            .collect();
        Ok(())
    }
}

fn handler(
    policy: impl SnapshotPolicy,
) -> (DefaultStateMachineHandler, Arc<Log>, MemSnapshotStore) {
    let m = Arc::new(Log::default());
    let store = MemSnapshotStore::new();
    let h = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m.clone())),
        Arc::new(store.clone()),
        policy,
    );
    (h, m, store)
}

/// The stored snapshot's bytes, read through the streaming reader.
async fn data_of(h: &DefaultStateMachineHandler, meta: &SnapshotMeta) -> Bytes {
    use std::io::Read;
    let mut r = h.snapshot_reader(meta).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    assert_eq!(v.len() as u64, r.len());
    Bytes::from(v)
}

/// Pushes a snapshot into `h` in small pieces, as a transport does.
async fn receive(
    h: &DefaultStateMachineHandler,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), HandlerError> {
    let mut sink = h
        .receive_snapshot(meta)
        .await?
        .expect("the handler wants the data");
    for piece in data.chunks(7) {
        sink.write(piece)?;
    }
    sink.finish()
}

fn cmd(index: Index, data: &'static [u8], session: Option<(u64, u64)>) -> Entry {
    Entry {
        log_id: LogId::new(1, index),
        payload: EntryPayload::Command {
            session: session.map(|(client_id, sequence)| ClientSession {
                client_id,
                sequence,
            }),
            data: Bytes::from_static(data),
        },
    }
}

#[tokio::test]
async fn a_retried_session_command_in_the_same_batch_is_applied_once_thesis_6_3() {
    let (h, m, _) = handler(Never);
    let out = h
        .apply(&[
            cmd(1, b"a", Some((1, 1))),
            cmd(2, b"a", Some((1, 1))),
            cmd(3, b"b", Some((1, 2))),
            cmd(4, b"old", Some((1, 1))),
        ])
        .await
        .unwrap();
    assert_eq!(m.0.lock().unwrap().len(), 2, "a and b applied once each");
    assert_eq!(out[0], (1, Ok(Bytes::from("1"))));
    assert_eq!(
        out[1],
        (2, Ok(Bytes::from("1"))),
        "the retry gets the first answer"
    );
    assert_eq!(out[2], (3, Ok(Bytes::from("2"))));
    assert!(out[3].1.as_ref().unwrap_err().0.contains("stale"));
    assert_eq!(h.applied(), 4);
}

#[tokio::test]
async fn entries_at_or_below_the_applied_index_are_skipped() {
    let (h, m, _) = handler(Never);
    h.apply(&[cmd(1, b"a", None), cmd(2, b"b", None)])
        .await
        .unwrap();
    let out = h
        .apply(&[cmd(2, b"b", None), cmd(3, b"c", None)])
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(m.0.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_policy_triggers_a_snapshot_that_restores_state_and_sessions_7() {
    let (h, _, store) = handler(EntriesSince(3));
    h.apply(&[cmd(1, b"a", Some((5, 1))), cmd(2, b"b", None)])
        .await
        .unwrap();
    assert!(!h.wants_snapshot());
    h.apply(&[cmd(3, b"c", None)]).await.unwrap();
    assert!(h.wants_snapshot());
    let meta = h.build_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(meta.last_log_id, LogId::new(1, 3));
    assert!(!h.wants_snapshot());
    assert!(h.build_snapshot().await.unwrap().is_none(), "nothing new");

    // A new node restores it: same state, and the session table came along.
    let m2 = Arc::new(Log::default());
    let h2 = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m2.clone())),
        Arc::new(store),
        Never,
    );
    assert_eq!(h2.open(Some(&meta)).await.unwrap().applied, 3);
    assert_eq!(m2.0.lock().unwrap().len(), 3);
    let out = h2.apply(&[cmd(4, b"a", Some((5, 1)))]).await.unwrap();
    assert_eq!(
        out[0].1,
        Ok(Bytes::from("1")),
        "duplicate answered from the snapshot's table"
    );
    assert_eq!(m2.0.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_corrupt_snapshot_from_the_leader_is_refused_before_anything_is_replaced_7() {
    let (leader, _, _) = handler(Never);
    leader
        .apply(&[cmd(1, b"x", None), cmd(2, b"y", None)])
        .await
        .unwrap();
    let meta = leader.build_snapshot().await.unwrap().unwrap();
    let data = data_of(&leader, &meta).await;

    let (follower, fm, fstore) = handler(Never);
    follower.apply(&[cmd(1, b"q", None)]).await.unwrap();
    let mut bad = data.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let err = receive(&follower, &meta, &bad).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // Cut short, or with bytes after the end: refused too.
    let err = receive(&follower, &meta, &data[..data.len() - 3])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut long = data.to_vec();
    long.push(0);
    assert!(receive(&follower, &meta, &long).await.is_err());
    assert!(
        follower.install_snapshot(&meta).await.is_err(),
        "nothing to install"
    );
    assert_eq!(
        *fm.0.lock().unwrap(),
        vec![b"q".to_vec()],
        "old state intact"
    );

    assert!(
        fstore.list().unwrap().is_empty(),
        "nothing rejected was stored"
    );

    receive(&follower, &meta, &data).await.unwrap();
    assert!(
        fstore.list().unwrap().is_empty(),
        "a received snapshot is staged, not stored, until it is installed"
    );
    assert!(
        follower.receive_snapshot(&meta).await.unwrap().is_none(),
        "a resent snapshot already received needs no data"
    );
    follower.install_snapshot(&meta).await.unwrap();
    assert!(
        follower.receive_snapshot(&meta).await.unwrap().is_none(),
        "nor one already installed"
    );
    assert_eq!(fm.0.lock().unwrap().len(), 2);
    assert_eq!(follower.applied(), 2);
    assert_eq!(fstore.load(meta.last_log_id).unwrap(), Some(data));
}

#[tokio::test]
async fn a_snapshot_the_machine_cannot_restore_leaves_the_old_state_and_applied_index() {
    let (h, m, _) = handler(Never);
    // Past the follower's applied index (a snapshot it is at or past is not needed at all).
    h.apply(&[cmd(1, b"!bad", None), cmd(2, b"y", None)])
        .await
        .unwrap();
    let meta = h.build_snapshot().await.unwrap().unwrap();
    let data = data_of(&h, &meta).await;

    let (f, fm, fstore) = handler(Never);
    f.apply(&[cmd(1, b"keep", None)]).await.unwrap();
    receive(&f, &meta, &data).await.unwrap();
    assert!(f.install_snapshot(&meta).await.is_err());
    assert_eq!(*fm.0.lock().unwrap(), vec![b"keep".to_vec()]);
    assert_eq!(f.applied(), 1);
    assert!(
        fstore.list().unwrap().is_empty(),
        "a failed install stores nothing"
    );
    drop(m);
}

#[tokio::test]
async fn a_rejected_command_is_an_answer_not_an_error() {
    let (h, _, _) = handler(Never);
    let out = h.apply(&[cmd(1, b"reject", None)]).await.unwrap();
    assert_eq!(out[0].1, Err(CommandError("rejected".into())));
}

#[tokio::test]
async fn a_missing_recorded_snapshot_falls_back_to_a_newer_stored_one() {
    let (h, _, store) = handler(Never);
    h.apply(&[cmd(1, b"a", None)]).await.unwrap();
    let old = h.build_snapshot().await.unwrap().unwrap();
    h.apply(&[cmd(2, b"b", None)]).await.unwrap();
    let new = h.build_snapshot().await.unwrap().unwrap();
    // A crash after `new` was stored but before it was recorded, with `old` deleted.
    let store2 = MemSnapshotStore::new();
    let data = store.load(new.last_log_id).unwrap().unwrap();
    store2.save(&new, data).unwrap();
    let m2 = Arc::new(Log::default());
    let h2 = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m2.clone())),
        Arc::new(store2),
        Never,
    );
    let opened = h2.open(Some(&old)).await.unwrap();
    assert_eq!(opened.snapshot, Some(new));
    assert_eq!(opened.applied, 2);
    assert_eq!(m2.0.lock().unwrap().len(), 2);
    // With nothing newer stored, the missing snapshot is an error naming it.
    let (h3, _, _) = handler(Never);
    let err = h3.open(Some(&old)).await.unwrap_err();
    assert!(
        matches!(err, HandlerError::MissingSnapshot(id) if id == old.last_log_id),
        "{err}"
    );
}

#[tokio::test]
async fn a_stored_snapshot_damaged_at_rest_is_refused_at_open_before_anything_is_replaced() {
    let (h, _, store) = handler(Never);
    h.apply(&[cmd(1, b"a", None), cmd(2, b"b", None)])
        .await
        .unwrap();
    let meta = h.build_snapshot().await.unwrap().unwrap();
    let mut data = store.load(meta.last_log_id).unwrap().unwrap().to_vec();
    // The last byte of the machine's data (before the end frame and the checksum).
    let n = data.len();
    data[n - 9] ^= 0x10;
    let damaged = MemSnapshotStore::new();
    damaged.save(&meta, Bytes::from(data)).unwrap();
    let m2 = Arc::new(Log::default());
    m2.0.lock().unwrap().push(b"old".to_vec());
    let h2 = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m2.clone())),
        Arc::new(damaged),
        Never,
    );
    let err = h2.open(Some(&meta)).await.unwrap_err();
    assert!(
        matches!(err, HandlerError::BadSnapshot { .. }) && err.to_string().contains("checksum"),
        "{err}"
    );
    assert_eq!(*m2.0.lock().unwrap(), vec![b"old".to_vec()]);
}

#[tokio::test]
async fn a_large_machine_snapshot_round_trips_through_the_streaming_envelope() {
    let (h, m, store) = handler(Never);
    // Large enough for many envelope frames.
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    h.apply(&[cmd(1, big, None), cmd(2, b"tail", None)])
        .await
        .unwrap();
    let meta = h.build_snapshot().await.unwrap().unwrap();
    let m2 = Arc::new(Log::default());
    let h2 = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m2.clone())),
        Arc::new(store),
        Never,
    );
    assert_eq!(h2.open(Some(&meta)).await.unwrap().applied, 2);
    assert_eq!(*m2.0.lock().unwrap(), *m.0.lock().unwrap());
}
