//! replication (§5.3)

use super::*;

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
    let mut r = restored(2, 2, vec![entry(1, 1), entry(2, 2), entry(2, 3)]);
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
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::TruncateLog { from: 2, .. })));
    assert_eq!(r.last_log_id(), LogId::new(3, 2));
}

#[test]
fn consistency_check_rejects_with_a_backtracking_hint_section_5_3() {
    let entries = vec![
        entry(1, 1),
        entry(1, 2),
        entry(2, 3),
        entry(2, 4),
        entry(2, 5),
    ];
    let mut r = restored(2, 2, entries);
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
    let mut net = Net::new(&[1, 2, 3]);
    // Nodes 1 and 2 hold 1-1, 3-2, 3-3; node 3 holds 49 entries of a deposed term-2 leader.
    for id in [1, 2] {
        let r = restored(id, 3, vec![entry(1, 1), entry(3, 2), entry(3, 3)]);
        net.nodes.insert(id, r);
    }
    let junk: Vec<Entry> = std::iter::once(entry(1, 1))
        .chain((2..=50).map(|i| entry(2, i)))
        .collect();
    let r3 = restored(3, 2, junk);
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

#[test]
fn lost_durable_acknowledgement_is_repaired_by_the_next_heartbeat_section_5_3() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.hold_sync.extend([2, 3]);
    net.propose(1, b"a");
    net.deliver();
    // The followers sync, but every acknowledgement they send is lost.
    for id in [2, 3] {
        net.sync(id);
    }
    net.queue.clear();
    assert_eq!(net.node(1).commit_index(), 2);
    net.tick_all(2);
    assert_eq!(
        net.node(1).commit_index(),
        3,
        "heartbeat responses carry the durable index"
    );
}

#[test]
fn a_sync_that_predates_a_truncation_does_not_cover_re_appended_entries_persistence_ordering() {
    let mut r = restored(2, 2, vec![entry(1, 1), entry(2, 2), entry(2, 3)]);
    // A term-3 leader replaces index 2 and 3.
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
    r.step(Event::HardStateSaved(HardState {
        term: 3,
        vote: None,
        commit: 1,
    }));
    let truncation = r.last_truncation_write;
    assert!(truncation > 0);
    // A report from a sync that started before the truncation is void.
    r.step(Event::LogDurable {
        last: LogId::new(3, 2),
        write: truncation - 1,
    });
    assert_eq!(r.status().durable, 1);
    r.step(Event::LogDurable {
        last: LogId::new(3, 2),
        write: r.log_writes,
    });
    assert_eq!(r.status().durable, 2);
}
