//! The standard workloads of the cluster benchmark, and the loop that runs one against a
//! [`Target`] with many concurrent clients.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::{KvCommand, KvQuery, KvResponse, ReadLevel};
use serde::Serialize;

use super::target::Target;

/// Bytes of every key (sequential: `k0000000`, `k0000001`, ...).
pub const KEY_BYTES: usize = 8;
/// Bytes of every value written.
pub const VALUE_BYTES: usize = 256;
/// Keys the hot-key workload reads.
pub const HOT_KEYS: usize = 10;

/// What a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One client writing sequential keys.
    SingleClientWrite,
    /// Many clients writing sequential keys.
    ConcurrentWrite,
    /// Many clients reading written keys linearizably (ReadIndex).
    LinearizableRead,
    /// Many clients reading written keys under the leader's lease.
    LeaseRead,
    /// Many clients reading written keys from the leader's state machine as it is.
    EventualRead,
    /// Many clients reading a few written keys linearizably.
    HotKey,
    /// Framework mode: empty commands (no key, no value) to an in-memory cluster.
    EmptyWrite,
    /// "Writes during snapshot", first phase: many clients writing new keys over a large
    /// state, no snapshot being built.
    WriteNoSnapshot,
    /// "Writes during snapshot", second phase: the same while the leader builds a
    /// snapshot of the whole state.
    WriteDuringSnapshot,
}

impl Kind {
    /// The workload's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SingleClientWrite => "single-client write",
            Kind::ConcurrentWrite => "high-concurrency write",
            Kind::LinearizableRead => "linearizable read",
            Kind::LeaseRead => "lease read",
            Kind::EventualRead => "eventual read",
            Kind::HotKey => "hot key",
            Kind::EmptyWrite => "write (empty)",
            Kind::WriteNoSnapshot => "write, no snapshot",
            Kind::WriteDuringSnapshot => "write during snapshot",
        }
    }

    /// The workload's identifier on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Kind::SingleClientWrite => "single-client-write",
            Kind::ConcurrentWrite => "concurrent-write",
            Kind::LinearizableRead => "linearizable-read",
            Kind::LeaseRead => "lease-read",
            Kind::EventualRead => "eventual-read",
            Kind::HotKey => "hot-key",
            Kind::EmptyWrite => "empty-write",
            Kind::WriteNoSnapshot => "write-no-snapshot",
            Kind::WriteDuringSnapshot => "write-during-snapshot",
        }
    }

    /// True for workloads that write.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Kind::SingleClientWrite
                | Kind::ConcurrentWrite
                | Kind::EmptyWrite
                | Kind::WriteNoSnapshot
                | Kind::WriteDuringSnapshot
        )
    }
}

/// One workload: what, how many concurrent clients, how many operations in all.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// What each operation is.
    pub kind: Kind,
    /// Concurrent clients, each with one operation in flight.
    pub clients: usize,
    /// Operations in all.
    pub ops: usize,
}

/// The six standard workloads; `scale` shrinks the operation counts (1.0 = the full run).
pub fn standard(scale: f64) -> Vec<Workload> {
    let n = |full: usize| ((full as f64 * scale) as usize).max(100);
    let w = |kind, clients, ops| Workload { kind, clients, ops };
    vec![
        w(Kind::SingleClientWrite, 1, n(10_000)),
        w(Kind::ConcurrentWrite, 100, n(100_000)),
        w(Kind::LinearizableRead, 100, n(100_000)),
        w(Kind::LeaseRead, 100, n(100_000)),
        w(Kind::EventualRead, 100, n(100_000)),
        w(Kind::HotKey, 100, n(100_000)),
    ]
}

/// Key number `i`.
pub fn key(i: usize) -> Bytes {
    Bytes::from(format!("k{:07}", i % 10_000_000))
}

/// What one workload run measured.
pub struct Sample {
    /// Latency of every successful operation, in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Operations that failed.
    pub failed: usize,
    /// Operations not started because the time limit passed.
    pub not_run: usize,
    /// Wall time from the first operation to the last answer.
    pub elapsed: Duration,
    /// The first failure, described.
    pub first_error: Option<String>,
}

/// A pre-encoded operation source: commands and queries are built before the clock starts
/// only where that costs nothing; keys are formatted per operation, as a client would.
struct Ops {
    kind: Kind,
    value: Bytes,
    /// Keys written before this workload (reads pick among them).
    written: usize,
    /// Writes put key `key_offset + i` (reads ignore it).
    key_offset: usize,
}

