//! Reusable conformance suites for storage backends and state machines (feature `testing`).

pub mod cluster_suite;
pub mod log_store_suite;
pub mod sm_suite;
pub mod snapshot_views;

pub use sm_suite::{StateMachineBuilder, StateMachineTestSuite};
