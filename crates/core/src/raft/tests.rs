//! Protocol rules, one test each, named after the Raft paper (§) or thesis (thesis §)
//! section they check. A tiny synchronous harness stands in for the runtime: storage writes
//! become durable at once unless a test holds them back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;
use crate::event::{Proposal, ReadConsistency};
use crate::membership::MembershipChange;
use crate::message::AppendResult;

fn cfg(id: NodeId) -> RaftConfig {
    RaftConfig {
        id,
        ..RaftConfig::default()
    }
}

fn bootstrap(id: NodeId, voters: &[NodeId]) -> Raft {
    let init = InitialState::bootstrap(MembershipConfig::new_voters(voters.iter().copied()));
    let mut r = Raft::new(cfg(id), init, 7).unwrap();
    r.sticky_after_start = false;
    r
}

fn entry(term: Term, index: Index) -> Entry {
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
struct Net {
    nodes: BTreeMap<NodeId, Raft>,
    queue: VecDeque<Message>,
    isolated: BTreeSet<NodeId>,
    hold_sync: BTreeSet<NodeId>,
    out: Vec<(NodeId, Action)>,
    next_id: RequestId,
}

impl Net {
    fn new(voters: &[NodeId]) -> Self {
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

    fn add_empty(&mut self, id: NodeId) {
        let mut r = Raft::new(cfg(id), InitialState::default(), 9).unwrap();
        r.sticky_after_start = false;
        self.nodes.insert(id, r);
    }

    fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    fn step(&mut self, id: NodeId, ev: Event) {
        let Some(r) = self.nodes.get_mut(&id) else {
            return;
        };
        r.step(ev);
        self.process(id);
    }

    fn process(&mut self, id: NodeId) {
        loop {
            let actions = self.nodes.get_mut(&id).unwrap().take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                let r = self.nodes.get_mut(&id).unwrap();
                match a {
                    Action::SaveHardState(hs) => r.step(Event::HardStateSaved(hs)),
                    Action::AppendLog(es) => {
                        if !self.hold_sync.contains(&id) {
                            if let Some(last) = es.last() {
                                r.step(Event::LogDurable(last.log_id));
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
    fn sync(&mut self, id: NodeId) {
        let last = self.node(id).last_log_id();
        self.step(id, Event::LogDurable(last));
    }

    fn deliver(&mut self) {
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

    fn elect(&mut self, id: NodeId) {
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
    fn expire_leases(&mut self) {
        for r in self.nodes.values_mut() {
            if r.role() != Role::Leader {
                r.election_elapsed = u64::from(r.cfg.election_ticks);
            }
        }
    }

    fn tick(&mut self, id: NodeId, n: usize) {
        for _ in 0..n {
            self.step(id, Event::Tick);
        }
    }

    fn tick_all(&mut self, n: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..n {
            for id in &ids {
                self.step(*id, Event::Tick);
            }
            self.deliver();
        }
    }

    fn propose(&mut self, id: NodeId, data: &'static [u8]) -> RequestId {
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

    fn request(&mut self, id: NodeId, make: impl FnOnce(RequestId) -> Event) -> RequestId {
        let rid = self.next_id;
        self.next_id += 1;
        self.step(id, make(rid));
        rid
    }

    fn responses(&self, rid: RequestId) -> Vec<&Result<Reply, ClientError>> {
        self.out
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Respond { id, outcome } if *id == rid => Some(outcome),
                _ => None,
            })
            .collect()
    }

    fn read_ready(&self, rid: RequestId) -> bool {
        self.out
            .iter()
            .any(|(_, a)| matches!(a, Action::ReadReady { ids, .. } if ids.contains(&rid)))
    }

    fn applied_with_waiter(&self, rid: RequestId) -> bool {
        self.out.iter().any(|(_, a)| matches!(a, Action::Apply { waiters, .. } if waiters.iter().any(|(_, w)| *w == rid)))
    }
}

fn sends(actions: &[Action]) -> Vec<&Message> {
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

// ---- election (§5.2, §5.4.1, thesis §9.6, §6.2) ----------------------------------------

#[test]
fn follower_campaigns_after_randomized_election_timeout_section_5_2() {
    let mut net = Net::new(&[1, 2, 3]);
    let timeout = net.node(1).randomized_timeout;
    assert!(
        (10..20).contains(&timeout),
        "timeout {timeout} must be in [election, 2*election)"
    );
    net.tick(1, timeout as usize - 1);
    assert_eq!(net.node(1).role(), Role::Follower);
    net.tick(1, 1);
    assert_eq!(net.node(1).role(), Role::PreCandidate);
    net.deliver();
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), 1);
    assert_eq!(net.node(2).leader(), Some(1));
}

#[test]
fn at_most_one_vote_per_term_section_5_2() {
    let mut r = bootstrap(1, &[1, 2, 3]);
    let req = |from| {
        Event::Message(Message {
            from,
            to: 1,
            term: 5,
            body: MessageBody::VoteRequest {
                pre_vote: false,
                last_log_id: LogId::new(0, 1),
                transfer: false,
            },
        })
    };
    r.step(req(2));
    r.step(Event::HardStateSaved(HardState {
        term: 5,
        vote: Some(2),
        commit: 0,
    }));
    r.step(req(3));
    let grants: Vec<(NodeId, bool)> = sends(&r.take_actions())
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted, .. } => Some((m.to, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(2, true), (3, false)]);
}

#[test]
fn vote_refused_to_candidate_with_less_up_to_date_log_section_5_4_1() {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let init = InitialState {
        hard_state: HardState {
            term: 2,
            vote: None,
            commit: 0,
        },
        snapshot,
        entries: vec![entry(1, 1), entry(2, 2)],
        ..Default::default()
    };
    let mut r = Raft::new(cfg(1), init, 1).unwrap();
    r.sticky_after_start = false;
    // Higher term but last log term 1 < 2: refused.
    r.step(Event::Message(Message {
        from: 2,
        to: 1,
        term: 3,
        body: MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::new(1, 5),
            transfer: false,
        },
    }));
    // Same last term but shorter log: refused.
    r.step(Event::Message(Message {
        from: 3,
        to: 1,
        term: 4,
        body: MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::new(2, 1),
            transfer: false,
        },
    }));
    let acts = r.take_actions();
    let hs = acts
        .iter()
        .rev()
        .find_map(|a| {
            if let Action::SaveHardState(h) = a {
                Some(*h)
            } else {
                None
            }
        })
        .unwrap();
    r.step(Event::HardStateSaved(hs));
    let granted: Vec<bool> = sends(&r.take_actions())
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
        .collect();
    assert_eq!(granted, vec![false, false]);
}

#[test]
fn vote_reply_waits_until_the_vote_is_durable_figure_2() {
    let mut r = bootstrap(1, &[1, 2, 3]);
    r.step(Event::Message(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::new(0, 1),
            transfer: false,
        },
    }));
    let acts = r.take_actions();
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::SaveHardState(HardState {
            term: 1,
            vote: Some(2),
            ..
        })
    )));
    assert!(
        sends(&acts).is_empty(),
        "no reply before the vote is durable"
    );
    r.step(Event::HardStateSaved(HardState {
        term: 1,
        vote: Some(2),
        commit: 0,
    }));
    let acts = r.take_actions();
    assert!(matches!(
        sends(&acts)[..],
        [Message {
            body: MessageBody::VoteResponse { granted: true, .. },
            ..
        }]
    ));
}

