//! membership (thesis chapter 4)

use super::*;

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
