//! Point-in-time views of [`SledKvStateMachine`] (`StateMachine::snapshot_view`): the view
//! writes the state of the moment it was taken, byte for byte, while puts, deletes,
//! re-creations, CAS and even a restore go on — also *during* `write_to`, between the
//! pieces it writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::state_machine::{KvCommand, KvQuery, KvResponse, SnapshotView};
use lockstep_core::{Command, KvStateMachine, LogId, Rng, StateMachine};
use lockstep_storage_sled::{SledKvStateMachine, KV_DATA_TREE_PREFIX};

fn cmd(i: u64, c: &KvCommand) -> Command {
    Command {
        log_id: LogId::new(1, i),
        session: None,
        data: c.encode(),
    }
}

fn key(k: u64) -> Bytes {
    Bytes::from(format!("k{k:05}"))
}

fn value(i: u64, len: usize) -> Bytes {
    let mut v = format!("v{i}-").into_bytes();
    v.resize(len, b'.');
    Bytes::from(v)
}

/// Puts of every even key below `keys` (entries 1..).
fn load(keys: u64) -> Vec<Command> {
    (0..keys / 2)
        .map(|n| {
            cmd(
                n + 1,
                &KvCommand::Put {
                    key: key(n * 2),
                    value: value(n, 300),
                },
            )
        })
        .collect()
}

/// A random mix over existing and new keys, from entry `from`: overwrites, deletes,
/// deletes followed by re-creation, new keys, CAS.
fn churn(from: u64, n: u64, keys: u64, seed: u64) -> Vec<Command> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut i = from;
    while out.len() < n as usize {
        let k = key(rng.range(0, keys + 50));
        let c = match rng.range(0, 10) {
            0..=3 => KvCommand::Put {
                key: k,
                value: value(i, 1 + rng.range(0, 600) as usize),
            },
            4..=5 => KvCommand::Delete { key: k },
            6..=7 => {
                // Delete and re-create the same key.
                out.push(cmd(i, &KvCommand::Delete { key: k.clone() }));
                i += 1;
                KvCommand::Put {
                    key: k,
                    value: value(i, 40),
                }
            }
            8 => KvCommand::Cas {
                key: k,
                expected: None,
                new: Some(value(i, 20)),
            },
            _ => KvCommand::Cas {
                key: k,
                expected: Some(value(i, 300)),
                new: None,
            },
        };
        out.push(cmd(i, &c));
        i += 1;
    }
    out
}

/// The machine's answers to `Get` for every key below `keys + 50`.
fn answers(m: &impl StateMachine, keys: u64) -> BTreeMap<u64, Option<Bytes>> {
    (0..keys + 50)
        .map(|k| {
            let a = m.query(&KvQuery::Get { key: key(k) }.encode()).unwrap();
            match KvResponse::decode(&a).unwrap() {
                KvResponse::Value(v) => (k, v),
                other => panic!("unexpected answer {other:?}"),
            }
        })
        .collect()
}

/// A writer that applies the next chunk of `pending` to the machine before each write
/// it receives: the writes land between the pieces of the snapshot.
struct ApplyingWriter {
    out: Vec<u8>,
    machine: Arc<SledKvStateMachine>,
    pending: std::vec::IntoIter<Vec<Command>>,
    rt: tokio::runtime::Runtime,
    applied: usize,
}

impl Write for ApplyingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(chunk) = self.pending.next() {
            self.rt
                .block_on(self.machine.apply_chunk(&chunk))
                .map_err(std::io::Error::other)?;
            self.applied += 1;
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `view` on a plain thread (no runtime context) through an [`ApplyingWriter`].
fn write_while_applying(
    view: Box<dyn SnapshotView>,
    machine: Arc<SledKvStateMachine>,
    chunks: Vec<Vec<Command>>,
) -> (Vec<u8>, usize) {
    std::thread::spawn(move || {
        let mut w = ApplyingWriter {
            out: Vec::new(),
            machine,
            pending: chunks.into_iter(),
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            applied: 0,
        };
        view.write_to(&mut w).unwrap();
        (w.out, w.applied)
    })
    .join()
    .unwrap()
}

async fn snapshot_of(m: &impl StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    m.snapshot(&mut out).await.unwrap();
    out
}

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
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(SledKvStateMachine::open(dir.path()).unwrap());
        let reference = KvStateMachine::new();
        let keys = 600;
        let mut all = load(keys);
        all.extend(churn(keys / 2 + 1, 400, keys, seed * 7 + 3));
        let mut rng = Rng::new(seed);
        let cut = rng.range(1, all.len() as u64) as usize;
        for part in all[..cut].chunks(1 + seed as usize * 13) {
            m.apply_chunk(part).await.unwrap();
        }
        reference.apply_chunk(&all[..cut]).await.unwrap();
        let expected = reference.snapshot_bytes();
        let view = m.snapshot_view().expect("sled has point-in-time views");
        let next = all.last().unwrap().log_id.index + 1;
        let mut later = all[cut..].to_vec();
        later.extend(churn(next, 500, keys, seed + 100));
        let chunks: Vec<Vec<Command>> = later.chunks(7).map(<[_]>::to_vec).collect();
        let (out, _) = write_while_applying(view, m.clone(), chunks);
        assert_eq!(out, expected, "seed {seed}, view after entry {cut}");
    }
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
