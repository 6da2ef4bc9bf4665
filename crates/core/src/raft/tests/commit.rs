//! commit (§5.4.2, thesis §3.6.2 Figure 8)

use super::*;

#[test]
fn old_term_entries_commit_only_through_a_current_term_entry_figure_8_section_5_4_2() {
    let voters = [1, 2, 3];
    let mut net = Net::new(&voters);
    // Node 1 has an entry from term 2 that nobody else has; it becomes leader in term 3.
    let r1 = restored(1, 2, vec![entry(1, 1), entry(2, 2)]);
    net.nodes.insert(1, r1);
    for id in [2, 3] {
        let r = restored(id, 2, vec![entry(1, 1)]);
        net.nodes.insert(id, r);
    }
    // Followers make index 2 (term 2) durable but never the leader's term-3 blank at index 3.
    net.hold_sync.extend([2, 3]);
    net.elect(1);
    assert_eq!(net.node(1).term(), 3);
    net.deliver();
    for id in [2, 3] {
        let r = net.nodes.get_mut(&id).unwrap();
        let write = r.log_writes;
        r.step(Event::LogDurable {
            last: LogId::new(2, 2),
            write,
        });
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
