//! The d-engine-style guide ("Implementing Custom State Machines") on lockstep.
//!
//! The guide's code does not compile as written, in d-engine either: its
//! `CustomStateMachine` uses an `ApplicationStorage` trait, an `AppCommand` type and
//! `bincode`, none of which it defines, and ends with "Implement all required methods...".
//! [`machine`] is the same machine made complete against lockstep's full
//! [`StateMachine`](lockstep::StateMachine) trait, with the missing pieces defined;
//! [`testing`] is the guide's test-suite builder; [`register`] is its "Register with
//! NodeBuilder" step. docs/porting-from-d-engine.md maps every method of the guide's API
//! table.

pub mod machine;
pub mod register;
pub mod testing;

pub use machine::{AppCommand, ApplicationStorage, CustomStateMachine, MemoryBackend};