#[test]
fn candidate_wins_only_after_its_own_vote_is_durable_figure_2() {
    let mut r = bootstrap(1, &[1]);
    r.start_election(true);
    assert_eq!(
        r.role(),
        Role::Candidate,
        "single voter: quorum reached, but vote not durable yet"
    );
    r.step(Event::HardStateSaved(HardState {
        term: 1,
        vote: Some(1),
        commit: 0,
    }));
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn pre_vote_does_not_raise_terms_of_a_partitioned_node_thesis_9_6() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolated.insert(3);
    net.tick(3, 100);
    assert_eq!(
        net.node(3).term(),
        1,
        "pre-vote rounds never persist a new term"
    );
    net.isolated.clear();
    net.tick_all(3);
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "the rejoining node did not disrupt the leader"
    );
    assert_eq!(net.node(1).term(), 1);
}

#[test]
fn follower_that_heard_from_leader_ignores_vote_requests_thesis_4_2_3() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    // Node 3 (say, a removed server) campaigns without pre-vote at a higher term.
    let m = Message {
        from: 3,
        to: 2,
        term: 9,
        body: MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::new(9, 9),
            transfer: false,
        },
    };
    net.step(2, Event::Message(m));
    assert_eq!(
        net.node(2).term(),
        1,
        "a sticky follower does not even adopt the term"
    );
    assert_eq!(net.node(2).leader(), Some(1));
}

