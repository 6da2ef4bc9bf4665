//! leader transfer (thesis §3.10)

use super::*;

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
