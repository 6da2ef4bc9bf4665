//! snapshots (§7)

use super::*;

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