#[test]
fn leader_steps_down_without_a_quorum_check_quorum_thesis_6_2() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolated.extend([2, 3]);
    net.tick(1, 25);
    assert_eq!(net.node(1).role(), Role::Follower);
}

#[test]
fn higher_term_makes_a_leader_step_down_section_5_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.step(
        1,
        Event::Message(Message {
            from: 2,
            to: 1,
            term: 7,
            body: MessageBody::HeartbeatResponse { read_seq: 0 },
        }),
    );
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).term(), 7);
}

#[test]
fn stale_leader_gets_current_term_in_reply_section_5_1() {
    let mut r = bootstrap(1, &[1, 2, 3]);
    r.step(Event::Message(Message {
        from: 2,
        to: 1,
        term: 3,
        body: MessageBody::Heartbeat {
            leader_commit: 0,
            read_seq: 1,
        },
    }));
    r.step(Event::HardStateSaved(HardState {
        term: 3,
        vote: None,
        commit: 0,
    }));
    r.take_actions();
    r.step(Event::Message(Message {
        from: 3,
        to: 1,
        term: 2,
        body: MessageBody::AppendEntries {
            prev_log_id: LogId::default(),
            entries: vec![],
            leader_commit: 0,
        },
    }));
    let acts = r.take_actions();
    let m = sends(&acts)[0];
    assert_eq!(
        (m.to, m.term),
        (3, 3),
        "the stale leader learns the newer term"
    );
}

// ---- replication (§5.3) --------------------------------------------------------------

#[test]
fn entries_replicate_and_commit_on_a_majority_section_5_3() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let rid = net.propose(1, b"a");
    net.deliver();
    assert!(net.applied_with_waiter(rid));
    for id in [1, 2, 3] {
        assert_eq!(
            net.node(id).commit_index(),
            3,
            "bootstrap entry, blank and command committed on node {id}"
        );
    }
}

#[test]
fn follower_acknowledges_only_durable_entries_persistence_ordering() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.hold_sync.extend([2, 3]);
    net.propose(1, b"a");
    net.deliver();
    assert_eq!(
        net.node(1).commit_index(),
        2,
        "followers accepted index 3 but it is not durable"
    );
    net.sync(2);
    net.deliver();
    assert_eq!(net.node(1).commit_index(), 3);
}

#[test]
fn leader_counts_itself_only_after_its_own_fsync_persistence_ordering() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.hold_sync.extend([1, 3]);
    net.propose(1, b"a");
    net.deliver();
    assert_eq!(
        net.node(1).commit_index(),
        2,
        "one durable follower is not a majority without the leader's own fsync"
    );
    net.sync(1);
    assert_eq!(net.node(1).commit_index(), 3);
}

