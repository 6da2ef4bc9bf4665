//! The scripted Figure 8 schedule (§5.4.2) on production nodes: instead of random faults,
//! a script that watches roles and crashes and cuts off the leaders that make old-term
//! entries dangerous. The seed still decides every delay and every message's fate.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::world::{Step, World};
use super::Crash;
use crate::types::NodeId;

/// Where the script is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Figure8 {
    stage: u8,
    /// The first leader (replicates to one follower only, then crashes).
    first: usize,
    /// The follower that holds the first leader's entries.
    follower: usize,
    /// The second leader (writes alone, then crashes).
    second: usize,
    since: Instant,
}

impl Default for Figure8 {
    fn default() -> Self {
        Self {
            stage: 0,
            first: 0,
            follower: 0,
            second: 0,
            since: Instant::now(),
        }
    }
}

/// How long a scripted crash lasts unless the script restarts the node first.
const DOWN: Duration = Duration::from_secs(10);

impl World {
    fn all_ids(&self) -> Vec<NodeId> {
        self.slots.iter().map(|s| s.id).collect()
    }

    fn split_net(&self, side: &BTreeSet<NodeId>) {
        let all = self.all_ids();
        let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
        net.links.heal();
        net.links.split(side, &all);
    }

    fn heal_net(&self) {
        self.net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .links
            .heal();
    }

    /// Loses `leader`'s AppendEntries that carry entries of its own term.
    fn hold_own_term(&self, leader: Option<NodeId>) {
        self.net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold_own_term = leader;
    }

    /// Loses the AppendEntries of `ids` (and of no one else).
    fn mute(&self, ids: BTreeSet<NodeId>) {
        self.net.lock().unwrap_or_else(|p| p.into_inner()).muted = ids;
    }

    async fn restart_if_down(&mut self, i: usize) -> Step {
        if self.slots[i].node.is_none() {
            self.boot(i).await?;
        }
        Ok(())
    }

    /// Back to the start: every node up, every link whole.
    async fn reset(&mut self) -> Result<Figure8, crate::sim::checker::Violation> {
        self.heal_net();
        self.mute(BTreeSet::new());
        self.hold_own_term(None);
        for i in 0..self.slots.len() {
            self.restart_if_down(i).await?;
        }
        Ok(Figure8::default())
    }

    /// One step of the script; the caller runs it every few milliseconds.
    ///
    /// (a) A leader keeps writing but reaches one follower only, then crashes. (b) Another
    /// leader is elected and cut off at once, so its entries stay its own; it crashes and
    /// the first returns. (c) If the first (or its follower) is elected again, it replicates
    /// its old-term entries to a majority but none of its own term, and dies; then the
    /// second returns and, its last term being newer, can be elected and overwrite them.
    /// A protocol that commits old-term entries by counting replicas loses them here
    /// (§5.4.2: only entries of the leader's current term are committed by counting).
    pub(super) async fn figure8(&mut self) -> Step {
        let f = self.script;
        let waited = f.since.elapsed();
        let ms = |lo, hi, w: &mut World| Duration::from_millis(w.rng.range(lo, hi));
        let mut next = f;
        match f.stage {
            0 => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let others: Vec<usize> = self.running().into_iter().filter(|i| *i != l).collect();
                let Some(&follower) = self.rng.pick(&others) else {
                    return Ok(());
                };
                self.split_net(&BTreeSet::from([self.slots[l].id, self.slots[follower].id]));
                next = Figure8 {
                    stage: 1,
                    first: l,
                    follower,
                    second: 0,
                    since: Instant::now(),
                };
            }
            1 if waited > ms(10, 60, self) => {
                self.crash(f.first, Crash::Process, DOWN).await;
                // Whoever wins next keeps its first entries to itself.
                self.mute(self.all_ids().into_iter().collect());
                next.stage = 2;
                next.since = Instant::now();
            }
            2 => match self.leader() {
                Some(m) if m != f.first => {
                    self.split_net(&BTreeSet::from([self.slots[m].id]));
                    self.mute(BTreeSet::new());
                    next.stage = 3;
                    next.second = m;
                    next.since = Instant::now();
                }
                _ if waited > Duration::from_secs(2) => next = self.reset().await?,
                _ => {}
            },
            3 if waited > ms(5, 40, self) => {
                self.crash(f.second, Crash::Process, DOWN).await;
                self.heal_net();
                self.restart_if_down(f.first).await?;
                next.stage = 4;
                next.since = Instant::now();
            }
            // Either holder of the old-term entries will do. Its entries of its own term
            // are lost: only old-term entries reach the others (Figure 8 (c)).
            4 => match self.leader() {
                Some(l) if l == f.first || l == f.follower => {
                    self.hold_own_term(Some(self.slots[l].id));
                    next.stage = 40;
                    next.first = l;
                    next.since = Instant::now();
                }
                Some(_) => next = self.reset().await?,
                None if waited > Duration::from_secs(2) => next = self.reset().await?,
                None => {}
            },
            // ... long enough for a majority to store them (and, were they committed by
            // counting, to apply them); then it dies.
            40 if waited > ms(10, 60, self) => {
                self.hold_own_term(None);
                self.crash(f.first, Crash::Process, DOWN).await;
                next.stage = 5;
                next.since = Instant::now();
            }
            5 if waited > Duration::from_millis(5) => {
                self.restart_if_down(f.second).await?;
                next.stage = 6;
                next.since = Instant::now();
            }
            6 if waited > Duration::from_millis(300) => next = self.reset().await?,
            _ => {}
        }
        self.script = next;
        Ok(())
    }
}
