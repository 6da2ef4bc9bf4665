//! Error types of the traits users implement and of a running node.

use crate::event::ClientError;
use crate::types::{Index, LogId, NodeId};

/// A log store, snapshot store or durable state machine failed to read or write.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O operation failed; `context` says which one and on what.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the file where there is one).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed its integrity check.
    #[error("corrupt data in {location}: {detail}")]
    Corrupt {
        /// Where (file and byte offset, or key).
        location: String,
        /// What was wrong.
        detail: String,
    },
    /// The requested entries were purged behind a snapshot.
    #[error("log entry {index} is compacted (the log starts after {first_kept_after})")]
    Compacted {
        /// The index asked for.
        index: Index,
        /// The purge point: entries at or below it are gone.
        first_kept_after: Index,
    },
    /// The requested entries are beyond the end of the log.
    #[error("log entry {index} does not exist (last entry is {last})")]
    Unavailable {
        /// The index asked for.
        index: Index,
        /// The last entry of the log.
        last: Index,
    },
    /// An append did not directly follow the last entry.
    #[error("append of entry {found} does not follow the last entry {last}")]
    NotContiguous {
        /// Last entry before the append.
        last: LogId,
        /// First entry of the append.
        found: LogId,
    },
    /// The store was written by something else (another backend, another cluster, a newer
    /// format).
    #[error("incompatible data: {0}")]
    Incompatible(String),
    /// Any other backend-specific failure.
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A state machine failed in a way that is not part of the replicated result (I/O error,
/// corrupt snapshot). The node stops (fail-stop) when `apply` returns one.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// Storage under the state machine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A snapshot could not be decoded; the old state is kept.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

/// A command was rejected by the state machine: a deterministic answer (every replica gives
/// the same one), returned to the client; the node carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

/// What a state machine answers to one command or query.
pub type CommandResult = Result<bytes::Bytes, CommandError>;

/// The state machine handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The state machine failed.
    #[error("state machine: {0}")]
    StateMachine(#[from] StateMachineError),
    /// The snapshot store failed.
    #[error("snapshot store: {0}")]
    Storage(#[from] StorageError),
    /// A snapshot received or loaded failed verification.
    #[error("snapshot {last_log_id} rejected: {detail}")]
    BadSnapshot {
        /// The snapshot's last entry.
        last_log_id: LogId,
        /// What was wrong.
        detail: String,
    },
    /// No snapshot with this id is stored.
    #[error("snapshot {0} is not stored")]
    MissingSnapshot(LogId),
}

/// Why a request to a [`crate::runtime::Node`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The protocol refused or abandoned the request (not leader, leadership lost, ...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The state machine rejected the command (deterministically).
    #[error("command rejected: {0}")]
    Rejected(CommandError),
    /// The node has stopped; the reason says why (shutdown or a fail-stop error).
    #[error("node stopped: {0}")]
    Stopped(String),
    /// The request did not complete in time; its outcome is unknown.
    #[error("request timed out after {0:?}; outcome unknown")]
    Timeout(std::time::Duration),
    /// The command or query is larger than `RuntimeConfig::max_command_bytes`.
    #[error("command of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The node is overloaded and refused the request (back-pressure).
    #[error("node {0} is overloaded: too many requests in flight")]
    Overloaded(NodeId),
}

impl NodeError {
    /// The leader hinted by a `NotLeader` refusal, if any.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            NodeError::Client(ClientError::NotLeader { leader }) => *leader,
            _ => None,
        }
    }
}
