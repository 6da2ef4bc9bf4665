//! The guide's section 4 ("Testing Your Implementation"): the builder that lets lockstep's
//! conformance suite create machines.
//!
//! d-engine's builder returns `Arc<dyn StateMachine>` and is handed nothing; lockstep's
//! [`StateMachineBuilder`] names its machine type, is handed an empty directory owned by
//! the suite (so the guide's `temp_dir` field is not needed), and says which command and
//! query to use: the suite applies `command(1..)` and checks the machines through
//! `query(i)`, which must reflect command `i`. A durable machine also implements `reopen`,
//! which turns on the reopen, idempotent re-apply and real `SIGKILL` checks.
//!
//! ```text
//! d_engine_core::state_machine_test::{StateMachineBuilder, StateMachineTestSuite}
//!   -> lockstep::testing::{StateMachineBuilder, StateMachineTestSuite}
//! ```

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use lockstep::testing::sm_suite::BoxError;
use lockstep::testing::StateMachineBuilder;

use super::{AppCommand, CustomStateMachine};

/// Builds fresh [`CustomStateMachine`]s for the suite.
#[derive(Default)]
pub struct MyStateMachineBuilder;

impl MyStateMachineBuilder {
    /// The builder.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl StateMachineBuilder for MyStateMachineBuilder {
    type Machine = CustomStateMachine;

    async fn build(&self, _dir: &Path) -> Result<CustomStateMachine, BoxError> {
        // Create your state machine
        Ok(CustomStateMachine::new())
    }

    fn command(&self, i: u64) -> Bytes {
        AppCommand::Put {
            key: format!("key-{i}").into_bytes(),
            value: format!("value-{i}").into_bytes(),
        }
        .encode()
    }

    fn query(&self, i: u64) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        Ok(())
    }
}
