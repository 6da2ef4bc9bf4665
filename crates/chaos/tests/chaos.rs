//! Short chaos rounds on every backend (what `cargo xtask test` runs), and the proof that
//! a round can fail: a planted stale-read bug is reported as a linearizability violation.
//!
//! Each round runs real node processes of this crate's binary; every fault kind is drawn
//! from the seeded schedule. A longer round: `cargo xtask chaos --seconds 120`.

use std::path::PathBuf;

use lockstep_chaos::faults::FaultKind;
use lockstep_chaos::{run, Backend, ChaosOptions, ChaosReport, Plant};

/// Seconds of a round in the test suite.
const ROUND_SECONDS: u64 = 30;

fn options(backend: Backend, dir: &tempfile::TempDir) -> ChaosOptions {
    let mut o = ChaosOptions::new(
        backend,
        PathBuf::from(env!("CARGO_BIN_EXE_lockstep-chaos")),
        dir.path().join("run"),
    );
    o.seconds = ROUND_SECONDS;
    o.seed = 20261201;
    o
}

async fn round(backend: Backend) -> ChaosReport {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&options(backend, &dir))
        .await
        .expect("the run is carried out");
    eprintln!("{}", report.summary());
    if report.violation.is_some() {
        // Keep the evidence: history, fault log, node logs.
        let kept = dir.keep();
        panic!("chaos found a violation; files kept in {}", kept.display());
    }
    assert!(
        report.ops_ok > 100,
        "the clients got too few answers to mean anything"
    );
    for kind in FaultKind::ALL {
        assert!(
            report.faults.contains_key(kind.name()),
            "{} was never injected: {:?}",
            kind.name(),
            report.faults
        );
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_round_on_the_file_backend_is_linearizable() {
    round(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_round_on_the_sled_backend_is_linearizable() {
    round(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_round_on_the_rocksdb_backend_is_linearizable() {
    round(Backend::Rocksdb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_catches_reads_served_at_the_eventual_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(Backend::File, &dir);
    o.seconds = 15;
    o.plant = Some(Plant::EventualReads);
    // Faults are not needed to see followers lag; keep a few to show they do not mask it.
    o.faults = vec![FaultKind::KillRandom, FaultKind::TransferLeader];
    let report = run(&o).await.expect("the run is carried out");
    eprintln!("{}", report.summary());
    let v = report.violation.expect("stale reads must be reported");
    assert_eq!(v.check, "linearizability", "{v}");
    assert!(v.key.is_some());
    assert!(v.detail.contains("get(k"), "the report names the read: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_catches_a_command_applied_twice_by_retries_without_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(Backend::File, &dir);
    o.seconds = 15;
    o.plant = Some(Plant::RetriesWithoutSessions);
    o.faults = vec![FaultKind::KillLeader, FaultKind::Pause];
    let report = run(&o).await.expect("the run is carried out");
    eprintln!("{}", report.summary());
    let v = report.violation.expect("a doubled apply must be reported");
    assert_eq!(v.check, "linearizability", "{v}");
    assert!(
        v.detail.contains("replaced"),
        "the report names the write: {v}"
    );
}