#[test]
fn conflicting_suffix_is_truncated_and_replaced_section_5_3() {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let mut r = Raft::new(
        cfg(2),
        InitialState {
            hard_state: HardState {
                term: 2,
                ..Default::default()
            },
            snapshot,
            entries: vec![entry(1, 1), entry(2, 2), entry(2, 3)],
            ..Default::default()
        },
        1,
    )
    .unwrap();
    r.step(Event::Message(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_id: LogId::new(1, 1),
            entries: vec![entry(3, 2)],
            leader_commit: 0,
        },
    }));
    let acts = r.take_actions();
    assert!(acts.contains(&Action::TruncateLog { from: 2 }));
    assert_eq!(r.last_log_id(), LogId::new(3, 2));
}

#[test]
fn consistency_check_rejects_with_a_backtracking_hint_section_5_3() {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let entries = vec![
        entry(1, 1),
        entry(1, 2),
        entry(2, 3),
        entry(2, 4),
        entry(2, 5),
    ];
    let mut r = Raft::new(
        cfg(2),
        InitialState {
            hard_state: HardState {
                term: 2,
                ..Default::default()
            },
            snapshot,
            entries,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    // The leader (term 4) probes at index 6 with prev term 3.
    r.step(Event::Message(Message {
        from: 1,
        to: 2,
        term: 4,
        body: MessageBody::AppendEntries {
            prev_log_id: LogId::new(3, 6),
            entries: vec![],
            leader_commit: 0,
        },
    }));
    r.step(Event::HardStateSaved(HardState {
        term: 4,
        vote: None,
        commit: 0,
    }));
    let acts = r.take_actions();
    let hint = sends(&acts).iter().find_map(|m| match m.body {
        MessageBody::AppendResponse(AppendResult::Conflict { rejected, hint }) => {
            Some((rejected, hint))
        }
        _ => None,
    });
    assert_eq!(
        hint,
        Some((6, LogId::new(2, 5))),
        "the follower's last entry with term <= 3"
    );
}

#[test]
fn diverged_follower_converges_with_few_probes_section_5_3() {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let mut net = Net::new(&[1, 2, 3]);
    // Nodes 1 and 2 hold 1-1, 3-2, 3-3; node 3 holds 49 entries of a deposed term-2 leader.
    for id in [1, 2] {
        let init = InitialState {
            hard_state: HardState {
                term: 3,
                ..Default::default()
            },
            snapshot: snapshot.clone(),
            entries: vec![entry(1, 1), entry(3, 2), entry(3, 3)],
            ..Default::default()
        };
        let mut r = Raft::new(cfg(id), init, id).unwrap();
        r.sticky_after_start = false;
        net.nodes.insert(id, r);
    }
    let junk: Vec<Entry> = std::iter::once(entry(1, 1))
        .chain((2..=50).map(|i| entry(2, i)))
        .collect();
    let init = InitialState {
        hard_state: HardState {
            term: 2,
            ..Default::default()
        },
        snapshot,
        entries: junk,
        ..Default::default()
    };
    let mut r3 = Raft::new(cfg(3), init, 3).unwrap();
    r3.sticky_after_start = false;
    net.nodes.insert(3, r3);
    net.elect(1);
    let mut rejections = 0;
    while let Some(m) = net.queue.pop_front() {
        if m.from == 3
            && matches!(
                m.body,
                MessageBody::AppendResponse(AppendResult::Conflict { .. })
            )
        {
            rejections += 1;
        }
        let to = m.to;
        net.step(to, Event::Message(m));
    }
    assert_eq!(net.node(3).last_log_id(), net.node(1).last_log_id());
    assert!(
        rejections <= 1,
        "one hint skips the whole term-2 section, not 48 probes ({rejections})"
    );
}

#[test]
fn pipelining_stops_at_max_inflight_messages_flow_control() {
    let mut net = Net::new(&[1, 2]);
    for r in net.nodes.values_mut() {
        r.cfg.max_inflight_msgs = 2;
        r.cfg.max_entries_per_msg = 1;
    }
    net.elect(1);
    net.queue.clear();
    for _ in 0..5 {
        net.propose(1, b"x");
    }
    let appends = net
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
        .count();
    assert_eq!(appends, 2, "only two AppendEntries in flight");
    net.deliver();
    assert_eq!(
        net.node(2).last_log_id(),
        net.node(1).last_log_id(),
        "acks release the window until caught up"
    );
}

#[test]
fn lost_append_messages_are_recovered_by_heartbeats_section_5_3() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.queue.retain(|m| m.to != 3);
    net.deliver();
    net.tick_all(10);
    assert_eq!(net.node(3).last_log_id(), net.node(1).last_log_id());
}

// ---- commit (§5.4.2, thesis §3.6.2 Figure 8) -------------------------------------------

#[test]
fn old_term_entries_commit_only_through_a_current_term_entry_figure_8_section_5_4_2() {
    let voters = [1, 2, 3];
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters(voters),
    };
    let mut net = Net::new(&voters);
    // Node 1 has an entry from term 2 that nobody else has; it becomes leader in term 3.
    let init = InitialState {
        hard_state: HardState {
            term: 2,
            ..Default::default()
        },
        snapshot: snapshot.clone(),
        entries: vec![entry(1, 1), entry(2, 2)],
        ..Default::default()
    };
    let mut r1 = Raft::new(cfg(1), init, 3).unwrap();
    r1.sticky_after_start = false;
    net.nodes.insert(1, r1);
    for id in [2, 3] {
        let init = InitialState {
            hard_state: HardState {
                term: 2,
                ..Default::default()
            },
            snapshot: snapshot.clone(),
            entries: vec![entry(1, 1)],
            ..Default::default()
        };
        let mut r = Raft::new(cfg(id), init, id).unwrap();
        r.sticky_after_start = false;
        net.nodes.insert(id, r);
    }
    // Followers make index 2 (term 2) durable but never the leader's term-3 blank at index 3.
    net.hold_sync.extend([2, 3]);
    net.elect(1);
    assert_eq!(net.node(1).term(), 3);
    net.deliver();
    for id in [2, 3] {
        let r = net.nodes.get_mut(&id).unwrap();
        r.step(Event::LogDurable(LogId::new(2, 2)));
        net.process(id);
    }
    net.deliver();
    assert_eq!(
        net.node(1).commit_index(),
        0,
        "a majority holds 2-2, but it is from an old term: not committed by counting"
    );
    net.sync(2);
    net.deliver();
    assert_eq!(
        net.node(1).commit_index(),
        3,
        "committing the term-3 entry commits 2-2 with it"
    );
}

