//! The seed's counter passes lockstep's `StateMachineTestSuite`, as any user's machine can.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use custom_state_machine::CounterStateMachine;
use lockstep::testing::sm_suite::BoxError;
use lockstep::testing::{StateMachineBuilder, StateMachineTestSuite};
use lockstep::MinimalStateMachine;

struct CounterBuilder;

#[async_trait]
impl StateMachineBuilder for CounterBuilder {
    // A minimal (`StateMachineTrait`) machine runs in the suite through its adapter.
    type Machine = MinimalStateMachine<CounterStateMachine>;

    async fn build(&self, _dir: &Path) -> Result<Self::Machine, BoxError> {
        Ok(CounterStateMachine::new().into())
    }

    fn command(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"INCREMENT")
    }

    fn query(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"GET")
    }
}

#[tokio::test]
async fn the_seed_counter_passes_the_state_machine_test_suite() {
    let report = StateMachineTestSuite::run_all_tests(CounterBuilder)
        .await
        .unwrap();
    assert!(report.passed("determinism"), "{report:?}");
}

#[tokio::test]
async fn the_seed_counter_applies_in_linear_time() {
    let perf = StateMachineTestSuite::run_performance_tests(CounterBuilder)
        .await
        .unwrap();
    println!("1,000 entries took {:.1}x the time of 100", perf.ratio);
}
