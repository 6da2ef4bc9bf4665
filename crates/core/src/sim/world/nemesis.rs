//! The nemesis: random faults and operator actions, and the scripted Figure 8 schedule.

use std::collections::BTreeSet;

use super::*;

impl World {
    // ---- nemesis -------------------------------------------------------------------------

    pub(super) fn nemesis_delay(&mut self) -> u64 {
        let m = self.cfg.nemesis_interval_ms * MS;
        self.rng.range(m / 2, m * 3 / 2 + 1)
    }

    pub(super) fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_up())
            .collect()
    }

    /// The up node that is leader in the highest term, if any.
    pub(super) fn leader(&self) -> Option<usize> {
        self.up_nodes()
            .into_iter()
            .filter(|i| {
                self.nodes[*i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .max_by_key(|i| self.nodes[*i].raft.as_ref().map_or(0, |r| r.term()))
    }

    /// Injects one random fault or operator action.
    pub(super) fn nemesis(&mut self) -> Step {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let d = self.nemesis_delay();
        self.at(d, SimEvent::Nemesis);
        let f = self.cfg.faults.clone();
        let kinds: Vec<u8> = [
            (f.crash, 0),
            (f.fsync_failure, 1),
            (f.pause, 2),
            (f.partition, 3),
            (f.membership, 4),
            (f.transfer, 5),
            (f.snapshot, 6),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        let Some(&kind) = self.rng.pick(&kinds) else {
            return Ok(());
        };
        let up = self.up_nodes();
        let Some(&random) = self.rng.pick(&up) else {
            return Ok(());
        };
        // Half of the faults target the leader: leader changes are where Raft is subtle.
        let victim = match self.leader() {
            Some(l) if self.rng.chance(0.5) => l,
            _ => random,
        };
        match kind {
            0 => {
                if self.nodes.len() - up.len() < self.nodes.len() / 2 {
                    self.crash(victim);
                }
            }
            1 => self.nodes[victim].fail_next_sync = true,
            2 => {
                let d = self.rng.range(30 * MS, 400 * MS);
                self.nodes[victim].paused_until = self.now + d;
                self.at(d, SimEvent::Unpause { node: victim });
            }
            3 => {
                let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                if self.rng.chance(0.5) {
                    let leader_id = self.nodes[victim].id;
                    let side: BTreeSet<NodeId> = all
                        .iter()
                        .copied()
                        .filter(|id| *id == leader_id || self.rng.chance(0.3))
                        .collect();
                    self.net.split(&side, &all);
                } else {
                    for _ in 0..self.rng.range(1, 4) {
                        let (a, b) = (
                            self.rng.range(1, all.len() as u64 + 1),
                            self.rng.range(1, all.len() as u64 + 1),
                        );
                        if a != b {
                            self.net.block(a, b);
                        }
                    }
                }
                let d = self.rng.range(50 * MS, 600 * MS);
                self.at(d, SimEvent::Heal);
            }
            4 => self.change_membership()?,
            5 => {
                if let Some(l) = self.leader() {
                    let voters: Vec<NodeId> = self.nodes[l].raft.as_ref().map_or(Vec::new(), |r| {
                        r.membership().voters.iter().copied().collect()
                    });
                    if let Some(&to) = self.rng.pick(&voters) {
                        let id = self.nodes[l].register(Waiter::Operator);
                        self.step_node(l, Event::TransferLeader { id, to })?;
                    }
                }
            }
            _ => self.take_snapshot(victim)?,
        }
        Ok(())
    }

    /// One step of the scripted Figure 8 schedule; reschedules itself.
    pub(super) fn figure8(&mut self) -> Step {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let d = self.rng.range(2 * MS, 12 * MS);
        self.at(d, SimEvent::Script);
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let f = self.figure8;
        let waited = self.now - f.since;
        let mut next = f;
        match f.stage {
            // (a) A leader keeps writing, but reaches only one follower.
            0 => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let up: Vec<usize> = self.up_nodes().into_iter().filter(|i| *i != l).collect();
                let Some(&follower) = self.rng.pick(&up) else {
                    return Ok(());
                };
                self.net.heal();
                self.net
                    .split(&[self.nodes[l].id, self.nodes[follower].id].into(), &all);
                next = Figure8 {
                    stage: 1,
                    first: l,
                    second: 0,
                    since: self.now,
                };
            }
            // (b) It crashes; the others elect a new leader, which is cut off at once.
            1 if waited > self.rng.range(10 * MS, 60 * MS) => {
                self.crash_for(f.first, 10_000 * MS);
                next.stage = 2;
                next.since = self.now;
            }
            2 => match self.leader() {
                Some(m) if m != f.first => {
                    self.net.heal();
                    let others: BTreeSet<NodeId> = all
                        .iter()
                        .copied()
                        .filter(|id| *id != self.nodes[m].id)
                        .collect();
                    self.net.split(&others, &all);
                    next = Figure8 {
                        stage: 3,
                        second: m,
                        since: self.now,
                        ..f
                    };
                }
                _ if waited > 2_000 * MS => next = Figure8::default(),
                _ => {}
            },
            // (c) The second leader wrote alone; it crashes, the first comes back.
            3 if waited > self.rng.range(5 * MS, 40 * MS) => {
                self.crash_for(f.second, 10_000 * MS);
                self.net.heal();
                if !self.nodes[f.first].is_up() {
                    self.boot(f.first)?;
                }
                next.stage = 4;
                next.since = self.now;
            }
            // (d) If the first is re-elected, it dies within milliseconds; then the second returns.
            4 => match self.leader() {
                Some(l) if l == f.first => {
                    let d = self.rng.range(0, 4 * MS);
                    let generation = self.nodes[l].generation;
                    self.at(
                        d,
                        SimEvent::Crash {
                            node: l,
                            generation,
                        },
                    );
                    next.stage = 5;
                    next.since = self.now;
                }
                Some(_) => next = Figure8::default(),
                None if waited > 2_000 * MS => next = Figure8::default(),
                None => {}
            },
            5 if waited > 5 * MS => {
                if !self.nodes[f.second].is_up() {
                    self.boot(f.second)?;
                }
                next.stage = 6;
                next.since = self.now;
            }
            6 if waited > 300 * MS => {
                for i in 0..self.nodes.len() {
                    if !self.nodes[i].is_up() {
                        self.boot(i)?;
                    }
                }
                next = Figure8::default();
            }
            _ => {}
        }
        self.figure8 = next;
        Ok(())
    }

    /// Crashes a node; it stays down (the script restarts it) unless `max_down` passes.
    pub(super) fn crash_for(&mut self, i: usize, max_down: u64) {
        if self.nodes[i].is_up() {
            self.crash_with_restart(i, max_down);
        }
    }

    pub(super) fn change_membership(&mut self) -> Step {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let Some(config) = self.nodes[l].raft.as_ref().map(|r| r.membership().clone()) else {
            return Ok(());
        };
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let outside: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !config.contains(*id))
            .collect();
        let learners: Vec<NodeId> = config.learners.iter().copied().collect();
        let voters: Vec<NodeId> = config.voters.iter().copied().collect();
        let change = match self.rng.range(0, 10) {
            0..=3 => {
                let size = self.rng.range(1, all.len() as u64 + 1) as usize;
                let mut pool = all.clone();
                let mut set = BTreeSet::new();
                while set.len() < size {
                    let i = self.rng.range(0, pool.len() as u64) as usize;
                    set.insert(pool.swap_remove(i));
                }
                MembershipChange::SetVoters(set)
            }
            4..=5 => match self.rng.pick(&outside) {
                Some(&id) => MembershipChange::AddLearner(id),
                None => return Ok(()),
            },
            6..=7 => match self.rng.pick(&learners) {
                Some(&id) => {
                    MembershipChange::SetVoters(config.voters.iter().copied().chain([id]).collect())
                }
                None => return Ok(()),
            },
            _ => match self.rng.pick(&voters) {
                Some(&id) if voters.len() > 1 => MembershipChange::SetVoters(
                    config.voters.iter().copied().filter(|v| *v != id).collect(),
                ),
                _ => return Ok(()),
            },
        };
        let id = self.nodes[l].register(Waiter::Operator);
        self.step_node(l, Event::ChangeMembership { id, change })
    }

    /// Snapshots a node's state machine at its applied index (durable at once), so the
    /// protocol can purge its log.
    pub(super) fn take_snapshot(&mut self, i: usize) -> Step {
        let node = &mut self.nodes[i];
        let meta = SnapshotMeta {
            last_log_id: node.kv.applied,
            membership: node.kv.membership.clone(),
        };
        let current = node
            .disk
            .snapshot
            .as_ref()
            .map_or(0, |(m, _)| m.last_log_id.index);
        if meta.last_log_id.index <= current {
            return Ok(());
        }
        node.disk.store_snapshot(meta.clone(), node.kv.clone());
        self.step_node(i, Event::SnapshotBuilt(meta))
    }
}