#[test]
fn entries_are_applied_only_when_committed_and_durable_locally() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.hold_sync.insert(3);
    net.propose(1, b"a");
    net.deliver();
    assert_eq!(net.node(3).commit_index(), 3);
    assert!(
        net.node(3).applied_index() < 3,
        "node 3 knows index 3 is committed but has not synced it"
    );
    net.sync(3);
    assert_eq!(net.node(3).applied_index(), 3);
}

// ---- reads (thesis §6.4, §6.4.1) ---------------------------------------------------------

#[test]
fn read_index_waits_for_a_heartbeat_quorum_thesis_6_4() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.deliver();
    net.queue.clear();
    let rid = net.request(1, |id| Event::Read {
        id,
        consistency: ReadConsistency::Linearizable,
    });
    assert!(!net.read_ready(rid), "not before leadership is confirmed");
    net.deliver();
    assert!(net.read_ready(rid));
}

#[test]
fn partitioned_leader_never_answers_a_linearizable_read_thesis_6_4() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolated.insert(1);
    let rid = net.request(1, |id| Event::Read {
        id,
        consistency: ReadConsistency::Linearizable,
    });
    net.tick(1, 30);
    net.deliver();
    assert!(!net.read_ready(rid));
    assert!(
        matches!(net.responses(rid)[..], [Err(ClientError::NotLeader { .. })]),
        "the read fails when the leader steps down"
    );
}

