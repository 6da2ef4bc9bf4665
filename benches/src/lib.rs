//! Shared code for lockstep's benchmarks.
//!
//! [`cluster`] is the cluster benchmark (`cargo xtask bench`; see docs/performance.md).
//!
//! [`MemCluster`] drives N protocol instances in one thread with no I/O at all: messages are
//! delivered from a queue, storage writes are durable at once, entries are "applied" by
//! acknowledging them. It measures the cost of the protocol itself.

pub mod cluster;

use std::collections::VecDeque;

use bytes::Bytes;
use lockstep_core::{
    Action, Event, Index, InitialState, LogId, MembershipConfig, Message, NodeId, Proposal, Raft,
    RaftConfig, Role, SnapshotMeta,
};

/// N protocol instances wired together in memory.
pub struct MemCluster {
    nodes: Vec<Raft>,
    leader: usize,
    queue: VecDeque<Message>,
    next_request: u64,
    last_snapshot: Index,
}

/// Entries between two snapshots in the benchmark cluster.
const SNAPSHOT_EVERY: Index = 8192;

impl MemCluster {
    /// A bootstrapped cluster of `n` voters with a leader elected.
    pub fn new(n: u64) -> Self {
        let config = MembershipConfig::new_voters(1..=n);
        let nodes = (1..=n)
            .map(|id| {
                let cfg = RaftConfig {
                    id,
                    ..RaftConfig::default()
                };
                Raft::new(cfg, InitialState::bootstrap(config.clone()), id)
                    .expect("valid bootstrap state")
            })
            .collect();
        let mut c = Self {
            nodes,
            leader: 0,
            queue: VecDeque::new(),
            next_request: 1,
            last_snapshot: 0,
        };
        for _ in 0..200 {
            for id in 1..=n {
                c.step(id, Event::Tick);
            }
            c.run();
            if let Some(l) = c.nodes.iter().position(|r| r.role() == Role::Leader) {
                c.leader = l;
                return c;
            }
        }
        panic!("no leader elected in 200 ticks");
    }

    /// Commit index of the leader.
    pub fn commit_index(&self) -> Index {
        self.nodes[self.leader].commit_index()
    }

    /// Proposes `batch` commands of `payload` bytes to the leader as one event, and runs the
    /// cluster until they are committed on the leader.
    pub fn propose_and_commit(&mut self, batch: usize, payload: &Bytes) {
        let proposals = (0..batch)
            .map(|_| {
                self.next_request += 1;
                Proposal {
                    id: self.next_request,
                    session: None,
                    data: payload.clone(),
                }
            })
            .collect();
        let target = self.nodes[self.leader].last_log_id().index + batch as u64;
        self.step(self.leader as NodeId + 1, Event::Propose(proposals));
        self.run();
        assert!(self.commit_index() >= target, "entries should commit");
        if self.commit_index() >= self.last_snapshot + SNAPSHOT_EVERY {
            self.snapshot_all();
        }
    }

    /// Every node snapshots at its applied index, so the log is purged as in a real node
    /// (otherwise the benchmark would mostly measure memory growth).
    fn snapshot_all(&mut self) {
        for i in 0..self.nodes.len() {
            let r = &self.nodes[i];
            let applied = r.applied_index();
            let Some(term) = r.entry(applied).map(|e| e.log_id.term) else {
                continue;
            };
            let meta = SnapshotMeta {
                last_log_id: LogId::new(term, applied),
                membership: r.membership_at(applied),
            };
            self.step(i as NodeId + 1, Event::SnapshotBuilt(meta));
        }
        self.last_snapshot = self.commit_index();
    }

    fn step(&mut self, id: NodeId, event: Event) {
        let i = (id - 1) as usize;
        self.nodes[i].step(event);
        loop {
            let actions = self.nodes[i].take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                let r = &mut self.nodes[i];
                match a {
                    Action::SaveHardState(hs) => r.step(Event::HardStateSaved(hs)),
                    Action::AppendLog { entries, write } => {
                        if let Some(last) = entries.last() {
                            r.step(Event::LogDurable {
                                last: last.log_id,
                                write,
                            });
                        }
                    }
                    Action::Apply { entries, .. } => {
                        if let Some(last) = entries.last() {
                            r.step(Event::Applied(last.log_id.index));
                        }
                    }
                    Action::InstallSnapshot { meta, .. } => r.step(Event::SnapshotInstalled(meta)),
                    Action::Send(m) => self.queue.push_back(m),
                    _ => {}
                }
            }
        }
    }

    fn run(&mut self) {
        while let Some(m) = self.queue.pop_front() {
            let to = m.to;
            self.step(to, Event::Message(m));
        }
    }
}
