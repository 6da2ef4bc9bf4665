//! The deterministic simulators. [`Simulation`] runs production nodes — the runtime, the
//! `DefaultStateMachineHandler` with sessions and snapshots, and (with the `file` feature)
//! the file store's own code on a simulated filesystem — under one seed:
//!
//! ```
//! use lockstep::sim::Simulation;
//! use lockstep::{KvCommand, KvStateMachine};
//!
//! let report = Simulation::new(42)
//!     .machine(KvStateMachine::new)
//!     .commands(|rng| {
//!         let key = (rng.next_u64() % 8).to_string();
//!         let value = rng.next_u64().to_string();
//!         KvCommand::Put { key: key.into(), value: value.into() }.encode()
//!     })
//!     .ops(100)
//!     .run()
//!     .unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.ops_ok > 0);
//! ```
//!
//! A failure names the check that broke, the seed, and the command that replays it.

pub use lockstep_core::sim::*;

/// Builds production simulations; see the module docs and
/// [`lockstep_core::sim::production::Simulation`] for every option.
#[derive(Clone, Copy, Debug)]
pub struct Simulation;

impl Simulation {
    /// A simulation of `seed` with the defaults: three voters, every fault kind, the core
    /// KV (in memory on even seeds, persisting itself on odd ones) and — with the `file`
    /// feature — the file store on a simulated filesystem (otherwise the in-memory log
    /// store).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(seed: u64) -> production::Simulation {
        let s = production::Simulation::new(seed);
        #[cfg(feature = "file")]
        let s =
            s.storage(|| std::sync::Arc::new(lockstep_storage_file::sim::SimFileStorage::new()));
        s
    }
}
