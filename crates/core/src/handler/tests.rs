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
        Arc::new(crate::state_machine::MinimalStateMachine::new(m.clone())),
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
        Arc::new(crate::state_machine::MinimalStateMachine::new(m2.clone())),
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
        Arc::new(crate::state_machine::MinimalStateMachine::new(m2.clone())),
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
        Arc::new(crate::state_machine::MinimalStateMachine::new(m2.clone())),
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
        Arc::new(crate::state_machine::MinimalStateMachine::new(m2.clone())),
        Arc::new(store),
        Never,
    );
    assert_eq!(h2.open(Some(&meta)).await.unwrap().applied, 2);
    assert_eq!(*m2.0.lock().unwrap(), *m.0.lock().unwrap());
}

/// A KV (`SET k v`) that persists itself: its state and last applied entry survive a
/// "restart" (a new handler over the same machine), as the sled and RocksDB machines do.
#[derive(Default)]
struct Persisting(Mutex<KvImage>);

/// The persisted map and the last entry applied to it.
type KvImage = (std::collections::BTreeMap<Vec<u8>, Vec<u8>>, LogId);

impl Persisting {
    fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().unwrap().0.get(k).cloned()
    }
}

#[async_trait]
impl StateMachine for Persisting {
    async fn apply(&self, c: &Command) -> Result<CommandResult, crate::error::StateMachineError> {
        let mut parts = c.data.splitn(3, |b| *b == b' ');
        let (Some(b"SET"), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(Err(CommandError("unknown command".into())));
        };
        let mut g = self.0.lock().unwrap();
        let prev = g.0.insert(k.to_vec(), v.to_vec());
        g.1 = c.log_id;
        Ok(Ok(Bytes::from(prev.unwrap_or_default())))
    }
    fn query(&self, q: &[u8]) -> CommandResult {
        Ok(Bytes::from(self.get(q).unwrap_or_default()))
    }
    async fn snapshot(
        &self,
        out: &mut (dyn Write + Send),
    ) -> Result<(), crate::error::StateMachineError> {
        let g = self.0.lock().unwrap();
        for (k, v) in &g.0 {
            out.write_all(&[k.as_slice(), b"=", v.as_slice(), b"\n"].concat())
                .map_err(|e| crate::error::StateMachineError::Other(e.to_string()))?;
        }
        Ok(())
    }
    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn std::io::Read + Send),
    ) -> Result<(), crate::error::StateMachineError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| crate::error::StateMachineError::Other(e.to_string()))?;
        let mut g = self.0.lock().unwrap();
        g.0 = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let i = l.iter().position(|b| *b == b'=')?;
                Some((l[..i].to_vec(), l[i + 1..].to_vec()))
            })
            .collect();
        g.1 = last;
        Ok(())
    }
    fn last_applied(&self) -> Option<LogId> {
        Some(self.0.lock().unwrap().1)
    }
}

