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
pub mod production;
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
    /// Probability that a newly elected leader crashes within 5 ms of its election, the
    /// window in which it commits entries of earlier terms (Figure 8).
    pub new_leader_crash: f64,
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
            new_leader_crash: 0.1,
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
            new_leader_crash: 0.0,
        }
    }
}

/// A scripted fault schedule that replaces the random nemesis. The script picks its
/// victims by observing roles; the seed still decides every delay and message fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The paper's Figure 8 (§5.4.2), repeated: a leader replicates entries to one follower
    /// only and crashes; the next leader writes conflicting entries alone and crashes; the
    /// first comes back, is re-elected, replicates its old-term entries to a majority and
    /// crashes within milliseconds; the second comes back. A protocol that commits old-term
    /// entries by counting replicas loses committed entries here.
    Figure8,
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
    /// A scripted fault schedule instead of the random nemesis.
    pub scenario: Option<Scenario>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let raft = RaftConfig {
            max_entries_per_msg: 64,
            purge_keep_entries: 16,
            ..RaftConfig::default()
        };
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
            scenario: None,
        }
    }
}

impl SimConfig {
    /// The scripted Figure 8 schedule on five voters, one entry per AppendEntries (so old
    /// entries and the new leader's own entry travel separately).
    pub fn figure8() -> Self {
        let mut cfg = Self {
            initial_voters: 5,
            max_nodes: 5,
            ops: 300,
            scenario: Some(Scenario::Figure8),
            ..Self::default()
        };
        cfg.faults.membership = false;
        cfg.raft.max_entries_per_msg = 1;
        cfg
    }

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
    /// The command that replays this run.
    pub replay: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed check `{}` at step {} (t = {} us):",
            self.seed, self.check, self.step, self.sim_micros
        )?;
        writeln!(f, "{}", self.detail)?;
        write!(f, "replay with: {}", self.replay)
    }
}

impl std::error::Error for SimFailure {}

/// The `cargo xtask sim` command that reruns `seed` with `config` (options the runner
/// understands; other differences from the default are named in a comment).
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    let d = SimConfig::default();
    let mut cmd = format!("cargo xtask sim --seed {seed}");
    let mut opt = |name: &str, v: u64, default: u64| {
        if v != default {
            cmd.push_str(&format!(" --{name} {v}"));
        }
    };
    opt("ops", config.ops as u64, d.ops as u64);
    opt(
        "nemesis-ms",
        config.nemesis_interval_ms,
        d.nemesis_interval_ms,
    );
    opt(
        "max-entries",
        config.raft.max_entries_per_msg as u64,
        d.raft.max_entries_per_msg as u64,
    );
    opt("clients", config.clients as u64, d.clients as u64);
    opt("nodes", config.max_nodes as u64, d.max_nodes as u64);
    opt(
        "voters",
        config.initial_voters as u64,
        d.initial_voters as u64,
    );
    opt(
        "new-leader-crash-pct",
        (config.faults.new_leader_crash * 100.0).round() as u64,
        (d.faults.new_leader_crash * 100.0).round() as u64,
    );
    if config.scenario == Some(Scenario::Figure8) {
        cmd.push_str(" --scenario figure8");
    }
    if !config.raft.pre_vote && !config.raft.check_quorum {
        cmd.push_str(" --no-prevote-checkquorum");
    }
    if !config.faults.membership && d.faults.membership {
        cmd.push_str(" --no-membership");
    }
    for name in BUG_NAMES {
        if bug_by_name(name) == Some(config.raft.bugs) {
            cmd.push_str(&format!(" --bug {name}"));
        }
    }
    cmd
}

/// Runs seeds `0..limit` of `run` on `threads` threads until one fails; returns the
/// smallest failing seed found, with the check that failed (for tests that assert a planted
/// bug is caught within a bound, or that a correct build passes).
pub fn hunt<R>(
    limit: u64,
    threads: usize,
    run: impl Fn(u64) -> Result<R, SimFailure> + Send + Sync,
) -> Option<(u64, &'static str)> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= limit {
                            return None;
                        }
                        if let Err(f) = run(seed) {
                            stop.store(true, Ordering::Relaxed);
                            return Some((seed, f.check));
                        }
                    }
                    None
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok().flatten())
            .min()
    })
}

/// Runs one seed to completion.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    World::new(seed, config.clone()).run()
}
