//! The production node under simulation: N real [`crate::runtime::Node`]s (core task, log
//! writer, applier, `DefaultStateMachineHandler` with sessions, the snapshot envelope and
//! a `SnapshotStore`, and whatever log store [`SimStorage`] opens) on one paused,
//! single-threaded tokio runtime, so one seed decides every delay, fault and ordering and
//! a run replays bit for bit.
//!
//! Only the environment is simulated ([`crate::runtime::env`]): the clock (each node's
//! drifts), the network ([`net`]: delay, reorder, drop, duplicate, partitions), stalls
//! (a paused process: its timers fire late and nothing is replayed), crashes (process kill
//! or power loss, see [`Crash`]) and storage faults (failed fsyncs, bit flips where the
//! storage models them). Checked during the run: election safety (§5.2: one leader per
//! term) and state machine safety (§5.4.3: one command per index on every replica); at the
//! end, after healing: liveness (a new write commits), convergence (every replica's
//! snapshot bytes are equal) and, for the KV workloads, linearizability of the clients'
//! history, exactly-once retries included.
//!
//! ```
//! use lockstep_core::sim::production::Simulation;
//!
//! let report = Simulation::new(7).ops(60).run().expect("no invariant broken");
//! assert!(report.ops_ok > 0);
//! ```

mod checks;
mod clients;
mod figure8;
mod finish;
mod handler;
mod machines;
mod nemesis;
mod net;
mod storage;
mod world;

use std::sync::Arc;

use bytes::Bytes;

pub use storage::{Crash, Held, MemStorage, SimStorage, Stores};

use super::{Faults, Scenario, SimFailure, SimReport};
use crate::config::RaftConfig;
use crate::rng::Rng;
use crate::runtime::env::RuntimeBugs;
use crate::state_machine::{IntoStateMachine, StateMachine};

/// Which machine the nodes run, and how the clients use it.
#[derive(Clone)]
pub(crate) enum Workload {
    /// The core KV in memory on even seeds, persisting itself on odd ones (the default).
    Models,
    /// The core KV, rebuilt from snapshot and log at every start; linearizability checked.
    Kv,
    /// The core KV persisting itself (`last_applied = Some`); linearizability checked.
    PersistedKv,
    /// A user's machine with a command generator; safety and convergence checked.
    Custom {
        make: Arc<dyn Fn() -> Arc<dyn StateMachine> + Send + Sync>,
        commands: Arc<dyn Fn(&mut Rng) -> Bytes + Send + Sync>,
    },
}

/// Settings of a production simulation.
#[derive(Clone, Debug)]
pub struct ProductionConfig {
    /// Voting members (bootstrapped together).
    pub nodes: usize,
    /// Node processes that exist (ids `1..=max_nodes`); those beyond `nodes` start empty
    /// and join through membership changes (default: none beyond `nodes`).
    pub max_nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Client operations in all.
    pub ops: usize,
    /// Keys the KV workloads use.
    pub keys: u64,
    /// Fraction of the KV reads sent at `Lease` level (the rest `Linearizable`).
    pub lease_read_fraction: f64,
    /// The faults injected.
    pub faults: Faults,
    /// Mean simulated milliseconds between two nemesis actions.
    pub nemesis_interval_ms: u64,
    /// Bit flips in synced data (where the storage models them).
    pub bit_flips: bool,
    /// The protocol settings (the id is set per node).
    pub raft: RaftConfig,
    /// Entries between two snapshots of the handler's policy.
    pub snapshot_every: u64,
    /// Simulated seconds before a run is declared stuck.
    pub max_sim_seconds: u64,
    /// A scripted fault schedule instead of the random nemesis.
    pub scenario: Option<Scenario>,
}

impl Default for ProductionConfig {
    fn default() -> Self {
        let raft = RaftConfig {
            max_entries_per_msg: 64,
            purge_keep_entries: 16,
            ..RaftConfig::default()
        };
        Self {
            nodes: 3,
            max_nodes: 3,
            clients: 4,
            ops: 300,
            keys: 4,
            lease_read_fraction: 0.4,
            faults: Faults::all(),
            nemesis_interval_ms: 150,
            bit_flips: true,
            raft,
            snapshot_every: 40,
            max_sim_seconds: 600,
            scenario: None,
        }
    }
}