/// Regression (sessions lost on restart): a self-persisting machine that restarts with no
/// newer snapshot must still recognise a client's retry of a command it applied before the
/// restart. Before the fix, `open` reported the machine's own index as applied, the
/// session records of the entries after the snapshot were never rebuilt, and the retry of
/// (client 7, seq 1) set `k` back to "a" on this replica only.
#[tokio::test]
async fn a_retry_after_a_restart_of_a_self_persisting_machine_is_not_applied_again_thesis_6_3() {
    for with_snapshot in [false, true] {
        let m = Arc::new(Persisting::default());
        let store = MemSnapshotStore::new();
        let start = || {
            DefaultStateMachineHandler::new(
                Arc::new(crate::state_machine::SharedStateMachine(m.clone())),
                Arc::new(store.clone()),
                Never,
            )
        };
        let log = [
            cmd(1, b"SET x 1", None),
            cmd(2, b"SET k a", Some((7, 1))),
            cmd(3, b"SET k b", Some((8, 1))),
        ];
        let h = start();
        assert_eq!(h.open(None).await.unwrap().applied, 0);
        h.apply(&log[..1]).await.unwrap();
        let snap = if with_snapshot {
            h.build_snapshot().await.unwrap()
        } else {
            None
        };
        h.apply(&log[1..]).await.unwrap();
        drop(h);

        // Restart: the runtime feeds the log again from the applied index `open` reports.
        let h = start();
        let opened = h.open(snap.as_ref()).await.unwrap();
        assert_eq!(opened.applied, u64::from(with_snapshot), "{with_snapshot}");
        assert_eq!(h.applied(), opened.applied);
        assert!(
            h.build_snapshot().await.unwrap().is_none(),
            "no snapshot while the machine is ahead of the session records"
        );
        let again = h.apply(&log[opened.applied as usize..]).await.unwrap();
        assert!(
            again.iter().all(|(_, r)| r.is_err()),
            "entries the machine holds are not applied again: {again:?}"
        );
        assert_eq!(m.get(b"k").as_deref(), Some(&b"b"[..]));

        let out = h.apply(&[cmd(4, b"SET k a", Some((7, 1)))]).await.unwrap();
        assert_eq!(
            m.get(b"k").as_deref(),
            Some(&b"b"[..]),
            "the retry of (7, 1) was applied a second time (snapshot: {with_snapshot})"
        );
        assert!(out[0].1.is_err(), "{out:?}");
        assert_eq!(h.applied(), 4);
        let fresh = h.apply(&[cmd(5, b"SET k c", Some((7, 2)))]).await.unwrap();
        assert_eq!(fresh[0].1, Ok(Bytes::from("b")));
        assert!(h.build_snapshot().await.unwrap().is_some());
    }
}

/// A snapshot store whose next staged commit fails once (a full disk, say).
#[derive(Clone, Default)]
struct FailingCommit {
    inner: MemSnapshotStore,
    fail_next: Arc<std::sync::atomic::AtomicBool>,
}

struct FailingWriter(Box<dyn SnapshotWriter>, Arc<std::sync::atomic::AtomicBool>);
struct FailingStaged(Box<dyn StagedSnapshot>, Arc<std::sync::atomic::AtomicBool>);

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl SnapshotWriter for FailingWriter {
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedSnapshot>, StorageError> {
        Ok(Box::new(FailingStaged(self.0.finish()?, self.1)))
    }
}

impl StagedSnapshot for FailingStaged {
    fn reader(&self) -> Result<SnapshotReader, StorageError> {
        self.0.reader()
    }
    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        if self.1.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::Other("injected: commit failed".into()));
        }
        self.0.commit()
    }
}

impl SnapshotStore for FailingCommit {
    fn writer(&self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::new(FailingWriter(
            self.inner.writer(meta)?,
            self.fail_next.clone(),
        )))
    }
    fn reader(&self, last: LogId) -> Result<Option<SnapshotReader>, StorageError> {
        self.inner.reader(last)
    }
    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        self.inner.list()
    }
    fn retain(&self, keep: usize) -> Result<(), StorageError> {
        self.inner.retain(keep)
    }
}

