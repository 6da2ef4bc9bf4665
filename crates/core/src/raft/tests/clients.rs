//! clients, input validation, recovery

use super::*;

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

/// Arbitrary messages from the network never panic a node (debug builds check overflow).
#[test]
fn random_messages_never_panic_a_node_in_any_role() {
    use crate::rng::Rng;
    let mut rng = Rng::new(99);
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"x");
    net.deliver();
    let mut candidate = bootstrap(4, &[4, 5, 6]);
    candidate.start_election(false);
    net.nodes.insert(4, candidate);
    let pick = |rng: &mut Rng| -> u64 {
        match rng.range(0, 4) {
            0 => rng.next_u64(),
            1 => u64::MAX - rng.range(0, 3),
            _ => rng.range(0, 8),
        }
    };
    for _ in 0..20_000 {
        let to = *rng.pick(&[1, 2, 4]).unwrap();
        let from = rng.range(0, 7);
        let term = pick(&mut rng);
        let id = |rng: &mut Rng| LogId::new(pick(rng), pick(rng));
        let body = match rng.range(0, 10) {
            0 => MessageBody::VoteRequest {
                pre_vote: rng.chance(0.5),
                last_log_id: id(&mut rng),
                transfer: rng.chance(0.5),
            },
            1 => MessageBody::VoteResponse {
                pre_vote: rng.chance(0.5),
                granted: rng.chance(0.5),
            },
            2 => {
                let prev = id(&mut rng);
                let n = rng.range(0, 4);
                let entries = (1..=n)
                    .map(|k| {
                        entry(
                            prev.term.saturating_add(rng.range(0, 2)),
                            prev.index.wrapping_add(k),
                        )
                    })
                    .collect();
                MessageBody::AppendEntries {
                    prev_log_id: prev,
                    entries,
                    leader_commit: pick(&mut rng),
                }
            }
            3 => MessageBody::AppendResponse(AppendResult::Success {
                last_accepted: pick(&mut rng),
                durable: pick(&mut rng),
            }),
            4 => MessageBody::AppendResponse(AppendResult::Conflict {
                rejected: pick(&mut rng),
                hint: id(&mut rng),
            }),
            5 => MessageBody::Heartbeat {
                leader_commit: pick(&mut rng),
                read_seq: pick(&mut rng),
            },
            6 => MessageBody::HeartbeatResponse {
                read_seq: pick(&mut rng),
                durable: pick(&mut rng),
            },
            7 => MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    last_log_id: id(&mut rng),
                    membership: MembershipConfig::new_voters([1, 2, 3]),
                },
            },
            _ => MessageBody::TimeoutNow,
        };
        net.step(
            to,
            Event::Message(Message {
                from,
                to,
                term,
                body,
            }),
        );
        net.queue.clear();
    }
}
