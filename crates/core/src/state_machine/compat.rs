//! The minimal, seed-shaped state machine trait (`apply(&[u8]) -> Result<Bytes, String>`,
//! `snapshot() -> Vec<u8>`, `restore(&[u8])`, `compact()`), its adapter to [`StateMachine`]
//! ([`MinimalStateMachine`]), and [`IntoStateMachine`], which lets every API that takes a
//! state machine take either kind, owned or behind an `Arc`.
//!
//! A minimal machine is *not* a [`StateMachine`] itself (no blanket implementation): so in
//! a module that has both traits in scope (`use lockstep::prelude::*`), `sm.apply(b"..")`
//! on a minimal machine means [`StateMachineTrait::apply`] and nothing else.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Command, StateMachine};
use crate::error::{CommandError, CommandResult, StateMachineError};
use crate::types::LogId;

/// A minimal replicated state machine: synchronous, string errors, whole-state snapshots.
///
/// # Queries never change state
/// Reads go to [`StateMachineTrait::query`], which must not change anything. A machine
/// that does not provide it (the default answers `None`) has no read-only path: the node
/// then sends every query through the log like a command, so it is applied on every
/// replica in the same order (never on one replica alone) and is linearizable. A write sent
/// as a query therefore cannot make replicas diverge. `query` must answer `None` for every
/// input or for none.
///
/// # Machines that persist themselves
/// The seed's "WAL-backed" and "external database" patterns keep their state across
/// restarts on their own. Such a machine implements [`StateMachineTrait::apply_at`] and
/// [`StateMachineTrait::restore_at`] to record, atomically with the effect, the log position
/// they reached, and [`StateMachineTrait::last_applied`] to report it: after a restart the
/// node then skips what the machine already holds instead of applying it a second time.
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

    /// Answers a read-only query against the current state, without changing it; `None`
    /// (the default) if the machine has no read-only path, and queries then go through the
    /// log (see the trait docs).
    fn query(&self, query: &[u8]) -> Option<Result<Bytes, String>> {
        let _ = query;
        None
    }

    /// Applies the command at log position `at`. A machine that persists itself records
    /// `at` atomically with the command's effect. The default calls
    /// [`StateMachineTrait::apply`].
    fn apply_at(&self, at: LogId, command: &[u8]) -> Result<Bytes, String> {
        let _ = at;
        self.apply(command)
    }

    /// Replaces the state with a snapshot taken at log position `last`. A machine that
    /// persists itself records `last` with the restored state. The default calls
    /// [`StateMachineTrait::restore`].
    fn restore_at(&self, last: LogId, snapshot: &[u8]) -> Result<(), String> {
        let _ = last;
        self.restore(snapshot)
    }

    /// For a machine that persists itself: the last log position applied (or restored)
    /// and durable. `None` (the default): the machine is rebuilt from the latest snapshot
    /// and the log at every start.
    fn last_applied(&self) -> Option<LogId> {
        None
    }
}

/// Forwards every method, so a shared `Arc<M>` (or `Arc<dyn StateMachineTrait>`) is a
/// minimal machine too.
macro_rules! forward_minimal {
    ($($ptr:ident),*) => {$(
        impl<T: StateMachineTrait + ?Sized> StateMachineTrait for $ptr<T> {
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
            fn query(&self, query: &[u8]) -> Option<Result<Bytes, String>> {
                (**self).query(query)
            }
            fn apply_at(&self, at: LogId, command: &[u8]) -> Result<Bytes, String> {
                (**self).apply_at(at, command)
            }
            fn restore_at(&self, last: LogId, snapshot: &[u8]) -> Result<(), String> {
                (**self).restore_at(last, snapshot)
            }
            fn last_applied(&self) -> Option<LogId> {
                (**self).last_applied()
            }
        }
    )*};
}

forward_minimal!(Arc, Box);

/// Runs blocking user code: on a multi-thread tokio runtime through `block_in_place`, so the
/// worker's other tasks (heartbeats, elections, other nodes) move to another thread while a
/// slow synchronous `apply` runs; elsewhere directly.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A [`StateMachineTrait`] machine as a [`StateMachine`]. [`IntoStateMachine`] wraps minimal
/// machines in it, so it is rarely named.
pub struct MinimalStateMachine<S: ?Sized> {
    machine: Arc<S>,
    /// Whether the machine answers queries itself (found once, on the first need).
    has_query: OnceLock<bool>,
}