/// Regression (follower livelock): a staged commit that fails once must leave the follower
/// able to take the leader's next attempt. Before the fix the machine was restored first,
/// so the applied index was already past the snapshot: every resend was answered "not
/// needed" and every install failed with `MissingSnapshot`, forever.
#[tokio::test]
async fn a_failed_snapshot_commit_leaves_the_follower_able_to_take_the_resend_7() {
    let (leader, _, _) = handler(Never);
    leader
        .apply(&[cmd(1, b"x", None), cmd(2, b"y", None)])
        .await
        .unwrap();
    let meta = leader.build_snapshot().await.unwrap().unwrap();
    let data = data_of(&leader, &meta).await;

    let fm = Arc::new(Log::default());
    let store = FailingCommit::default();
    let f = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::MinimalStateMachine::new(fm.clone())),
        Arc::new(store.clone()),
        Never,
    );
    f.apply(&[cmd(1, b"q", None)]).await.unwrap();
    store
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    receive(&f, &meta, &data).await.unwrap();
    let err = f.install_snapshot(&meta).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(f.applied(), 1, "nothing replaced by a failed install");
    assert_eq!(*fm.0.lock().unwrap(), vec![b"q".to_vec()]);

    // The leader resends: the follower wants the data again and installs it.
    receive(&f, &meta, &data).await.unwrap();
    f.install_snapshot(&meta).await.unwrap();
    assert_eq!(f.applied(), 2);
    assert_eq!(fm.0.lock().unwrap().len(), 2);
    // A resent message after the install is answered without data and installs nothing.
    assert!(f.receive_snapshot(&meta).await.unwrap().is_none());
    f.install_snapshot(&meta).await.unwrap();
}

/// The seed's "WAL-backed" pattern as a minimal machine: it persists every command with the
/// log position it came from, and reports that position after a restart.
#[derive(Default)]
struct WalCounter(Mutex<(i64, LogId)>);

impl StateMachineTrait for WalCounter {
    fn apply(&self, _command: &[u8]) -> Result<Bytes, String> {
        Err("apply_at is used".into())
    }
    fn apply_at(&self, at: LogId, command: &[u8]) -> Result<Bytes, String> {
        let mut g = self.0.lock().unwrap();
        if command == b"INCREMENT" {
            g.0 += 1;
        }
        g.1 = at;
        Ok(Bytes::from(g.0.to_string()))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.lock().unwrap().0.to_le_bytes().to_vec()
    }
    fn restore(&self, _s: &[u8]) -> Result<(), String> {
        Err("restore_at is used".into())
    }
    fn restore_at(&self, last: LogId, s: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = s.try_into().map_err(|_| "bad snapshot")?;
        *self.0.lock().unwrap() = (i64::from_le_bytes(b), last);
        Ok(())
    }
    fn last_applied(&self) -> Option<LogId> {
        Some(self.0.lock().unwrap().1)
    }
}

/// Regression (a self-persisting minimal machine was applied twice): the minimal trait had
/// no `last_applied`, so after a restart the handler replayed the whole log on top of what
/// the machine already held.
#[tokio::test]
async fn a_self_persisting_minimal_machine_restarted_mid_log_is_not_applied_again() {
    let m = Arc::new(WalCounter::default());
    let store = MemSnapshotStore::new();
    let start = || {
        DefaultStateMachineHandler::new(
            Arc::new(crate::state_machine::MinimalStateMachine::new(m.clone())),
            Arc::new(store.clone()),
            Never,
        )
    };
    let log: Vec<Entry> = (1..=6).map(|i| cmd(i, b"INCREMENT", None)).collect();
    let h = start();
    h.open(None).await.unwrap();
    h.apply(&log[..2]).await.unwrap();
    let snap = h.build_snapshot().await.unwrap().unwrap();
    h.apply(&log[2..4]).await.unwrap();
    drop(h);
    assert_eq!(m.0.lock().unwrap().0, 4);

    // Restart mid-log (the runtime feeds from the applied index open reports).
    let h = start();
    let opened = h.open(Some(&snap)).await.unwrap();
    h.apply(&log[opened.applied as usize..]).await.unwrap();
    assert_eq!(
        m.0.lock().unwrap().0,
        6,
        "entries 3 and 4 were applied a second time (or 5 and 6 not at all)"
    );
    assert_eq!(h.applied(), 6);
}

