//! reads (thesis §6.4, §6.4.1)

use super::*;

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

#[test]
fn sticky_follower_ignores_a_higher_term_response_so_the_lease_holds_thesis_6_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(2);
    // A late rejection of a pre-vote that node 2 sent before it heard from the leader.
    let late = Message {
        from: 3,
        to: 2,
        term: 5,
        body: MessageBody::VoteResponse {
            pre_vote: true,
            granted: false,
        },
    };
    net.step(2, Event::Message(late));
    assert_eq!(
        net.node(2).term(),
        1,
        "still sticky: the higher term is not adopted"
    );
    assert_eq!(net.node(2).leader(), Some(1));
    // And so a vote request of that term is still refused while the lease runs.
    let req = Message {
        from: 3,
        to: 2,
        term: 5,
        body: MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::new(9, 99),
            transfer: false,
        },
    };
    net.step(2, Event::Message(req));
    assert_eq!(net.node(2).term(), 1);
}

#[test]
fn lease_read_grant_matches_when_the_protocol_serves_lease_reads_at_once_thesis_6_4_1() {
    let mut net = Net::new(&[1, 2, 3]);
    net.hold_sync.extend([2, 3]);
    net.elect(1);
    net.deliver();
    assert_eq!(
        net.node(1).lease_read(),
        None,
        "no grant before an entry of the new term commits"
    );
    net.sync(2);
    net.deliver();
    net.tick_all(2);
    let (ticks, index) = net.node(1).lease_read().expect("lease confirmed");
    assert!(ticks > 0);
    assert_eq!(index, net.node(1).commit_index());
    assert_eq!(net.node(2).lease_read(), None, "followers never grant");
    // The grant shrinks with time and ends with the lease.
    net.isolated.extend([2, 3]);
    net.tick(1, 1);
    let (left, _) = net.node(1).lease_read().expect("still within the lease");
    assert_eq!(left, ticks - 1);
    net.tick(1, 9);
    assert_eq!(net.node(1).lease_read(), None, "lease ran out");
}

#[test]
fn lease_read_grant_ends_when_a_leader_transfer_starts_thesis_3_10() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(2);
    assert!(net.node(1).lease_read().is_some());
    net.isolated.insert(2);
    net.request(1, |id| Event::TransferLeader { id, to: 2 });
    assert_eq!(net.node(1).lease_read(), None);
}
