//! Every Rust example of the two seed guides that can run, on lockstep.
//!
//! - [`octopii`]: the Octopii-style guide's minimal `StateMachineTrait` machines: the
//!   counter, the `HashMap` key-value machine with the guide's own unit tests, the
//!   validating machine of its best practices, and its WAL-backed pattern implemented for
//!   real.
//! - [`d_engine`]: the d-engine-style guide's full `StateMachine`, its test-suite builder
//!   and its `NodeBuilder` registration.
//!
//! The binaries run the guides' "integration" sections on 3-node in-process clusters:
//! `cargo run -p seed-guides --bin octopii-guide` and `--bin d-engine-guide`. The tests
//! (`cargo test -p seed-guides`) run the machines through lockstep's conformance suite and
//! on clusters. What cannot run literally (pseudo-code, types the guides do not define,
//! `rkyv`, `bincode`, `serde`, an external database) is listed in
//! docs/porting-from-octopii.md and docs/porting-from-d-engine.md.

pub mod d_engine;
pub mod octopii;
