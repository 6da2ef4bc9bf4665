//! The `StateMachineTestSuite` (durable: reopen, idempotent re-apply and the real-crash
//! check included) and its performance check on [`RocksKvStateMachine`], plus checks that
//! it answers exactly like the in-memory `KvStateMachine`, that snapshots are consistent
//! and do not block applies, and that restores persist.
//!
//! The suite test calls `run_all_tests` exactly once: its crash check re-runs the test in
//! a child process.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lockstep_core::state_machine::{KvCommand, KvQuery};
use lockstep_core::testing::sm_suite::{
    checks, BoxError, StateMachineBuilder, StateMachineTestSuite, MAX_SCALING_RATIO,
};
use lockstep_core::{Command, KvStateMachine, LogId, Rng, StateMachine};
use lockstep_storage_rocksdb::RocksKvStateMachine;

struct Builder;

#[async_trait]
impl StateMachineBuilder for Builder {
    type Machine = RocksKvStateMachine;

    async fn build(&self, dir: &Path) -> Result<RocksKvStateMachine, BoxError> {
        Ok(RocksKvStateMachine::open(dir)?)
    }

    async fn reopen(&self, dir: &Path) -> Result<Option<RocksKvStateMachine>, BoxError> {
        Ok(Some(RocksKvStateMachine::open(dir)?))
    }
}

#[tokio::test]
async fn rocks_kv_passes_the_state_machine_suite_with_crash_checks() {
    let report = StateMachineTestSuite::run_all_tests(Builder).await.unwrap();
    println!("{report:#?}");
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
    for check in [
        checks::DETERMINISM,
        checks::SNAPSHOT_ROUND_TRIP,
        checks::RESTORE_REPLACES_STATE,
        checks::EMPTY_SNAPSHOT,
        checks::CORRUPT_SNAPSHOT,
        checks::BATCH_APPLY,
        checks::REOPEN_KEEPS_LAST_APPLIED,
        checks::IDEMPOTENT_REAPPLY,
        checks::CRASH_RECOVERY,
    ] {
        assert!(report.passed(check), "{check} did not pass: {report:?}");
    }
}

#[tokio::test]
async fn rocks_kv_applies_scale_linearly() {
    let report = StateMachineTestSuite::run_performance_tests(Builder)
        .await
        .unwrap();
    println!(
        "100 entries: {:?}; 1,000 entries: {:?}; ratio {:.2} (limit {MAX_SCALING_RATIO})",
        report.small, report.large, report.ratio
    );
}

fn cmd(i: u64, c: &KvCommand) -> Command {
    Command {
        log_id: LogId::new(1, i),
        session: None,
        data: c.encode(),
    }
}

fn key(k: u64) -> Bytes {
    Bytes::from(format!("k{k:03}"))
}

/// A random mix of puts, deletes, CAS and garbage over a small key space.
fn workload(n: u64, seed: u64) -> Vec<Command> {
    let mut rng = Rng::new(seed);
    (1..=n)
        .map(|i| {
            let k = key(rng.range(0, 40));
            let c = match rng.range(0, 10) {
                0..=4 => KvCommand::Put {
                    key: k,
                    value: Bytes::from(format!("v{i}")),
                },
                5 | 6 => KvCommand::Delete { key: k },
                7 => KvCommand::Cas {
                    key: k,
                    expected: None,
                    new: Some(Bytes::from(format!("c{i}"))),
                },
                8 => KvCommand::Cas {
                    key: k,
                    expected: Some(Bytes::from(format!("v{}", i.saturating_sub(3)))),
                    new: rng.chance(0.5).then(|| Bytes::from(format!("s{i}"))),
                },
                _ => {
                    return Command {
                        log_id: LogId::new(1, i),
                        session: None,
                        data: Bytes::from_static(b"\x07garbage"),
                    }
                }
            };
            cmd(i, &c)
        })
        .collect()
}

async fn snapshot_of(m: &impl StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    m.snapshot(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn rocks_kv_answers_exactly_like_the_in_memory_kv() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksKvStateMachine::open(dir.path()).unwrap();
    let mem = KvStateMachine::new();
    let cmds = workload(600, 42);
    let mut rest: &[Command] = &cmds;
    let mut size = 1;
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(size.min(rest.len()));
        let a = rocks.apply_chunk(part).await.unwrap();
        let b = mem.apply_chunk(part).await.unwrap();
        assert_eq!(a, b, "answers to entries {:?}..", part[0].log_id);
        rest = tail;
        size = size % 17 + 1;
    }
    for k in 0..45 {
        let q = KvQuery::Get { key: key(k) }.encode();
        assert_eq!(rocks.query(&q), mem.query(&q), "query of {k}");
    }
    assert_eq!(rocks.query(b"junk"), mem.query(b"junk"));
    assert_eq!(rocks.len(), mem.len() as u64);
    let snap = snapshot_of(&rocks).await;
    assert_eq!(snap, snapshot_of(&mem).await, "snapshots differ");
    assert_eq!(rocks.last_applied(), Some(LogId::new(1, 600)));

    // Each restores the other's snapshot.
    let other = tempfile::tempdir().unwrap();
    let restored = RocksKvStateMachine::open(other.path()).unwrap();
    restored
        .restore(LogId::new(1, 600), &mut &mem.snapshot_bytes()[..])
        .await
        .unwrap();
    assert_eq!(snapshot_of(&restored).await, snap);
    let mem2 = KvStateMachine::new();
    mem2.restore(LogId::new(1, 600), &mut &snap[..])
        .await
        .unwrap();
    assert_eq!(mem2.snapshot_bytes(), snap);
}

