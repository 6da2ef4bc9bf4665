//! Benchmarks for lockstep.