impl Ops {
    async fn run(&self, target: &Target, worker: usize, i: usize) -> Result<(), String> {
        let read = |level, k: usize| async move {
            let answer = target
                .read(worker, KvQuery::Get { key: key(k) }.encode(), level)
                .await?;
            match KvResponse::decode(&answer) {
                Ok(KvResponse::Value(Some(v))) if v.len() == VALUE_BYTES => Ok(()),
                Ok(other) => Err(format!("reading key {k}: unexpected answer {other:?}")),
                Err(e) => Err(format!("reading key {k}: undecodable answer: {e}")),
            }
        };
        match self.kind {
            Kind::SingleClientWrite
            | Kind::ConcurrentWrite
            | Kind::WriteNoSnapshot
            | Kind::WriteDuringSnapshot => {
                let cmd = KvCommand::Put {
                    key: key(self.key_offset + i),
                    value: self.value.clone(),
                };
                target.propose(worker, cmd.encode()).await.map(drop)
            }
            Kind::EmptyWrite => target.propose(worker, Bytes::new()).await.map(drop),
            Kind::LinearizableRead => read(ReadLevel::Linearizable, i % self.written).await,
            Kind::LeaseRead => read(ReadLevel::Lease, i % self.written).await,
            Kind::EventualRead => read(ReadLevel::Eventual, i % self.written).await,
            Kind::HotKey => read(ReadLevel::Linearizable, i % HOT_KEYS).await,
        }
    }
}

/// Runs `w` against `target`: `w.clients` tasks take operation numbers from a shared
/// counter until `w.ops` are done or `limit` has passed. `written` is the number of keys
/// written earlier in the run (reads pick among them; must be positive for reads).
pub async fn run(target: &Target, w: &Workload, written: usize, limit: Duration) -> Sample {
    run_with(target, w, written, limit, &Extra::default()).await
}

/// What [`run_with`] adds to [`run`].
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Clients stop taking operations once this is set (the operations not started are
    /// then not counted as "not run").
    pub stop: Option<Arc<AtomicBool>>,
    /// Writes put key `key_offset + i` instead of `i`.
    pub key_offset: usize,
    /// Bytes of each value written (0: [`VALUE_BYTES`]).
    pub value_bytes: usize,
}

/// [`run`], with a stop flag, a key offset and a value size.
pub async fn run_with(
    target: &Target,
    w: &Workload,
    written: usize,
    limit: Duration,
    extra: &Extra,
) -> Sample {
    let value_bytes = if extra.value_bytes == 0 {
        VALUE_BYTES
    } else {
        extra.value_bytes
    };
    let ops = Arc::new(Ops {
        kind: w.kind,
        value: Bytes::from(vec![b'v'; value_bytes]),
        written: written.max(HOT_KEYS),
        key_offset: extra.key_offset,
    });
    let stop = extra.stop.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let tasks: Vec<_> = (0..w.clients)
        .map(|worker| {
            let (ops, next, target, stop) =
                (ops.clone(), next.clone(), target.clone(), stop.clone());
            let (total, clients) = (w.ops, w.clients);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(total / clients + 1);
                let (mut failed, mut first_error) = (0, None);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total
                        || Instant::now() > deadline
                        || stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire))
                    {
                        break;
                    }
                    let t = Instant::now();
                    match ops.run(&target, worker, i).await {
                        Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (lat, failed, first_error)
            })
        })
        .collect();
    let mut sample = Sample {
        latencies_ns: Vec::with_capacity(w.ops),
        failed: 0,
        not_run: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok((lat, failed, err)) => {
                sample.latencies_ns.extend(lat);
                sample.failed += failed;
                if sample.first_error.is_none() {
                    sample.first_error = err;
                }
            }
            Err(e) => {
                sample.failed += 1;
                sample
                    .first_error
                    .get_or_insert(format!("client task: {e}"));
            }
        }
    }
    sample.elapsed = start.elapsed();
    let stopped = extra
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::Acquire));
    sample.not_run = if stopped {
        0
    } else {
        w.ops
            .saturating_sub(sample.latencies_ns.len() + sample.failed)
    };
    sample.latencies_ns.sort_unstable();
    sample
}
