//! Raft's safety invariants, checked after every simulation step (Figure 3 of the paper):
//! election safety, log matching, leader completeness, state machine safety; plus
//! "committed entries are durable on a quorum", "committed entries never change",
//! monotonic term / vote / commit / applied, and `purged <= snapshot <= applied <= commit
//! <= last`.

use std::collections::BTreeMap;

use super::disk::SimDisk;
use crate::raft::{Raft, Role};
use crate::types::{Entry, HardState, Index, NodeId, Term};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

fn violation<T>(check: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { check, detail })
}

#[derive(Clone, Debug, Default)]
struct NodeTrack {
    term: Term,
    commit: Index,
    applied: Index,
    recorded_commit: Index,
    quorum_checked_commit: Index,
    durable_hs: HardState,
}

/// Cluster-wide memory of what has been observed.
#[derive(Debug, Default)]
pub struct Checker {
    /// The committed log as first observed, with the term of the node that first saw it
    /// committed (the committing leader's term): index `i` at position `i - 1`.
    committed: Vec<Option<(Entry, Term)>>,
    /// Leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    /// Leaders elected (distinct (term, node) pairs).
    pub elections: u64,
}

impl Checker {
    /// Highest index known committed.
    pub fn committed_len(&self) -> Index {
        self.committed.len() as Index
    }

    fn record_committed(
        &mut self,
        e: &Entry,
        who: NodeId,
        term: Term,
        what: &'static str,
    ) -> Result<(), Violation> {
        let i = e.log_id.index as usize;
        if self.committed.len() < i {
            self.committed.resize(i, None);
        }
        match &self.committed[i - 1] {
            Some((prev, _)) if prev != e => violation(
                what,
                format!("node {who} has {:?} at committed index {i}, but {:?} was committed there before", e, prev),
            ),
            Some(_) => Ok(()),
            None => {
                self.committed[i - 1] = Some((e.clone(), term));
                Ok(())
            }
        }
    }

    /// Forgets per-lifetime monotonicity after a restart (the durable checks remain).
    pub fn on_restart(&mut self, id: NodeId) {
        let t = self.nodes.entry(id).or_default();
        let hs = t.durable_hs;
        *t = NodeTrack {
            durable_hs: hs,
            ..NodeTrack::default()
        };
    }

    /// State machine safety: an applied entry is the committed entry at its index, applied in order.
    pub fn on_apply(
        &mut self,
        id: NodeId,
        term: Term,
        prev_applied: Index,
        e: &Entry,
    ) -> Result<(), Violation> {
        if e.log_id.index != prev_applied + 1 {
            return violation(
                "apply order",
                format!(
                    "node {id} applied {} right after index {prev_applied}",
                    e.log_id
                ),
            );
        }
        self.record_committed(e, id, term, "state machine safety")
    }

    /// Checks one node after it processed an event.
    pub fn check_node(&mut self, raft: &Raft, disk: &SimDisk) -> Result<(), Violation> {
        let id = raft.id();
        let t = self.nodes.entry(id).or_default().clone();
        let (term, commit, applied) = (raft.term(), raft.commit_index(), raft.applied_index());
        // Monotonic term / commit / applied within one process lifetime; durable term/vote forever.
        if term < t.term || commit < t.commit || applied < t.applied {
            return violation(
                "monotonic term/commit/applied",
                format!(
                    "node {id}: term {} -> {term}, commit {} -> {commit}, applied {} -> {applied}",
                    t.term, t.commit, t.applied
                ),
            );
        }
        let hs = disk.hard_state;
        let prev = t.durable_hs;
        if hs.term < prev.term
            || (hs.term == prev.term && prev.vote.is_some() && hs.vote != prev.vote)
        {
            return violation(
                "monotonic durable term/vote",
                format!("node {id}: durable hard state went from {prev:?} to {hs:?}"),
            );
        }
        // purged <= snapshot <= applied <= committed <= last
        let purged = raft.log_offset().index;
        let snap = raft.snapshot_meta().last_log_id.index;
        let last = raft.last_log_id().index;
        if !(purged <= snap && snap <= applied && applied <= commit && commit <= last.max(snap)) {
            return violation(
                "index order",
                format!("node {id}: purged {purged}, snapshot {snap}, applied {applied}, commit {commit}, last {last}"),
            );
        }
        // Election safety: at most one leader per term (§5.2).
        if raft.role() == Role::Leader {
            match self.leaders.get(&term) {
                Some(other) if *other != id => {
                    return violation(
                        "election safety",
                        format!("nodes {other} and {id} are both leader in term {term}"),
                    )
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.elections += 1;
                    self.check_leader_completeness(raft)?;
                }
            }
        }
        // Committed entries never change (and the commit index never points past the log).
        for i in (t.recorded_commit + 1).max(purged + 1)..=commit {
            if let Some(e) = raft.entry(i) {
                let e = e.clone();
                self.record_committed(&e, id, term, "committed entries never change")?;
            }
        }
        let track = self.nodes.entry(id).or_default();
        track.term = term;
        track.commit = commit;
        track.applied = applied;
        track.recorded_commit = commit;
        track.durable_hs = hs;
        Ok(())
    }

