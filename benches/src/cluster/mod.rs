//! The cluster benchmark: the standard workloads against a 3-node cluster in one of three
//! modes, reported as a markdown table, JSON and PNG charts.
//!
//! - **cluster**: 3 node processes on 127.0.0.1 over gRPC with a durable backend; node 1
//!   runs inside the benchmark process and leads, and the clients call its handle (an
//!   embedded application's view). Nodes 2 and 3 are this binary run as `node --config`.
//! - **remote**: the same 3 nodes all as separate processes, the clients in the benchmark
//!   process talking gRPC (a remote application's view).
//! - **framework**: 3 nodes in this process, in-memory log and state machine, channel
//!   transport, empty commands: what lockstep itself costs.
//!
//! Cluster mode also runs [`snapshot`]'s "writes during snapshot" workload, on a cluster of
//! its own per backend.

pub mod chart;
pub mod memory;
pub mod modes;
pub mod report;
pub mod snapshot;
pub mod target;
pub mod workload;
