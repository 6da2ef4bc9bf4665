//! The replicated state machine users bring: [`StateMachine`] (the full, async trait), the
//! seed-shaped minimal [`StateMachineTrait`] (adapted by [`MinimalStateMachine`]; every API
//! that takes a machine takes either kind through [`IntoStateMachine`]), and the default
//! [`KvStateMachine`].

mod compat;
mod kv;

pub use compat::{
    kind, IntoStateMachine, MinimalStateMachine, SharedStateMachine, StateMachineTrait,
};
pub use kv::{KvCommand, KvQuery, KvResponse, KvStateMachine};

use std::io::{Read, Write};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{CommandResult, StateMachineError};
use crate::types::{ClientSession, LogId};

/// One committed command, as handed to [`StateMachine::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Position of the command in the log.
    pub log_id: LogId,
    /// The client session it was proposed with, if any. Duplicates are already filtered out
    /// by the handler; this is informational.
    pub session: Option<ClientSession>,
    /// The command bytes, as proposed.
    pub data: Bytes,
}

/// A consistent copy of a machine's state at the moment [`StateMachine::snapshot_view`]
/// took it.
pub trait SnapshotView: Send {
    /// Writes the snapshot of the state as it was when the view was taken: the bytes
    /// [`StateMachine::snapshot`] would have written then. Blocking; runs on a blocking
    /// thread.
    fn write_to(self: Box<Self>, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError>;
}

/// A deterministic replicated state machine.
///
/// Every replica applies the same commands in the same order; `apply` must give the same
/// answer and the same state on every replica (no clocks, no randomness, no I/O whose result
/// can differ). Errors split in two:
/// - a [`crate::error::CommandError`] inside `Ok(..)` is the command's deterministic answer
///   ("unknown command"), returned to the client; the node carries on;
/// - a [`StateMachineError`] means the machine itself failed (disk error): the node stops
///   (fail-stop) rather than diverge from its peers.
#[async_trait]
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed command.
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError>;

    /// Applies a batch of consecutive committed commands, returning one result per command.
    /// The default applies them one by one; durable machines override it to write the batch
    /// (and its last index) atomically.
    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            out.push(self.apply(c).await?);
        }
        Ok(out)
    }

    /// Answers a read-only query against the current state. Must not change the state: a
    /// query runs on one replica only, so a change would make that replica diverge.
    fn query(&self, query: &[u8]) -> CommandResult;

    /// False if the machine has no read-only query path: the node then sends every query
    /// through the log like a command (applied on every replica, linearizable) instead of
    /// calling [`StateMachine::query`]. Default: true.
    fn read_only_queries(&self) -> bool {
        true
    }

    /// Writes a snapshot of the complete current state to `out`.
    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError>;

    /// A point-in-time view of the state, taken cheaply (a clone of shared, copy-on-write
    /// data; a storage engine's snapshot), for a snapshot written out *after* more commands
    /// apply. The handler takes it while no command applies and writes it without holding
    /// back applies, so writes do not stall while a large snapshot is built. `None` (the
    /// default): the handler calls [`StateMachine::snapshot`] while holding back applies.
    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        None
    }

    /// Replaces the complete state with the snapshot read from `input`, taken at `last`. On
    /// error the previous state must be intact.
    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError>;

    /// For machines that persist their own state: the last entry applied and durable. The
    /// handler then skips entries at or below it after a restart. `None` (the default) means
    /// the machine is rebuilt from the latest snapshot and the log at every start.
    fn last_applied(&self) -> Option<LogId> {
        None
    }

    /// Optional housekeeping, called after a snapshot was taken.
    async fn compact(&self) -> Result<(), StateMachineError> {
        Ok(())
    }
}
