//! The Octopii-style guide ("Custom State Machines in Octopii") on lockstep: its minimal
//! `StateMachineTrait` examples, each in its own module. docs/porting-from-octopii.md maps
//! every method and call the guide uses.

pub mod codec;
pub mod counter;
pub mod kv;
pub mod validated;
pub mod wal;

pub use counter::CounterStateMachine;
pub use kv::MyStateMachine;
pub use validated::ValidatedStateMachine;
pub use wal::DurableStateMachine;