#[test]
fn reads_wait_for_the_leaders_first_commit_in_its_term_thesis_6_4() {
    let mut net = Net::new(&[1, 2, 3]);
    net.hold_sync.extend([2, 3]);
    net.elect(1);
    net.deliver();
    let rid = net.request(1, |id| Event::Read {
        id,
        consistency: ReadConsistency::Linearizable,
    });
    net.deliver();
    assert!(
        !net.read_ready(rid),
        "the blank entry of the new term is not committed yet"
    );
    net.sync(2);
    net.deliver();
    assert!(net.read_ready(rid));
}

#[test]
fn lease_read_is_served_without_a_round_trip_while_the_lease_holds_thesis_6_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(2); // a heartbeat round confirms the lease
    net.queue.clear();
    let rid = net.request(1, |id| Event::Read {
        id,
        consistency: ReadConsistency::Lease,
    });
    assert!(net.read_ready(rid), "served at once");
    assert!(net.queue.is_empty());
    // With followers silent, the lease runs out and the read needs a round again.
    net.isolated.extend([2, 3]);
    net.tick(1, 9);
    let rid = net.request(1, |id| Event::Read {
        id,
        consistency: ReadConsistency::Lease,
    });
    assert!(!net.read_ready(rid));
}

#[test]
fn lease_ends_when_a_leader_transfer_starts_thesis_3_10() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(2);
    assert!(net.node(1).lease_valid());
    net.isolated.insert(2);
    net.request(1, |id| Event::TransferLeader { id, to: 2 });
    assert!(!net.node(1).lease_valid());
}

// ---- leader transfer (thesis §3.10) ------------------------------------------------------

#[test]
fn leader_transfer_hands_over_with_timeout_now_thesis_3_10() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.deliver();
    let rid = net.request(1, |id| Event::TransferLeader { id, to: 3 });
    let refused = net.propose(1, b"during");
    assert!(matches!(
        net.responses(refused)[..],
        [Err(ClientError::TransferInProgress)]
    ));
    net.deliver();
    assert_eq!(net.node(3).role(), Role::Leader);
    assert_eq!(net.node(3).term(), 2);
    assert!(matches!(
        net.responses(rid)[..],
        [Ok(Reply::LeaderTransferred(3))]
    ));
}

#[test]
fn leader_transfer_times_out_when_the_target_is_unreachable_thesis_3_10() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolated.insert(3);
    let rid = net.request(1, |id| Event::TransferLeader { id, to: 3 });
    net.tick(1, 10);
    assert!(matches!(
        net.responses(rid)[..],
        [Err(ClientError::TransferTimedOut(3))]
    ));
    let ok = net.propose(1, b"after");
    assert!(net.responses(ok).is_empty(), "proposals are accepted again");
}

// ---- membership (thesis chapter 4) -------------------------------------------------------

#[test]
fn learner_catches_up_but_never_votes_or_campaigns_thesis_4_2_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.add_empty(4);
    net.elect(1);
    let rid = net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::AddLearner(4),
    });
    net.deliver();
    assert!(matches!(
        net.responses(rid)[..],
        [Ok(Reply::MembershipChanged(_))]
    ));
    net.propose(1, b"a");
    net.deliver();
    assert_eq!(net.node(4).last_log_id(), net.node(1).last_log_id());
    net.tick(4, 100);
    assert_eq!(
        net.node(4).role(),
        Role::Follower,
        "a learner never campaigns"
    );
    assert_eq!(net.node(1).membership().voters.len(), 3);
}

#[test]
fn joint_consensus_enters_and_leaves_automatically_thesis_4_3() {
    let mut net = Net::new(&[1, 2, 3]);
    for id in [4, 5] {
        net.add_empty(id);
    }
    net.elect(3);
    let target: BTreeSet<NodeId> = [3, 4, 5].into();
    let rid = net.request(3, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::SetVoters(target.clone()),
    });
    assert!(
        net.node(3).membership().is_joint(),
        "two voters change: joint first"
    );
    net.deliver();
    let final_config = net.node(3).membership().clone();
    assert!(!final_config.is_joint());
    assert_eq!(final_config.voters, target);
    assert!(
        matches!(&net.responses(rid)[..], [Ok(Reply::MembershipChanged(c))] if c.voters == target)
    );
    let seen: Vec<bool> = net
        .node(5)
        .log
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(c) => Some(c.is_joint()),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        vec![false, true, false],
        "the log holds the bootstrap config, C_old,new, then C_new"
    );
}

