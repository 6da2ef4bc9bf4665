//! The custom state machine example: the seed's counter, and the demo that replicates it.

pub mod counter;
pub mod demo;

pub use counter::CounterStateMachine;