/// One simulation of production nodes; see the module docs.
#[derive(Clone)]
pub struct Simulation {
    seed: u64,
    cfg: ProductionConfig,
    workload: Workload,
    make_storage: Option<Arc<dyn Fn() -> Arc<dyn SimStorage> + Send + Sync>>,
    bugs: RuntimeBugs,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.seed)
            .field("cfg", &self.cfg)
            .field("bugs", &self.bugs)
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// A simulation of `seed` with the defaults: three voters, the core KV, in-memory
    /// storage, every fault kind.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            cfg: ProductionConfig::default(),
            workload: Workload::Models,
            make_storage: None,
            bugs: RuntimeBugs::NONE,
        }
    }

    /// The same simulation for another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Runs the nodes on the user's machine (a fresh one per node start, as a restarted
    /// process builds it); clients propose commands from `commands`. Checked: state machine
    /// safety, determinism (equal snapshots at the end), liveness.
    pub fn machine<M, K>(mut self, make: impl Fn() -> M + Send + Sync + 'static) -> Self
    where
        M: IntoStateMachine<K>,
    {
        let commands = match &self.workload {
            Workload::Custom { commands, .. } => commands.clone(),
            _ => Arc::new(|rng: &mut Rng| Bytes::from(rng.next_u64().to_le_bytes().to_vec())),
        };
        self.workload = Workload::Custom {
            make: Arc::new(move || make().into_state_machine()),
            commands,
        };
        self
    }

    /// The commands the clients propose to a [`Simulation::machine`] (default: 8 random
    /// bytes).
    pub fn commands(mut self, gen: impl Fn(&mut Rng) -> Bytes + Send + Sync + 'static) -> Self {
        if let Workload::Custom { commands, .. } = &mut self.workload {
            *commands = Arc::new(gen);
        } else {
            let make: Arc<dyn Fn() -> Arc<dyn StateMachine> + Send + Sync> =
                Arc::new(|| Arc::new(crate::state_machine::KvStateMachine::new()));
            self.workload = Workload::Custom {
                make,
                commands: Arc::new(gen),
            };
        }
        self
    }

    /// Runs the core KV in memory (rebuilt from snapshot and log at each start) on every
    /// seed.
    pub fn kv(mut self) -> Self {
        self.workload = Workload::Kv;
        self
    }

    /// Runs the core KV as a machine that persists itself (`last_applied = Some`) on every
    /// seed.
    pub fn persisted_kv(mut self) -> Self {
        self.workload = Workload::PersistedKv;
        self
    }

    /// Stores logs and snapshots on `storage` (default: [`MemStorage`]); `make` builds a
    /// fresh one per run.
    pub fn storage(
        mut self,
        make: impl Fn() -> Arc<dyn SimStorage> + Send + Sync + 'static,
    ) -> Self {
        self.make_storage = Some(Arc::new(make));
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, cfg: ProductionConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &ProductionConfig {
        &self.cfg
    }

    /// Runs `max_nodes` node processes, of which the first three are the initial voters:
    /// the nemesis then also adds learners, promotes them and removes voters (between 3
    /// and `max_nodes` voters). The default runs three processes and no such changes.
    pub fn with_membership_changes(mut self, max_nodes: usize) -> Self {
        self.cfg.max_nodes = max_nodes;
        self.cfg.faults.membership = true;
        self
    }

    /// The scripted Figure 8 schedule (§5.4.2) instead of the random nemesis: five voters,
    /// one entry per AppendEntries (so old entries and the new leader's own entry travel
    /// separately), 300 operations.
    pub fn figure8(mut self) -> Self {
        self.cfg.nodes = 5;
        self.cfg.max_nodes = 5;
        self.cfg.ops = 300;
        self.cfg.faults.membership = false;
        // The script decides every crash.
        self.cfg.faults.crash_after_vote = 0.0;
        self.cfg.raft.max_entries_per_msg = 1;
        self.cfg.scenario = Some(Scenario::Figure8);
        self
    }

    /// Client operations in all.
    pub fn ops(mut self, ops: usize) -> Self {
        self.cfg.ops = ops;
        self
    }

    /// The faults injected.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.cfg.faults = faults;
        self
    }

    /// Plants runtime bugs, to show the checkers find them.
    pub fn plant(mut self, bugs: RuntimeBugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// Plants protocol bugs.
    pub fn protocol_bugs(mut self, bugs: crate::config::Bugs) -> Self {
        self.cfg.raft.bugs = bugs;
        self
    }

    /// Runs the simulation to the end on this thread.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        if matches!(self.workload, Workload::Models) {
            self.workload = if !self.seed.is_multiple_of(2) {
                Workload::PersistedKv
            } else {
                Workload::Kv
            };
        }
        let storage = match &self.make_storage {
            Some(make) => make(),
            None => Arc::new(MemStorage::default()),
        };
        world::run(self, storage)
    }
}

/// The runtime bugs by name, for `cargo xtask sim --bug NAME`.
pub fn runtime_bug_by_name(name: &str) -> Option<RuntimeBugs> {
    let mut b = RuntimeBugs::NONE;
    match name {
        "sessions-lost-on-restart" => b.sessions_lost_on_restart = true,
        "lease-from-processed-ticks" => b.lease_from_processed_ticks = true,
        "purge-before-snapshot-meta" => b.purge_before_snapshot_meta = true,
        "recovery-trusts-unsynced" => b.recovery_trusts_unsynced = true,
        "durable-before-sync" => b.durable_before_sync = true,
        "lease-read-before-apply" => b.lease_read_before_apply = true,
        _ => return None,
    }
    Some(b)
}

/// Names accepted by [`runtime_bug_by_name`].
pub const RUNTIME_BUG_NAMES: [&str; 6] = [
    "sessions-lost-on-restart",
    "lease-from-processed-ticks",
    "purge-before-snapshot-meta",
    "recovery-trusts-unsynced",
    "durable-before-sync",
    "lease-read-before-apply",
];
