//! The deterministic simulator (feature `testing`): production nodes under one seed
//! ([`production`]), the fault kinds it injects ([`Faults`]), the deliberately broken
//! protocol variants it must catch ([`bug_by_name`]), what a run reports, and the
//! linearizability checker it and the chaos runs share ([`linearizability`]).
//!
//! A failing run reports its seed and the command that replays it bit for bit.

pub mod checker;
pub mod linearizability;
mod network;
pub mod production;

use crate::config::Bugs;

/// Which faults the nemesis injects.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Crash and later restart nodes.
    pub crash: bool,
    /// On a crash, let a random prefix of unsynced writes survive, tearing the last one.
    pub torn_writes: bool,
    /// Make an fsync fail (the node stops, and is restarted later).
    pub fsync_failure: bool,
    /// Stall nodes (a long GC pause or a stopped VM): timers fire late, nothing is replayed.
    pub pause: bool,
    /// Symmetric and one-way partitions.
    pub partition: bool,
    /// Probability that a message is dropped.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Membership changes (learners, promotions, removals, any voter set at once).
    pub membership: bool,
    /// Leader transfers.
    pub transfer: bool,
    /// Snapshots and log purges.
    pub snapshot: bool,
    /// Probability that a node loses power within a millisecond of granting a vote (the
    /// window in which a vote not yet on disk would be forgotten, §5.2 and Figure 2's
    /// "persistent state").
    pub crash_after_vote: f64,
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
            crash_after_vote: 0.2,
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
            crash_after_vote: 0.0,
        }
    }
}

/// A scripted fault schedule that replaces the random nemesis
/// ([`production::Simulation::figure8`]). The script picks its victims by observing roles;
/// the seed still decides every delay and message fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The paper's Figure 8 (§5.4.2), repeated: a leader replicates entries to one follower
    /// only and crashes; the next leader writes conflicting entries alone and crashes; the
    /// first comes back, is re-elected, replicates its old-term entries (and none of its
    /// own term) to a majority and crashes; the second comes back. A protocol that commits
    /// old-term entries by counting replicas loses committed entries here.
    Figure8,
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