impl<S: StateMachineTrait + ?Sized> MinimalStateMachine<S> {
    /// Adapts `machine`.
    pub fn new(machine: Arc<S>) -> Self {
        Self {
            machine,
            has_query: OnceLock::new(),
        }
    }

    /// The machine itself.
    pub fn inner(&self) -> &Arc<S> {
        &self.machine
    }
}

impl<S: StateMachineTrait> From<S> for MinimalStateMachine<S> {
    fn from(machine: S) -> Self {
        Self::new(Arc::new(machine))
    }
}

impl<S: ?Sized> std::ops::Deref for MinimalStateMachine<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.machine
    }
}

#[async_trait]
impl<S: StateMachineTrait + ?Sized + 'static> StateMachine for MinimalStateMachine<S> {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        Ok(blocking(|| self.machine.apply_at(command.log_id, &command.data)).map_err(CommandError))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        // One hand-off for the whole batch: the minimal shape is synchronous and may block.
        Ok(blocking(|| {
            commands
                .iter()
                .map(|c| {
                    self.machine
                        .apply_at(c.log_id, &c.data)
                        .map_err(CommandError)
                })
                .collect()
        }))
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        match self.machine.query(query) {
            Some(r) => r.map_err(CommandError),
            None => Err(CommandError(
                "this state machine has no read-only query; the node sends queries through the log"
                    .into(),
            )),
        }
    }

    fn read_only_queries(&self) -> bool {
        // The default `query` answers `None` whatever it is asked: one probe tells.
        *self
            .has_query
            .get_or_init(|| self.machine.query(b"").is_some())
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        let data = blocking(|| self.machine.snapshot());
        out.write_all(&data)
            .map_err(|e| StateMachineError::Other(format!("writing snapshot: {e}")))
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| StateMachineError::Other(format!("reading snapshot: {e}")))?;
        blocking(|| self.machine.restore_at(last, &data))
            .map_err(StateMachineError::InvalidSnapshot)
    }

    fn last_applied(&self) -> Option<LogId> {
        self.machine.last_applied()
    }

    async fn compact(&self) -> Result<(), StateMachineError> {
        blocking(|| self.machine.compact()).map_err(StateMachineError::Other)
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
    fn read_only_queries(&self) -> bool {
        self.0.read_only_queries()
    }
    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.0.snapshot(out).await
    }
    fn snapshot_view(&self) -> Option<Box<dyn super::SnapshotView>> {
        self.0.snapshot_view()
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

/// Kinds of value [`IntoStateMachine`] converts (type-level tags; never named by callers,
/// the compiler infers them).
pub mod kind {
    /// A [`super::StateMachine`] by value.
    pub enum Full {}
    /// An `Arc` of a [`super::StateMachine`].
    pub enum SharedFull {}
    /// A [`super::StateMachineTrait`] machine, by value or behind an `Arc` (including
    /// `Arc<dyn StateMachineTrait>`: an `Arc` of a minimal machine is one too).
    pub enum Minimal {}
}

/// Anything a node can run as its state machine: a [`StateMachine`] or a minimal
/// [`StateMachineTrait`] machine, by value or behind an `Arc` (keep a clone of the `Arc` to
/// look at the machine while the node runs). `K` is inferred.
pub trait IntoStateMachine<K> {
    /// The machine as the node runs it.
    fn into_state_machine(self) -> Arc<dyn StateMachine>;
}

impl<S: StateMachine> IntoStateMachine<kind::Full> for S {
    fn into_state_machine(self) -> Arc<dyn StateMachine> {
        Arc::new(self)
    }
}

impl<S: StateMachine + ?Sized> IntoStateMachine<kind::SharedFull> for Arc<S> {
    fn into_state_machine(self) -> Arc<dyn StateMachine> {
        Arc::new(SharedStateMachine(self))
    }
}

impl<S: StateMachineTrait + 'static> IntoStateMachine<kind::Minimal> for S {
    fn into_state_machine(self) -> Arc<dyn StateMachine> {
        Arc::new(MinimalStateMachine::new(Arc::new(self)))
    }
}
