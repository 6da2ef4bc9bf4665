//! # lockstep-core
//!
//! The Raft protocol of lockstep as a deterministic, sans-IO state machine ([`Raft`]), the
//! types it speaks ([`Entry`], [`Message`], [`Event`], [`Action`], ...), and — with the
//! `testing` feature — a deterministic cluster simulator ([`sim`]) that checks Raft's
//! safety properties and linearizability under faults.
//!
//! See `docs/internals/protocol.md` for the event/action model and the persistence rules.

pub mod codec;
pub mod config;
pub mod error;
pub mod event;
pub mod fs;
#[cfg(not(test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod membership;
pub mod message;
pub mod raft;
pub mod rng;
pub mod runtime;
pub mod session;
pub mod session_pool;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod types;

#[cfg(any(test, feature = "testing"))]
pub mod sim;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, RaftConfig};
pub use error::{
    CommandError, CommandResult, HandlerError, NodeError, StateMachineError, StorageError,
};
pub use event::{Action, ClientError, Event, Proposal, ReadConsistency, Reply};
pub use membership::{MembershipChange, MembershipConfig, MembershipError};
pub use message::{AppendResult, Message, MessageBody};
pub use raft::progress::{Progress, ReplicationState};
pub use raft::{InitError, InitialState, Raft, Role, Status};
pub use rng::Rng;
pub use session::{SessionCheck, SessionLimits, SessionTable};
pub use state_machine::{Command, KvStateMachine, StateMachine, StateMachineTrait};
pub use storage::{
    LogStore, MemLogStore, MemSnapshotStore, SnapshotReader, SnapshotStore, SnapshotWriter,
    StagedSnapshot, StoredLog,
};
pub use transport::{Transport, TransportError};
pub use types::{
    ClientSession, Entry, EntryPayload, HardState, Index, LogId, NodeId, RequestId, SnapshotMeta,
    Term,
};