/// A journal whose snapshot view writes only when released, to see what waits for it.
#[derive(Default)]
struct GatedViews {
    log: Mutex<Vec<u8>>,
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    taken: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

struct GatedView(Vec<u8>, Option<std::sync::mpsc::Receiver<()>>);

impl crate::state_machine::SnapshotView for GatedView {
    fn write_to(
        self: Box<Self>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), crate::error::StateMachineError> {
        if let Some(gate) = &self.1 {
            let _ = gate.recv();
        }
        out.write_all(&self.0)
            .map_err(|e| crate::error::StateMachineError::Other(e.to_string()))
    }
}

#[async_trait]
impl StateMachine for GatedViews {
    async fn apply(&self, c: &Command) -> Result<CommandResult, crate::error::StateMachineError> {
        let mut l = self.log.lock().unwrap();
        l.extend_from_slice(&c.data);
        Ok(Ok(Bytes::from(l.len().to_string())))
    }
    fn query(&self, _: &[u8]) -> CommandResult {
        Ok(Bytes::from(self.log.lock().unwrap().clone()))
    }
    async fn snapshot(
        &self,
        out: &mut (dyn Write + Send),
    ) -> Result<(), crate::error::StateMachineError> {
        let data = self.log.lock().unwrap().clone();
        out.write_all(&data)
            .map_err(|e| crate::error::StateMachineError::Other(e.to_string()))
    }
    fn snapshot_view(&self) -> Option<Box<dyn crate::state_machine::SnapshotView>> {
        let data = self.log.lock().unwrap().clone();
        if let Some(t) = self.taken.lock().unwrap().take() {
            let _ = t.send(());
        }
        Some(Box::new(GatedView(data, self.gate.lock().unwrap().take())))
    }
    async fn restore(
        &self,
        _: LogId,
        input: &mut (dyn std::io::Read + Send),
    ) -> Result<(), crate::error::StateMachineError> {
        let mut v = Vec::new();
        input
            .read_to_end(&mut v)
            .map_err(|e| crate::error::StateMachineError::Other(e.to_string()))?;
        *self.log.lock().unwrap() = v;
        Ok(())
    }
}

/// A snapshot of a machine with a point-in-time view is written while commands go on
/// applying (snapshots do not stall writes), and holds the state of the moment it was
/// taken (§7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_apply_while_a_point_in_time_snapshot_is_written_7() {
    let (release, gate) = std::sync::mpsc::channel();
    let (taken_tx, taken) = std::sync::mpsc::channel();
    let m = Arc::new(GatedViews {
        log: Mutex::default(),
        gate: Mutex::new(Some(gate)),
        taken: Mutex::new(Some(taken_tx)),
    });
    let store = MemSnapshotStore::new();
    let h = Arc::new(DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m.clone())),
        Arc::new(store.clone()),
        Never,
    ));
    h.apply(&[cmd(1, b"a", None), cmd(2, b"b", None)])
        .await
        .unwrap();
    let building = {
        let h = h.clone();
        tokio::spawn(async move { h.build_snapshot().await })
    };
    // The view is taken; its write waits for the gate. Commands still apply.
    tokio::task::spawn_blocking(move || taken.recv())
        .await
        .unwrap()
        .unwrap();
    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        h.apply(&[cmd(3, b"c", None)]),
    )
    .await
    .expect("an apply waited for the snapshot to be written")
    .unwrap();
    assert_eq!(applied[0].1, Ok(Bytes::from("3")));
    release.send(()).unwrap();
    let meta = building.await.unwrap().unwrap().expect("a snapshot");
    assert_eq!(meta.last_log_id, LogId::new(1, 2), "taken before entry 3");

    // It holds the state of its moment: restored elsewhere, "ab" and the sessions.
    let m2 = Arc::new(GatedViews::default());
    let h2 = DefaultStateMachineHandler::new(
        Arc::new(crate::state_machine::SharedStateMachine(m2.clone())),
        Arc::new(store),
        Never,
    );
    assert_eq!(h2.open(Some(&meta)).await.unwrap().applied, 2);
    assert_eq!(*m2.log.lock().unwrap(), b"ab".to_vec());
}
