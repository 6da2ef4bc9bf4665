//! The "writes during snapshot" workload (`--workloads writes-during-snapshot`, cluster
//! mode): write latency while the leader builds a snapshot of a large state, against the
//! same writes without one.
//!
//! On a fresh 3-node cluster with automatic snapshots off:
//!
//! 1. **load**: `--snapshot-state-mib` MiB (default 1024 × `--scale`) of 16 KiB values
//!    under keys of their own, 32 clients (not reported as a row; its time is in the
//!    rows' `snapshot` details);
//! 2. **write, no snapshot**: 100 clients put 256-byte values under new keys,
//!    100,000 × `--scale` operations (at least 1,000);
//! 3. **write during snapshot**: the same clients and writes, started together with
//!    `Node::trigger_snapshot` on the leader (node 1, in this process) and stopped when
//!    the snapshot is built (written, synced and recorded).
//!
//! The snapshot is of the whole state (its id, sessions and membership are taken while
//! applies wait; a machine with [`lockstep::StateMachine::snapshot_view`] then streams a
//! point-in-time view while writes go on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::memory;
use super::modes::{self, Settings, Started};
use super::report::Row;
use super::workload::{self, Extra, Kind, Workload};

/// The workload's identifier on the command line.
pub const ID: &str = "writes-during-snapshot";

/// Bytes of each value loaded before the phases.
pub const LOAD_VALUE_BYTES: usize = 16 << 10;
/// Concurrent clients loading the state.
const LOAD_CLIENTS: usize = 32;
/// Concurrent clients writing in both phases.
const WRITE_CLIENTS: usize = 100;
/// The loaded keys are `key(LOAD_KEYS + i)`; the phases write `key(i)` and
/// `key(DURING_KEYS + i)`.
const LOAD_KEYS: usize = 5_000_000;
const DURING_KEYS: usize = 2_000_000;
/// Most writes the second phase may make (it stops when the snapshot is built).
const DURING_MAX_OPS: usize = 3_000_000;
/// Only the triggered snapshot is built.
const NO_AUTOMATIC_SNAPSHOTS: &str = "[snapshot]\nevery_entries = 0\nevery_bytes = 0\n";

/// What a row of this workload adds to the standard figures.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDetails {
    /// MiB of values loaded before the phases.
    pub state_mib: f64,
    /// Puts of [`LOAD_VALUE_BYTES`] that loaded them.
    pub load_ops: usize,
    /// Seconds the load took.
    pub load_secs: f64,
    /// Seconds from `trigger_snapshot` to the built snapshot (the second phase only).
    pub snapshot_secs: Option<f64>,
    /// The index the snapshot was taken at (the second phase only).
    pub snapshot_index: Option<u64>,
}

/// True if `s` selects this workload (no `--workloads`, or one naming it).
pub fn selected(s: &Settings) -> bool {
    s.only.is_empty() || s.only.iter().any(|o| o == ID)
}

/// Runs the workload on a fresh cluster with `backend` storage; two rows.
pub async fn run(backend: &str, s: &Settings) -> Result<Vec<Row>, String> {
    eprintln!("\ncluster mode, {backend} storage: writes during snapshot");
    let c = modes::start(backend, true, NO_AUTOMATIC_SNAPSHOTS, s).await?;
    let result = phases(&c, backend, s).await;
    c.stop().await;
    result
}

fn reset_peaks(c: &Started) {
    for (_, pid) in &c.pids {
        memory::reset_peak(*pid);
    }
}

fn print_row(row: &Row) {
    eprintln!(
        "  {:<24} {:>10.0} ops/s  p50 {:>8.0} µs  p99 {:>8.0} µs  failed {}",
        row.workload, row.ops_per_sec, row.p50_us, row.p99_us, row.failed
    );
    if let Some(e) = &row.first_error {
        eprintln!("    first failure: {e}");
    }
}

