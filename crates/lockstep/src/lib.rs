//! # lockstep
//!
//! Replicated state machines on Raft. Bring a deterministic state machine; lockstep keeps
//! every copy identical, durable across crashes (a write is acknowledged only once it is
//! fsynced on a majority) and available while a majority of nodes is up.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lockstep::prelude::*;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_file("n1.toml")?;
//! let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(());
//! let node = NodeBuilder::new(config, shutdown_rx)
//!     .state_machine(Arc::new(KvStateMachine::new()))
//!     # .in_process(&ChannelNetwork::new())
//!     .start()
//!     .await?;
//! let answer = node.propose(KvCommand::Put { key: "k".into(), value: "v".into() }.encode()).await?;
//! # let _ = answer;
//! # Ok(()) }
//! ```
//!
//! Features: `file` (default) — the segmented-WAL storage; `grpc` (default) — peer and
//! client RPCs over gRPC, the [`Client`] and the `lockstep` command-line tool; `testing` —
//! the conformance suites ([`testing`]) and the deterministic simulator.

pub mod builder;
#[cfg(feature = "grpc")]
pub mod cli;
pub mod config;
pub mod data_dir;
#[cfg(doctest)]
mod doc_tests;
#[cfg(feature = "grpc")]
pub mod network;
pub mod node_client;
#[cfg(feature = "grpc")]
pub mod observe;
#[cfg(all(feature = "testing", feature = "grpc"))]
pub mod processes;

pub use builder::{BuildError, NodeBuilder, RunningNode};
pub use config::{BootstrapConfig, Config, ConfigError, MetricsSection, StorageKind};
pub use node_client::{NodeClient, NodeClientError};

pub use lockstep_core::handler::{
    BytesSince, DefaultStateMachineHandler, EntriesSince, Never, SnapshotPolicy, SnapshotPolicyExt,
    SnapshotSink, StateMachineHandler, TimeSince,
};
pub use lockstep_core::runtime::cluster::{
    retryable, ClusterOptions, ClusterStorage, InProcessCluster, MemoryStorage, NodeStorage,
};
pub use lockstep_core::runtime::{Node, NodeStatus, ReadLevel, RuntimeConfig};
pub use lockstep_core::state_machine::{
    Command, IntoStateMachine, KvCommand, KvQuery, KvResponse, KvStateMachine, MinimalStateMachine,
    SnapshotView, StateMachine, StateMachineTrait,
};
pub use lockstep_core::transport::{ChannelNetwork, Transport};
pub use lockstep_core::{
    ClientError, ClientSession, CommandError, CommandResult, LogId, LogStore, MembershipChange,
    MembershipConfig, NodeError, NodeId, RaftConfig, Role, SnapshotMeta, SnapshotReader,
    SnapshotStore, SnapshotWriter, StagedSnapshot, StateMachineError, StorageError,
};

/// The gRPC transport, server and the Rust [`grpc::Client`] (feature `grpc`).
#[cfg(feature = "grpc")]
pub use lockstep_transport_grpc as grpc;
#[cfg(feature = "grpc")]
pub use lockstep_transport_grpc::{Client, ClientConfig};

/// The file storage backend (feature `file`).
#[cfg(feature = "file")]
pub use lockstep_storage_file as storage_file;

/// Conformance suites and the simulator (feature `testing`).
#[cfg(feature = "testing")]
pub use lockstep_core::testing;

/// The deterministic cluster simulator (feature `testing`): [`sim::Simulation`] runs your
/// state machine on the real runtime, handler and file store; see `docs/testing.md`.
#[cfg(feature = "testing")]
pub mod sim;

/// Names for the seed documents' APIs: `StateMachineTrait` and the `StateMachine` handle
/// type of the Octopii-style API (`Arc<dyn StateMachineTrait>`).
pub mod octopii {
    /// A shared, type-erased minimal state machine.
    pub type StateMachine = std::sync::Arc<dyn lockstep_core::StateMachineTrait>;
    pub use lockstep_core::StateMachineTrait;
}

/// Everything an application usually needs.
pub mod prelude {
    pub use crate::{
        ChannelNetwork, ClientSession, Config, KvCommand, KvQuery, KvResponse, KvStateMachine,
        Node, NodeBuilder, NodeError, ReadLevel, RunningNode, StateMachine, StateMachineTrait,
    };
}
