//! The minimal, seed-shaped state machine trait (`apply(&[u8]) -> Result<Bytes, String>`,
//! `snapshot() -> Vec<u8>`, `restore(&[u8])`, `compact()`) and its blanket adapter to
//! [`StateMachine`]. A type written for the minimal shape runs on lockstep unchanged.

use std::io::{Read, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Command, StateMachine};
use crate::error::{CommandError, CommandResult, StateMachineError};
use crate::types::LogId;

/// A minimal replicated state machine: synchronous, string errors, whole-state snapshots.
///
/// The shape has no separate read method, so [`StateMachine::query`] on such a machine calls
/// `apply`: send only read commands (like `GET`) as queries.
pub trait StateMachineTrait: Send + Sync {
    /// Applies a command and returns its result; errors are deterministic rejections.
    fn apply(&self, command: &[u8]) -> Result<Bytes, String>;

    /// Serialises the complete current state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the complete state with a snapshot (an empty snapshot must be accepted).
    fn restore(&self, snapshot: &[u8]) -> Result<(), String>;

    /// Optional cleanup, called after snapshots.
    fn compact(&self) -> Result<(), String> {
        Ok(())
    }
}

impl<T: StateMachineTrait + ?Sized> StateMachineTrait for Arc<T> {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        (**self).apply(command)
    }
    fn snapshot(&self) -> Vec<u8> {
        (**self).snapshot()
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        (**self).restore(snapshot)
    }
    fn compact(&self) -> Result<(), String> {
        (**self).compact()
    }
}

impl<T: StateMachineTrait + ?Sized> StateMachineTrait for Box<T> {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        (**self).apply(command)
    }
    fn snapshot(&self) -> Vec<u8> {
        (**self).snapshot()
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        (**self).restore(snapshot)
    }
    fn compact(&self) -> Result<(), String> {
        (**self).compact()
    }
}

/// Runs blocking user code: on a multi-thread tokio runtime through `block_in_place`, so the
/// worker's other tasks (heartbeats, elections, other nodes) move to another thread while a
/// slow synchronous `apply` runs; elsewhere directly.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[async_trait]
impl<T: StateMachineTrait + ?Sized + 'static> StateMachine for T {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        Ok(blocking(|| StateMachineTrait::apply(self, &command.data)).map_err(CommandError))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        // One hand-off for the whole batch: the minimal shape is synchronous and may block.
        Ok(blocking(|| {
            commands
                .iter()
                .map(|c| StateMachineTrait::apply(self, &c.data).map_err(CommandError))
                .collect()
        }))
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        StateMachineTrait::apply(self, query).map_err(CommandError)
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        let data = StateMachineTrait::snapshot(self);
        out.write_all(&data)
            .map_err(|e| StateMachineError::Other(format!("writing snapshot: {e}")))
    }

    async fn restore(
        &self,
        _last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| StateMachineError::Other(format!("reading snapshot: {e}")))?;
        StateMachineTrait::restore(self, &data).map_err(StateMachineError::InvalidSnapshot)
    }

    async fn compact(&self) -> Result<(), StateMachineError> {
        StateMachineTrait::compact(self).map_err(StateMachineError::Other)
    }
}

/// A [`StateMachine`] shared behind an `Arc`, so the caller keeps a handle to it (as in
/// `NodeBuilder::state_machine(Arc::new(sm))`).
pub struct SharedStateMachine<S: ?Sized>(pub Arc<S>);

#[async_trait]
impl<S: StateMachine + ?Sized> StateMachine for SharedStateMachine<S> {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        self.0.apply(command).await
    }
    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        self.0.apply_chunk(commands).await
    }
    fn query(&self, query: &[u8]) -> CommandResult {
        self.0.query(query)
    }
    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.0.snapshot(out).await
    }
    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        self.0.restore(last, input).await
    }
    fn last_applied(&self) -> Option<LogId> {
        self.0.last_applied()
    }
    async fn compact(&self) -> Result<(), StateMachineError> {
        self.0.compact().await
    }
}
