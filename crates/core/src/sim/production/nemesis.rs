//! The nemesis: one random fault at a time, of the kinds the configuration allows.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::world::{Step, World};
use super::Crash;
use crate::membership::MembershipChange;
use crate::types::NodeId;

impl World {
    /// Indexes of the slots whose node runs and is not stalled.
    pub(super) fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| self.slots[*i].node.is_some() && self.slots[*i].stalled_until.is_none())
            .collect()
    }

    pub(super) fn leader(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .find(|i| self.slots[*i].node.as_ref().is_some_and(|n| n.is_leader()))
    }

    /// The largest minority of the voters (of the outgoing ones too, while joint).
    pub(super) fn minority(&self) -> usize {
        let voters = self.config.voters.len().min(if self.config.is_joint() {
            self.config.outgoing.len()
        } else {
            usize::MAX
        });
        voters.saturating_sub(1) / 2
    }

    /// Voters down or stalled: at most a minority at once, so the run makes progress.
    pub(super) fn impaired(&self) -> usize {
        let running = self.running();
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| self.config.is_voter(s.id) && !running.contains(i))
            .count()
    }

    /// Injects one fault.
    pub(super) async fn nemesis(&mut self) -> Step {
        let f = self.sim.cfg.faults.clone();
        let minority = self.minority();
        let election = u64::from(self.sim.cfg.raft.election_ticks) * 10;
        let running = self.running();
        let Some(&victim) = self.rng.pick(&running) else {
            return Ok(());
        };
        let victim = self
            .leader()
            .filter(|_| self.rng.chance(0.5))
            .unwrap_or(victim);
        let can_impair = self.impaired() < minority;
        match self.rng.range(0, 11) {
            0 | 1 if f.crash && can_impair => {
                let how = if self.rng.chance(0.5) {
                    Crash::Process
                } else {
                    Crash::PowerLoss {
                        torn: f.torn_writes && self.rng.chance(0.5),
                    }
                };
                let d = Duration::from_millis(self.rng.range(20, 400));
                self.crash(victim, how, d).await;
                if self.sim.cfg.bit_flips && self.rng.chance(0.3) {
                    let id = self.slots[victim].id;
                    self.slots[victim].flipped = self.storage.flip_synced_bit(id, &mut self.rng);
                }
            }
            2 | 8 if f.pause && can_impair => {
                // A stall of up to 10 election timeouts: its timers fire late, nothing is
                // replayed. Half the time its links are cut too (a leader that others
                // replace while it sleeps, and that clients still reach).
                let victim = self.leader().unwrap_or(victim);
                let ms = self.rng.range(20, election * 10);
                let until = Instant::now() + Duration::from_millis(ms);
                self.slots[victim].stalled_until = Some(until);
                let _ = self.slots[victim].stall.send(true);
                if f.partition && self.rng.chance(0.5) {
                    let id = self.slots[victim].id;
                    let extra = self.rng.range(50, 300);
                    self.isolate(id, ms + extra);
                }
            }
            3 if f.partition => {
                let ids: Vec<NodeId> = self.slots.iter().map(|s| s.id).collect();
                let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
                if net.rng.chance(0.5) {
                    let side: BTreeSet<NodeId> = ids
                        .iter()
                        .copied()
                        .filter(|_| self.rng.chance(0.4))
                        .collect();
                    net.links.split(&side, &ids);
                } else if let (Some(&a), Some(&b)) = (self.rng.pick(&ids), self.rng.pick(&ids)) {
                    if a != b {
                        net.links.block(a, b);
                    }
                }
                drop(net);
                self.heal_at =
                    Some(Instant::now() + Duration::from_millis(self.rng.range(50, 600)));
            }
            4 if f.fsync_failure && can_impair => {
                let id = self.slots[victim].id;
                self.slots[victim].sync_failing = true;
                self.storage.fail_next_sync(id, &mut self.rng);
            }
            5 | 6 if f.snapshot => {
                if let Some(n) = self.slots[victim].node.clone() {
                    tokio::spawn(async move {
                        let _ = n.trigger_snapshot().await;
                    });
                }
            }
            7 if f.transfer => {
                if let (Some(l), Some(&to)) = (self.leader(), self.rng.pick(&running)) {
                    let to = self.slots[to].id;
                    if let Some(n) = self.slots[l].node.clone() {
                        self.report.transfers += 1;
                        tokio::spawn(async move {
                            let _ = n.transfer_leader(to).await;
                        });
                    }
                }
            }
            9 | 10 if f.membership => self.change_membership(),
            _ => {}
        }
        Ok(())
    }

    /// Grows or shrinks the voters, through learners (between 3 and every node) or to any
    /// set at once, on the leader; the node's own checks refuse a change while another is
    /// under way.
    fn change_membership(&mut self) {
        let Some(l) = self.leader() else { return };
        let cfg = self.config.clone();
        let outsiders: Vec<NodeId> = self
            .slots
            .iter()
            .map(|s| s.id)
            .filter(|id| !cfg.contains(*id))
            .collect();
        let learners: Vec<NodeId> = cfg.learners.iter().copied().collect();
        let voters: Vec<NodeId> = cfg.voters.iter().copied().collect();
        let change = match self.rng.range(0, 4) {
            // Any voter set at once (the protocol goes through joint consensus).
            3 => {
                let all: Vec<NodeId> = self.slots.iter().map(|s| s.id).collect();
                let size = self.rng.range(1, all.len() as u64 + 1) as usize;
                let mut pool = all;
                let mut set = BTreeSet::new();
                while set.len() < size && !pool.is_empty() {
                    let i = self.rng.range(0, pool.len() as u64) as usize;
                    set.insert(pool.swap_remove(i));
                }
                Some(MembershipChange::SetVoters(set))
            }
            0 => self
                .rng
                .pick(&outsiders)
                .map(|id| MembershipChange::AddLearner(*id)),
            1 => self.rng.pick(&learners).map(|id| {
                MembershipChange::SetVoters(cfg.voters.iter().copied().chain([*id]).collect())
            }),
            _ if voters.len() > 3 => {
                let leader = self.slots[l].id;
                self.rng
                    .pick(&voters)
                    .copied()
                    .filter(|v| *v != leader)
                    .map(|v| {
                        MembershipChange::SetVoters(
                            cfg.voters.iter().copied().filter(|x| *x != v).collect(),
                        )
                    })
            }
            _ => None,
        };
        if let (Some(change), Some(n)) = (change, self.slots[l].node.clone()) {
            tokio::spawn(async move {
                let _ = n.change_membership(change).await;
            });
        }
    }

    /// Cuts node `id` off from every peer for `ms`.
    fn isolate(&mut self, id: NodeId, ms: u64) {
        let ids: Vec<NodeId> = self.slots.iter().map(|s| s.id).collect();
        let side = BTreeSet::from([id]);
        self.net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .links
            .split(&side, &ids);
        let at = Instant::now() + Duration::from_millis(ms);
        self.heal_at = Some(self.heal_at.map_or(at, |h| h.max(at)));
    }
}
