//! election (§5.2, §5.4.1, thesis §9.6, §6.2)

use super::*;

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
    let mut r = restored(1, 2, vec![entry(1, 1), entry(2, 2)]);
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
            body: MessageBody::HeartbeatResponse {
                read_seq: 0,
                durable: 0,
            },
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

#[test]
fn without_pre_vote_a_candidate_raises_its_term_at_once_section_5_2() {
    let mut net = Net::new(&[1, 2, 3]);
    for r in net.nodes.values_mut() {
        r.cfg.pre_vote = false;
        r.cfg.check_quorum = false;
        r.cfg.lease_reads = false;
    }
    net.isolated.insert(1);
    let timeout = net.node(1).randomized_timeout as usize;
    net.tick(1, timeout);
    assert_eq!(net.node(1).role(), Role::Candidate);
    assert_eq!(
        net.node(1).term(),
        1,
        "no pre-vote round: the term is raised and saved"
    );
    net.isolated.clear();
    net.tick(1, 40);
    net.deliver();
    assert!(net.nodes.values().any(|r| r.role() == Role::Leader));
}
