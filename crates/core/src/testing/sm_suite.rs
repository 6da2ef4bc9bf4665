//! The `StateMachineTestSuite` (being written).