#[tokio::test]
async fn rocks_kv_restore_persists_and_replaces_the_old_generation() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = RocksKvStateMachine::open(src_dir.path()).unwrap();
    src.apply_chunk(&workload(300, 7)).await.unwrap();
    let snap = snapshot_of(&src).await;

    let dir = tempfile::tempdir().unwrap();
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    m.apply_chunk(&workload(50, 9)).await.unwrap();
    m.restore(LogId::new(4, 300), &mut &snap[..]).await.unwrap();
    assert_eq!(m.last_applied(), Some(LogId::new(4, 300)));
    // Entries the snapshot covers are skipped.
    let r = m
        .apply(&cmd(
            300,
            &KvCommand::Put {
                key: key(1),
                value: Bytes::from_static(b"late"),
            },
        ))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    drop(m);

    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    assert_eq!(m.last_applied(), Some(LogId::new(4, 300)));
    assert_eq!(snapshot_of(&m).await, snap);
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    let data: Vec<&String> = cfs.iter().filter(|c| c.starts_with("kv_data_")).collect();
    assert_eq!(data.len(), 1, "column families: {cfs:?}");
}

#[tokio::test]
async fn rocks_kv_rejected_restore_keeps_the_state_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    m.apply_chunk(&workload(100, 3)).await.unwrap();
    let before = snapshot_of(&m).await;
    let la = m.last_applied();
    let mut bad = before.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    assert!(m.restore(LogId::new(9, 900), &mut &bad[..]).await.is_err());
    assert_eq!(snapshot_of(&m).await, before);
    drop(m);
    let m = RocksKvStateMachine::open(dir.path()).unwrap();
    assert_eq!(m.last_applied(), la);
    assert_eq!(snapshot_of(&m).await, before);
}

/// A writer that, on its first write, has another thread apply commands to the machine
/// and waits (bounded) for them to finish.
struct ApplyDuringWrite {
    out: Vec<u8>,
    trigger: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
    applied_meanwhile: bool,
}

impl Write for ApplyDuringWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(t) = self.trigger.take() {
            let _ = t.send(());
            self.applied_meanwhile = self.done.recv_timeout(Duration::from_secs(20)).is_ok();
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_kv_snapshot_is_consistent_and_does_not_block_applies() {
    let dir = tempfile::tempdir().unwrap();
    let m = std::sync::Arc::new(RocksKvStateMachine::open(dir.path()).unwrap());
    // About 1 MB of state, so the snapshot is written in many pieces.
    let big = Bytes::from(vec![b'x'; 1000]);
    let cmds: Vec<Command> = (1..=1000)
        .map(|i| {
            cmd(
                i,
                &KvCommand::Put {
                    key: key(i),
                    value: big.clone(),
                },
            )
        })
        .collect();
    for part in cmds.chunks(100) {
        m.apply_chunk(part).await.unwrap();
    }
    let reference = snapshot_of(&*m).await;

    let (trigger_tx, trigger_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let handle = tokio::runtime::Handle::current();
    let applier = std::thread::spawn(move || {
        if trigger_rx.recv().is_ok() {
            let more: Vec<Command> = (1001..=1100)
                .map(|i| cmd(i, &KvCommand::Delete { key: key(i - 1000) }))
                .collect();
            handle.block_on(m2.apply_chunk(&more)).unwrap();
            let _ = done_tx.send(());
        }
    });
    let mut w = ApplyDuringWrite {
        out: Vec::new(),
        trigger: Some(trigger_tx),
        done: done_rx,
        applied_meanwhile: false,
    };
    m.snapshot(&mut w).await.unwrap();
    applier.join().unwrap();
    assert!(
        w.applied_meanwhile,
        "an apply_chunk could not complete while a snapshot was being written"
    );
    assert_eq!(
        w.out, reference,
        "the snapshot saw writes made after it started"
    );
    assert_eq!(m.len(), 900);
    assert_eq!(m.last_applied(), Some(LogId::new(1, 1100)));
}
