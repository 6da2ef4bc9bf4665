//! A deterministic cluster simulator (feature `testing`).
//!
//! One seed drives everything: N protocol instances with simulated disks (group commit,
//! crash loses what is not synced, torn tail writes, failed fsync is fail-stop), a simulated
//! network (drop, delay, reorder, duplicate, symmetric and one-way partitions), process
//! faults (crash/restart, pause), concurrent KV clients with sessions, membership changes,
//! leader transfers, snapshots and log purges. After every step the [`checker`] verifies
//! Raft's safety invariants; at the end the client history is checked for linearizability,
//! every fault is healed and the cluster must converge and accept a new write.
//!
//! A failing run reports its seed and the command that replays it bit for bit.

pub mod checker;
pub mod disk;
pub mod kv;
pub mod linearizability;
mod network;
mod node;
mod world;

use crate::config::{Bugs, RaftConfig};

pub use world::World;

/// Which faults the nemesis injects.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Crash and later restart nodes.
    pub crash: bool,
    /// On a crash, let a random prefix of unsynced writes survive, tearing the last one.
    pub torn_writes: bool,
    /// Make an fsync fail (the node stops, and is restarted later).
    pub fsync_failure: bool,
    /// Pause nodes (a long GC pause or a stopped VM).
    pub pause: bool,
    /// Symmetric and one-way partitions.
    pub partition: bool,
    /// Probability that a message is dropped.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Membership changes (grow / shrink between 1 and `max_nodes` voters, learners).
    pub membership: bool,
    /// Leader transfers.
    pub transfer: bool,
    /// Snapshots and log purges.
    pub snapshot: bool,
}

impl Faults {
    /// Every fault kind on.
    pub fn all() -> Self {
        Self {
            crash: true,
            torn_writes: true,
            fsync_failure: true,
            pause: true,
            partition: true,
            drop_rate: 0.02,
            duplicate_rate: 0.02,
            membership: true,
            transfer: true,
            snapshot: true,
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        Self {
            crash: false,
            torn_writes: false,
            fsync_failure: false,
            pause: false,
            partition: false,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            membership: false,
            transfer: false,
            snapshot: false,
        }
    }
}

/// Parameters of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Voters at bootstrap.
    pub initial_voters: usize,
    /// Node processes that exist (ids `1..=max_nodes`); the others can be added later.
    pub max_nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Client operations to invoke.
    pub ops: usize,
    /// Distinct keys the clients use.
    pub keys: u64,
    /// Fraction of reads sent as `Lease` reads (the rest are `Linearizable`).
    pub lease_read_fraction: f64,
    /// Injected faults.
    pub faults: Faults,
    /// Mean simulated milliseconds between two nemesis actions.
    pub nemesis_interval_ms: u64,
    /// Protocol configuration template (the id is set per node).
    pub raft: RaftConfig,
    /// Upper bound on simulated time in seconds before the run is declared stuck.
    pub max_sim_seconds: u64,
    /// Check log matching across all nodes every this many steps.
    pub log_matching_every: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        let raft = RaftConfig { max_entries_per_msg: 64, purge_keep_entries: 16, ..RaftConfig::default() };
        Self {
            initial_voters: 3,
            max_nodes: 7,
            clients: 5,
            ops: 1000,
            keys: 5,
            lease_read_fraction: 0.3,
            faults: Faults::all(),
            nemesis_interval_ms: 150,
            raft,
            max_sim_seconds: 3600,
            log_matching_every: 500,
        }
    }
}

impl SimConfig {
    /// The same configuration with a deliberately broken protocol.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.raft.bugs = bugs;
        self
    }
}

/// The deliberately broken protocol variants, by name, for `cargo xtask sim --bug NAME`.
pub fn bug_by_name(name: &str) -> Option<Bugs> {
    let mut b = Bugs::default();
    match name {
        "commit-old-term-by-count" => b.commit_old_term_by_count = true,
        "vote-before-durable" => b.vote_before_durable = true,
        "read-index-without-heartbeat" => b.read_index_without_heartbeat = true,
        "ack-before-durable" => b.ack_before_durable = true,
        "unsafe-membership-changes" => b.unsafe_membership_changes = true,
        _ => return None,
    }
    Some(b)
}

/// Names accepted by [`bug_by_name`].
pub const BUG_NAMES: [&str; 5] = [
    "commit-old-term-by-count",
    "vote-before-durable",
    "read-index-without-heartbeat",
    "ack-before-durable",
    "unsafe-membership-changes",
];

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Simulated time in microseconds.
    pub sim_micros: u64,
    /// Operations with a definite answer.
    pub ops_ok: u64,
    /// Operations whose outcome is unknown (timed out).
    pub ops_unknown: u64,
    /// Operations refused (not leader, etc.) after all retries.
    pub ops_failed: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Crashes injected (including fsync failures).
    pub crashes: u64,
    /// Membership changes committed.
    pub membership_changes: u64,
    /// Leader transfers completed.
    pub transfers: u64,
    /// Snapshots installed from a leader.
    pub snapshot_installs: u64,
    /// Highest commit index reached.
    pub commit_index: u64,
}

/// A run that broke an invariant, with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// Step at which the failure was found.
    pub step: u64,
    /// Simulated time in microseconds.
    pub sim_micros: u64,
    /// Which check failed.
    pub check: &'static str,
    /// Details.
    pub detail: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} failed check `{}` at step {} (t = {} us):", self.seed, self.check, self.step, self.sim_micros)?;
        writeln!(f, "{}", self.detail)?;
        write!(f, "replay with: cargo xtask sim --seed {}", self.seed)
    }
}

impl std::error::Error for SimFailure {}

/// Runs one seed to completion.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    World::new(seed, config.clone()).run()
}
