//! The Markdown documentation as doc tests: every Rust code block of README.md and docs/*.md
//! is compiled (and, unless marked `no_run` or `ignore`, run) by
//! `cargo test --doc -p lockstep --all-features`. Compiled only under `cfg(doctest)`.
//!
//! A document whose examples need an optional feature is tested only with that feature.
//! Not included:
//! - docs/performance.md: it has no Rust blocks;
//! - docs/internals/runtime.md: it has no code blocks.

/// README.md
#[doc = include_str!("../../../README.md")]
pub struct Readme;

/// docs/getting-started.md (its `Client` example needs `grpc`)
#[cfg_attr(feature = "grpc", doc = include_str!("../../../docs/getting-started.md"))]
pub struct GettingStarted;

/// docs/configuration.md
#[doc = include_str!("../../../docs/configuration.md")]
pub struct Configuration;

/// docs/custom-state-machines.md
#[doc = include_str!("../../../docs/custom-state-machines.md")]
pub struct CustomStateMachines;

/// docs/storage.md
#[doc = include_str!("../../../docs/storage.md")]
pub struct Storage;

/// docs/storage-sled.md (feature `sled`)
#[cfg_attr(feature = "sled", doc = include_str!("../../../docs/storage-sled.md"))]
pub struct StorageSled;

/// docs/storage-rocksdb.md (feature `rocksdb`)
#[cfg_attr(feature = "rocksdb", doc = include_str!("../../../docs/storage-rocksdb.md"))]
pub struct StorageRocksdb;

/// docs/operations.md
#[doc = include_str!("../../../docs/operations.md")]
pub struct Operations;

/// docs/porting-from-octopii.md (the conformance suite needs `testing`)
#[cfg_attr(
    feature = "testing",
    doc = include_str!("../../../docs/porting-from-octopii.md")
)]
pub struct PortingFromOctopii;

/// docs/porting-from-d-engine.md (the conformance suite needs `testing`)
#[cfg_attr(
    feature = "testing",
    doc = include_str!("../../../docs/porting-from-d-engine.md")
)]
pub struct PortingFromDEngine;

/// docs/internals/protocol.md (its event loop sketch is marked `ignore`: pseudo-code)
#[doc = include_str!("../../../docs/internals/protocol.md")]
pub struct InternalsProtocol;

/// docs/internals/simulator.md (the simulator needs `testing`)
#[cfg_attr(
    all(feature = "testing", feature = "file"),
    doc = include_str!("../../../docs/internals/simulator.md")
)]
pub struct InternalsSimulator;

/// docs/testing.md
#[doc = include_str!("../../../docs/testing.md")]
pub struct Testing;

/// docs/security.md
#[doc = include_str!("../../../docs/security.md")]
pub struct Security;