#[test]
fn single_server_change_skips_joint_consensus_thesis_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.add_empty(4);
    net.elect(1);
    net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::SetVoters([1, 2, 3, 4].into()),
    });
    assert!(!net.node(1).membership().is_joint());
    assert_eq!(net.node(1).membership().voters.len(), 4);
}

#[test]
fn only_one_membership_change_at_a_time_thesis_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.add_empty(4);
    net.add_empty(5);
    net.elect(1);
    net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::AddLearner(4),
    });
    let second = net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::AddLearner(5),
    });
    assert!(matches!(
        net.responses(second)[..],
        [Err(ClientError::MembershipChangeInProgress)]
    ));
}

#[test]
fn membership_change_refused_before_the_leader_commits_in_its_term_thesis_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.add_empty(4);
    net.hold_sync.extend([1, 2, 3]);
    net.elect(1);
    let rid = net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::AddLearner(4),
    });
    assert!(matches!(
        net.responses(rid)[..],
        [Err(ClientError::MembershipChangeInProgress)]
    ));
}

#[test]
fn invalid_membership_change_is_refused_with_a_reason() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let rid = net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::SetVoters(BTreeSet::new()),
    });
    assert!(matches!(
        net.responses(rid)[..],
        [Err(ClientError::InvalidMembership(
            crate::MembershipError::NoVoters
        ))]
    ));
}

#[test]
fn removed_leader_steps_down_once_the_change_commits_thesis_4_2_2() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.request(1, |id| Event::ChangeMembership {
        id,
        change: MembershipChange::SetVoters([2, 3].into()),
    });
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "still leads while the change is uncommitted"
    );
    net.deliver();
    assert_eq!(net.node(1).role(), Role::Follower);
    net.tick_all(40);
    let leaders: Vec<NodeId> = [2, 3]
        .into_iter()
        .filter(|id| net.node(*id).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1, "the remaining voters elect a leader");
}

// ---- snapshots (§7) ----------------------------------------------------------------------

fn snapshot_now(net: &mut Net, id: NodeId) {
    let r = net.node(id);
    let applied = r.applied_index();
    let meta = SnapshotMeta {
        last_log_id: LogId::new(r.log.term(applied).unwrap(), applied),
        membership: r.membership_at(applied),
    };
    net.step(id, Event::SnapshotBuilt(meta));
}

#[test]
fn snapshot_purges_the_log_but_keeps_a_tail_section_7() {
    let mut net = Net::new(&[1]);
    net.nodes.get_mut(&1).unwrap().cfg.purge_keep_entries = 3;
    net.elect(1);
    for _ in 0..10 {
        net.propose(1, b"x");
    }
    snapshot_now(&mut net, 1);
    let r = net.node(1);
    assert_eq!(r.snapshot_meta().last_log_id.index, 12);
    assert_eq!(
        r.log_offset().index,
        9,
        "three entries kept behind the snapshot"
    );
}

#[test]
fn follower_behind_the_purge_point_gets_a_snapshot_section_7() {
    let mut net = Net::new(&[1, 2, 3]);
    for r in net.nodes.values_mut() {
        r.cfg.purge_keep_entries = 0;
    }
    net.elect(1);
    net.isolated.insert(3);
    for _ in 0..10 {
        net.propose(1, b"x");
    }
    net.deliver();
    snapshot_now(&mut net, 1);
    net.isolated.clear();
    net.propose(1, b"y");
    net.deliver();
    net.tick_all(4);
    assert!(net
        .out
        .iter()
        .any(|(id, a)| *id == 3 && matches!(a, Action::InstallSnapshot { .. })));
    assert_eq!(net.node(3).last_log_id(), net.node(1).last_log_id());
    assert_eq!(net.node(3).applied_index(), net.node(1).commit_index());
}

