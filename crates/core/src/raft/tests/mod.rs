//! Protocol rules, one test each, named after the Raft paper (§) or thesis (thesis §)
//! section they check. A tiny synchronous harness stands in for the runtime: storage writes
//! become durable at once unless a test holds them back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;
use crate::event::{Proposal, ReadConsistency};
use crate::membership::MembershipChange;
use crate::message::AppendResult;

pub(super) fn cfg(id: NodeId) -> RaftConfig {
    RaftConfig {
        id,
        ..RaftConfig::default()
    }
}

pub(super) fn bootstrap(id: NodeId, voters: &[NodeId]) -> Raft {
    let init = InitialState::bootstrap(MembershipConfig::new_voters(voters.iter().copied()));
    let mut r = Raft::new(cfg(id), init, 7).unwrap();
    r.sticky_after_start = false;
    r
}

/// A node of the voters {1, 2, 3} recovered at `term` with `entries` (the configuration
/// comes from a snapshot at (0, 0)), not sticky to any leader.
pub(super) fn restored(id: NodeId, term: Term, entries: Vec<Entry>) -> Raft {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let init = InitialState {
        hard_state: HardState {
            term,
            ..Default::default()
        },
        snapshot,
        entries,
        ..Default::default()
    };
    let mut r = Raft::new(cfg(id), init, id).unwrap();
    r.sticky_after_start = false;
    r
}

pub(super) fn entry(term: Term, index: Index) -> Entry {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command {
            session: None,
            data: Bytes::from_static(b"x"),
        },
    }
}

/// A synchronous cluster: messages queue until `deliver`; disk writes are durable at once
/// unless the node is in `hold_sync`.
pub(super) struct Net {
    pub(super) nodes: BTreeMap<NodeId, Raft>,
    pub(super) queue: VecDeque<Message>,
    pub(super) isolated: BTreeSet<NodeId>,
    pub(super) hold_sync: BTreeSet<NodeId>,
    pub(super) out: Vec<(NodeId, Action)>,
    pub(super) next_id: RequestId,
}

impl Net {
    pub(super) fn new(voters: &[NodeId]) -> Self {
        let mut n = Self {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            hold_sync: BTreeSet::new(),
            out: Vec::new(),
            next_id: 1,
        };
        for id in voters {
            n.nodes.insert(*id, bootstrap(*id, voters));
        }
        n
    }

    pub(super) fn add_empty(&mut self, id: NodeId) {
        let mut r = Raft::new(cfg(id), InitialState::default(), 9).unwrap();
        r.sticky_after_start = false;
        self.nodes.insert(id, r);
    }

    pub(super) fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    pub(super) fn step(&mut self, id: NodeId, ev: Event) {
        let Some(r) = self.nodes.get_mut(&id) else {
            return;
        };
        r.step(ev);
        self.process(id);
    }

    pub(super) fn process(&mut self, id: NodeId) {
        loop {
            let actions = self.nodes.get_mut(&id).unwrap().take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                let r = self.nodes.get_mut(&id).unwrap();
                match a {
                    Action::SaveHardState(hs) => r.step(Event::HardStateSaved(hs)),
                    Action::AppendLog { entries, write } => {
                        if !self.hold_sync.contains(&id) {
                            if let Some(last) = entries.last() {
                                r.step(Event::LogDurable {
                                    last: last.log_id,
                                    write,
                                });
                            }
                        }
                    }
                    Action::Send(m) => self.queue.push_back(m),
                    Action::Apply { ref entries, .. } => {
                        let last = entries.last().unwrap().log_id.index;
                        r.step(Event::Applied(last));
                        self.out.push((id, a));
                    }
                    Action::InstallSnapshot { ref meta, .. } => {
                        r.step(Event::SnapshotInstalled(meta.clone()));
                        self.out.push((id, a));
                    }
                    Action::TruncateLog { .. } | Action::PurgeLog { .. } => {}
                    other => self.out.push((id, other)),
                }
            }
        }
    }

    /// Makes everything a held node wrote durable.
    pub(super) fn sync(&mut self, id: NodeId) {
        let (last, write) = (self.node(id).last_log_id(), self.node(id).log_writes);
        self.step(id, Event::LogDurable { last, write });
    }

    pub(super) fn deliver(&mut self) {
        let mut guard = 0;
        while let Some(m) = self.queue.pop_front() {
            guard += 1;
            assert!(guard < 100_000, "message storm");
            if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                continue;
            }
            let to = m.to;
            self.step(to, Event::Message(m));
        }
    }

    pub(super) fn elect(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).unwrap().start_election(false);
        self.process(id);
        self.deliver();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "node {id} should have won"
        );
    }

    /// Lets an election timeout pass on every follower (without ticking), so none of them is
    /// sticky to the old leader any more.
    pub(super) fn expire_leases(&mut self) {
        for r in self.nodes.values_mut() {
            if r.role() != Role::Leader {
                r.election_elapsed = u64::from(r.cfg.election_ticks);
            }
        }
    }

    pub(super) fn tick(&mut self, id: NodeId, n: usize) {
        for _ in 0..n {
            self.step(id, Event::Tick);
        }
    }

    pub(super) fn tick_all(&mut self, n: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..n {
            for id in &ids {
                self.step(*id, Event::Tick);
            }
            self.deliver();
        }
    }

    pub(super) fn propose(&mut self, id: NodeId, data: &'static [u8]) -> RequestId {
        let rid = self.next_id;
        self.next_id += 1;
        self.step(
            id,
            Event::Propose(vec![Proposal {
                id: rid,
                session: None,
                data: Bytes::from_static(data),
            }]),
        );
        rid
    }

    pub(super) fn request(
        &mut self,
        id: NodeId,
        make: impl FnOnce(RequestId) -> Event,
    ) -> RequestId {
        let rid = self.next_id;
        self.next_id += 1;
        self.step(id, make(rid));
        rid
    }

    pub(super) fn responses(&self, rid: RequestId) -> Vec<&Result<Reply, ClientError>> {
        self.out
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Respond { id, outcome } if *id == rid => Some(outcome),
                _ => None,
            })
            .collect()
    }

    pub(super) fn read_ready(&self, rid: RequestId) -> bool {
        self.out
            .iter()
            .any(|(_, a)| matches!(a, Action::ReadReady { ids, .. } if ids.contains(&rid)))
    }

    pub(super) fn applied_with_waiter(&self, rid: RequestId) -> bool {
        self.out.iter().any(|(_, a)| matches!(a, Action::Apply { waiters, .. } if waiters.iter().any(|(_, w)| *w == rid)))
    }
}

pub(super) fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Send(m) = a {
                Some(m)
            } else {
                None
            }
        })
        .collect()
}

mod clients;
mod commit;
mod election;
mod membership;
mod reads;
mod replication;
mod snapshot;
mod transfer;