    /// When a leader advances its commit index, the entry must be durable on a quorum of its
    /// configuration (§5.3, §5.4).
    pub fn check_commit_quorum(
        &mut self,
        raft: &Raft,
        holds: &dyn Fn(NodeId, crate::types::LogId) -> bool,
    ) -> Result<(), Violation> {
        let id = raft.id();
        let commit = raft.commit_index();
        if raft.role() != Role::Leader {
            // Only a leader's own advances are checked; what a node learned as follower was
            // checked when its leader advanced it.
            self.nodes.entry(id).or_default().quorum_checked_commit = commit;
            return Ok(());
        }
        let checked = self.nodes.get(&id).map_or(0, |t| t.quorum_checked_commit);
        if commit <= checked {
            return Ok(());
        }
        if let Some(e) = raft.entry(commit) {
            let log_id = e.log_id;
            let config = raft.membership();
            if !config.is_quorum(|n| holds(n, log_id)) {
                let holders: Vec<NodeId> = config
                    .members()
                    .into_iter()
                    .filter(|n| holds(*n, log_id))
                    .collect();
                return violation(
                    "committed entries are durable on a quorum",
                    format!("leader {id} committed {log_id} but only {holders:?} hold it durably ({config})"),
                );
            }
        }
        self.nodes.entry(id).or_default().quorum_checked_commit = commit;
        Ok(())
    }

    /// Leader completeness (§5.4): the leader of term T holds every entry committed in a
    /// term below T. (A leader of an older term may still be elected late, e.g. after a
    /// pause; it cannot commit anything a newer quorum has moved past.)
    fn check_leader_completeness(&self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        let offset = raft.log_offset().index;
        for (i, c) in self.committed.iter().enumerate() {
            let index = i as Index + 1;
            let Some((c, committed_in)) = c else { continue };
            if index <= offset || *committed_in >= raft.term() {
                continue;
            }
            let Some(e) = raft.entry(index) else {
                return violation(
                    "leader completeness",
                    format!("leader {id} of term {} lacks index {index}, committed in term {committed_in}", raft.term()),
                );
            };
            {
                if c != e {
                    return violation(
                        "leader completeness",
                        format!("leader {id} of term {} has {} at index {index} but {} is committed there", raft.term(), e.log_id, c.log_id),
                    );
                }
            }
        }
        Ok(())
    }

    /// Log matching (§5.3): if two logs hold an entry with the same index and term, they are
    /// identical up to it.
    pub fn check_log_matching(&self, nodes: &[&Raft]) -> Result<(), Violation> {
        for (x, a) in nodes.iter().enumerate() {
            for b in &nodes[x + 1..] {
                let lo = a.log_offset().index.max(b.log_offset().index) + 1;
                let hi = a.last_log_id().index.min(b.last_log_id().index);
                let mut agreed = false;
                let mut i = hi;
                while i >= lo && i > 0 {
                    if let (Some(ea), Some(eb)) = (a.entry(i), b.entry(i)) {
                        if agreed && ea != eb {
                            return violation(
                                "log matching",
                                format!("nodes {} and {} agree on a later entry but differ at index {i}: {:?} vs {:?}", a.id(), b.id(), ea.log_id, eb.log_id),
                            );
                        }
                        if !agreed && ea.log_id.term == eb.log_id.term {
                            agreed = true;
                            if ea != eb {
                                return violation(
                                    "log matching",
                                    format!(
                                        "nodes {} and {} have different entries with id {}",
                                        a.id(),
                                        b.id(),
                                        ea.log_id
                                    ),
                                );
                            }
                        }
                    }
                    i -= 1;
                }
            }
        }
        Ok(())
    }
}
