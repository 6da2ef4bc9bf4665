//! The state machine conformance suite on [`SledKvStateMachine`]: every check, including
//! reopen, idempotent re-apply and the real-SIGKILL crash check, plus the opt-in
//! performance check.
//!
//! The crash check re-runs the calling test in a child process, so the durable suite is
//! run exactly once per test function.

use std::path::Path;

use async_trait::async_trait;
use lockstep_core::testing::sm_suite::{
    checks, BoxError, StateMachineBuilder, StateMachineTestSuite, MAX_SCALING_RATIO,
};
use lockstep_storage_sled::SledKvStateMachine;

struct Builder;

#[async_trait]
impl StateMachineBuilder for Builder {
    type Machine = SledKvStateMachine;

    async fn build(&self, dir: &Path) -> Result<SledKvStateMachine, BoxError> {
        Ok(SledKvStateMachine::open(dir)?)
    }

    async fn reopen(&self, dir: &Path) -> Result<Option<SledKvStateMachine>, BoxError> {
        Ok(Some(SledKvStateMachine::open(dir)?))
    }
}

#[tokio::test]
async fn sled_kv_state_machine_passes_the_state_machine_suite_including_crash() {
    let report = StateMachineTestSuite::run_all_tests(Builder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report:#?}");
    for c in [
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
        assert!(report.passed(c), "{c} did not pass: {report:#?}");
    }
    assert!(report.skipped.is_empty(), "{report:#?}");
    // The checksummed snapshot format rejects every damaged snapshot: only the crash note.
    assert!(
        report
            .notes
            .iter()
            .all(|n| n.starts_with(checks::CRASH_RECOVERY)),
        "{report:#?}"
    );
}

#[tokio::test]
async fn sled_kv_state_machine_applies_scale_linearly() {
    let report = StateMachineTestSuite::run_performance_tests(Builder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "sled kv state machine: 100 entries: {:?}; 1,000 entries: {:?}; ratio {:.2}",
        report.small, report.large, report.ratio
    );
    assert!(report.small.as_secs_f64() < 1.0, "{report:?}");
    assert!(report.ratio <= MAX_SCALING_RATIO, "{report:?}");
}