async fn phases(c: &Started, backend: &str, s: &Settings) -> Result<Vec<Row>, String> {
    let node = c
        .local
        .as_ref()
        .map(|n| n.node().clone())
        .ok_or("the snapshot workload needs node 1 in this process")?;
    let state_bytes = (s.snapshot_state_mib * (1 << 20) as f64).max(0.0) as usize;
    let load_ops = (state_bytes / LOAD_VALUE_BYTES).max(1);
    let load = Workload {
        kind: Kind::ConcurrentWrite,
        clients: LOAD_CLIENTS,
        ops: load_ops,
    };
    let started = Instant::now();
    let loaded = workload::run_with(
        &c.target,
        &load,
        0,
        s.limit,
        &Extra {
            key_offset: LOAD_KEYS,
            value_bytes: LOAD_VALUE_BYTES,
            ..Extra::default()
        },
    )
    .await;
    if loaded.failed > 0 || loaded.not_run > 0 {
        return Err(format!(
            "loading {load_ops} values: {} failed, {} not run within {:?} (first failure: {})",
            loaded.failed,
            loaded.not_run,
            s.limit,
            loaded.first_error.as_deref().unwrap_or("none")
        ));
    }
    let load_secs = started.elapsed().as_secs_f64();
    let state_mib = (load_ops * LOAD_VALUE_BYTES) as f64 / (1 << 20) as f64;
    eprintln!(
        "  loaded {state_mib:.0} MiB ({load_ops} values of {} KiB) in {load_secs:.1} s",
        LOAD_VALUE_BYTES >> 10
    );
    let details = |snapshot_secs, snapshot_index| SnapshotDetails {
        state_mib,
        load_ops,
        load_secs,
        snapshot_secs,
        snapshot_index,
    };

    // Phase 1: writes, no snapshot.
    reset_peaks(c);
    let quiet = Workload {
        kind: Kind::WriteNoSnapshot,
        clients: WRITE_CLIENTS,
        ops: ((100_000.0 * s.scale) as usize).max(1000),
    };
    let sample = workload::run_with(&c.target, &quiet, 0, s.limit, &Extra::default()).await;
    let mut row = Row::new("cluster", backend, &quiet, &sample, modes::measure(&c.pids));
    row.snapshot = Some(details(None, None));
    print_row(&row);
    let mut rows = vec![row];

    // Phase 2: the same writes while the leader builds a snapshot of everything.
    reset_peaks(c);
    let stop = Arc::new(AtomicBool::new(false));
    let during = Workload {
        kind: Kind::WriteDuringSnapshot,
        clients: WRITE_CLIENTS,
        ops: DURING_MAX_OPS,
    };
    let extra = Extra {
        stop: Some(stop.clone()),
        key_offset: DURING_KEYS,
        ..Extra::default()
    };
    let writes = workload::run_with(&c.target, &during, 0, s.limit, &extra);
    let snapshot = async {
        let t = Instant::now();
        let built = node.trigger_snapshot().await;
        stop.store(true, Ordering::Release);
        (built, t.elapsed())
    };
    let (sample, (built, took)) = tokio::join!(writes, snapshot);
    let meta = match built {
        Ok(Some(meta)) => meta,
        Ok(None) => return Err("trigger_snapshot built no snapshot (nothing new?)".into()),
        Err(e) => return Err(format!("trigger_snapshot: {e}")),
    };
    let done = sample.latencies_ns.len() + sample.failed;
    if done >= DURING_MAX_OPS {
        eprintln!("  note: the writes ran out ({DURING_MAX_OPS}) before the snapshot was built");
    }
    let ran = Workload {
        ops: done,
        ..during
    };
    let mut row = Row::new("cluster", backend, &ran, &sample, modes::measure(&c.pids));
    row.snapshot = Some(details(
        Some(took.as_secs_f64()),
        Some(meta.last_log_id.index),
    ));
    eprintln!(
        "  snapshot at index {} built in {:.2} s",
        meta.last_log_id.index,
        took.as_secs_f64()
    );
    print_row(&row);
    rows.push(row);
    Ok(rows)
}
