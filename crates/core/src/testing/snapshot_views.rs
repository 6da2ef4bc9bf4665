//! Shared checks of point-in-time snapshot views (`StateMachine::snapshot_view`) for KV
//! machines: histories of puts, deletes, re-creations and CAS, the machine's answers, and a
//! writer that applies more commands between the pieces a view writes, so a view showing
//! live data is caught. The durable backends' `tests/snapshot_view.rs` build on them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::rng::Rng;
use crate::state_machine::{
    Command, KvCommand, KvQuery, KvResponse, KvStateMachine, SnapshotView, StateMachine,
};
use crate::types::LogId;

/// A command at entry `i` (term 1, no session).
pub fn cmd(i: u64, c: &KvCommand) -> Command {
    Command {
        log_id: LogId::new(1, i),
        session: None,
        data: c.encode(),
    }
}

/// The `k`-th key (`k00042`).
pub fn key(k: u64) -> Bytes {
    Bytes::from(format!("k{k:05}"))
}

/// A value of `len` bytes naming entry `i`.
pub fn value(i: u64, len: usize) -> Bytes {
    let mut v = format!("v{i}-").into_bytes();
    v.resize(len, b'.');
    Bytes::from(v)
}

/// Puts of every even key below `keys` (entries 1..).
pub fn load(keys: u64) -> Vec<Command> {
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
pub fn churn(from: u64, n: u64, keys: u64, seed: u64) -> Vec<Command> {
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
pub fn answers(m: &(impl StateMachine + ?Sized), keys: u64) -> BTreeMap<u64, Option<Bytes>> {
    (0..keys + 50)
        .map(|k| {
            let a = m
                .query(&KvQuery::Get { key: key(k) }.encode())
                .expect("snapshot view check");
            match KvResponse::decode(&a).expect("snapshot view check") {
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
    machine: Arc<dyn StateMachine>,
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

/// Writes `view` on a plain thread (no runtime context), applying the next of `chunks` to
/// `machine` before each piece it writes; returns the bytes and how many chunks were
/// applied meanwhile.
pub fn write_while_applying(
    view: Box<dyn SnapshotView>,
    machine: Arc<dyn StateMachine>,
    chunks: Vec<Vec<Command>>,
) -> (Vec<u8>, usize) {
    std::thread::spawn(move || {
        let mut w = ApplyingWriter {
            out: Vec::new(),
            machine,
            pending: chunks.into_iter(),
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("snapshot view check"),
            applied: 0,
        };
        view.write_to(&mut w).expect("snapshot view check");
        (w.out, w.applied)
    })
    .join()
    .expect("snapshot view check")
}

/// The machine's own snapshot, in memory.
pub async fn snapshot_of(m: &(impl StateMachine + ?Sized)) -> Vec<u8> {
    let mut out = Vec::new();
    m.snapshot(&mut out).await.expect("snapshot view check");
    out
}

/// Views taken at random points of a random history of puts, deletes, re-creations and CAS,
/// written while the history goes on between their pieces, each equal byte for byte to
/// the in-memory KV's snapshot at that point. `open` opens the machine under test in an
/// empty directory.
pub async fn views_match_the_in_memory_kv_under_random_churn<M: StateMachine>(
    open: impl Fn(&Path) -> M,
) {
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let m: Arc<dyn StateMachine> = Arc::new(open(dir.path()));
        let reference = KvStateMachine::new();
        let keys = 600;
        let mut all = load(keys);
        all.extend(churn(keys / 2 + 1, 400, keys, seed * 7 + 3));
        let mut rng = Rng::new(seed);
        let cut = rng.range(1, all.len() as u64) as usize;
        for part in all[..cut].chunks(1 + seed as usize * 13) {
            m.apply_chunk(part).await.expect("snapshot view check");
        }
        reference
            .apply_chunk(&all[..cut])
            .await
            .expect("snapshot view check");
        let expected = reference.snapshot_bytes();
        let view = m
            .snapshot_view()
            .expect("the machine has point-in-time views");
        let next = all.last().expect("snapshot view check").log_id.index + 1;
        let mut later = all[cut..].to_vec();
        later.extend(churn(next, 500, keys, seed + 100));
        let chunks: Vec<Vec<Command>> = later.chunks(7).map(<[_]>::to_vec).collect();
        let (out, _) = write_while_applying(view, m.clone(), chunks);
        assert_eq!(out, expected, "seed {seed}, view after entry {cut}");
    }
}