// ---- clients, input validation, recovery -------------------------------------------------

#[test]
fn proposal_to_a_follower_names_the_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let rid = net.propose(2, b"x");
    assert!(matches!(
        net.responses(rid)[..],
        [Err(ClientError::NotLeader { leader: Some(1) })]
    ));
}

#[test]
fn overwritten_proposal_is_reported_with_unknown_outcome_section_5_3() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolated.insert(1);
    let rid = net.propose(1, b"lost");
    net.expire_leases();
    net.elect(2);
    net.propose(2, b"new");
    net.deliver();
    net.isolated.clear();
    net.tick_all(4);
    assert!(matches!(
        net.responses(rid)[..],
        [Err(ClientError::ProposalDropped)]
    ));
}

#[test]
fn malformed_messages_are_dropped_without_panicking() {
    let mut r = bootstrap(1, &[1, 2, 3]);
    let bad = [
        Message {
            from: 2,
            to: 9,
            term: 1,
            body: MessageBody::TimeoutNow,
        },
        Message {
            from: 0,
            to: 1,
            term: 1,
            body: MessageBody::TimeoutNow,
        },
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::new(1, 1),
                entries: vec![entry(1, 5)],
                leader_commit: 9,
            },
        },
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![entry(5, 1)],
                leader_commit: 0,
            },
        },
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::VoteRequest {
                pre_vote: false,
                last_log_id: LogId::new(4, 1),
                transfer: false,
            },
        },
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::new(0, u64::MAX),
                entries: vec![entry(1, 0)],
                leader_commit: u64::MAX,
            },
        },
    ];
    for m in bad {
        r.step(Event::Message(m));
    }
    assert!(r.take_actions().is_empty());
    assert_eq!(
        r.last_log_id(),
        LogId::new(0, 1),
        "only the bootstrap entry"
    );
    // Absurd but well-formed values are clamped, not trusted.
    r.step(Event::Message(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::Heartbeat {
            leader_commit: u64::MAX,
            read_seq: 1,
        },
    }));
    assert_eq!(
        r.commit_index(),
        r.last_log_id().index,
        "clamped to the local log"
    );
}

#[test]
fn restart_recovers_term_vote_log_and_commit_from_initial_state() {
    let snapshot = SnapshotMeta {
        last_log_id: LogId::default(),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    let init = InitialState {
        hard_state: HardState {
            term: 4,
            vote: Some(2),
            commit: 2,
        },
        snapshot,
        entries: vec![entry(1, 1), entry(4, 2), entry(4, 3)],
        ..Default::default()
    };
    let r = Raft::new(cfg(1), init, 1).unwrap();
    assert_eq!(
        (r.term(), r.commit_index(), r.last_log_id()),
        (4, 2, LogId::new(4, 3))
    );
    assert_eq!(r.status().vote, Some(2));
}

#[test]
fn inconsistent_initial_state_is_rejected_with_a_reason() {
    let init = InitialState {
        entries: vec![entry(1, 1), entry(1, 3)],
        ..Default::default()
    };
    let err = Raft::new(cfg(1), init, 1).unwrap_err();
    assert!(matches!(err, InitError::LogGap { .. }), "{err}");
    assert!(err.to_string().contains("gap"));
    let init = InitialState {
        log_offset: LogId::new(1, 5),
        ..Default::default()
    };
    assert!(matches!(
        Raft::new(cfg(1), init, 1),
        Err(InitError::PurgedBeyondSnapshot { .. })
    ));
    let bad = RaftConfig {
        heartbeat_ticks: 0,
        ..cfg(1)
    };
    assert!(matches!(
        Raft::new(bad, InitialState::default(), 1),
        Err(InitError::Config(_))
    ));
}
