//! The durability checks made while a run goes on: votes, acknowledgements and commits
//! are on the disks that the protocol counts on.

use std::collections::BTreeSet;

use super::storage::Held;
use super::world::{violation, Step, World};
use crate::membership::MembershipConfig;
use crate::types::{NodeId, Term};

/// What the commit durability check knows of one leader.
pub(super) struct Watch {
    term: Term,
    config: MembershipConfig,
    /// The configuration did not change in the window since the last check, so every
    /// commit decision in it was taken under `config`.
    steady: bool,
    checked: u64,
}

impl World {
    /// Follows leader `id`'s configuration at every step and, every fourth step, checks
    /// its commit index is durable on a quorum of the configuration it decided under.
    pub(super) fn watch_commit(&mut self, id: NodeId, st: &crate::runtime::NodeStatus) -> Step {
        let w = self.watched.entry(id).or_insert_with(|| Watch {
            term: st.term,
            config: st.membership.clone(),
            steady: false,
            checked: 0,
        });
        if w.term != st.term || w.config != st.membership {
            w.term = st.term;
            w.config = st.membership.clone();
            w.steady = false;
        }
        if !self.report.steps.is_multiple_of(4) {
            return Ok(());
        }
        let check = w.steady && st.commit != w.checked;
        w.steady = true;
        w.checked = st.commit;
        if check {
            self.check_commit_durable(id, st.commit, &st.membership)?;
        }
        Ok(())
    }

    /// A leader's commit index is durable on a quorum of `config` (§5.3, and the promise
    /// that an acknowledged write survives any minority of crashes). The caller knows every
    /// commit decision since the last check was taken under `config`: a leader counts
    /// replicas in its latest configuration, and the nemesis changes it at most once in a
    /// step.
    pub(super) fn check_commit_durable(
        &self,
        leader: NodeId,
        commit: u64,
        cfg: &MembershipConfig,
    ) -> Step {
        if commit == 0 {
            return Ok(());
        }
        let mut held = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            match self.storage.durable_at(s.id, commit) {
                Some(h) => held.push((s.id, h)),
                None => return Ok(()),
            }
        }
        if held.iter().any(|(_, h)| *h == Held::Snapshot) {
            // Under a durable snapshot somewhere: it was checked when it was committed.
            return Ok(());
        }
        // The leader's own copy may not be durable yet (it counts once it is): the entry is
        // the one of the leader's term there, or else whichever one a quorum holds.
        let terms: BTreeSet<u64> = held
            .iter()
            .filter_map(|(_, h)| match h {
                Held::Entry(t) => Some(*t),
                _ => None,
            })
            .collect();
        let term = terms
            .iter()
            .copied()
            .find(|t| {
                cfg.is_quorum(|id| held.iter().any(|(n, h)| *n == id && *h == Held::Entry(*t)))
            })
            .or_else(|| {
                held.iter()
                    .find(|(id, h)| *id == leader && matches!(h, Held::Entry(_)))
                    .and_then(|(_, h)| match h {
                        Held::Entry(t) => Some(*t),
                        _ => None,
                    })
            });
        let holds = |id: NodeId| {
            held.iter()
                .any(|(n, h)| *n == id && term.is_some_and(|t| *h == Held::Entry(t)))
        };
        if !cfg.is_quorum(holds) {
            let holding: Vec<NodeId> = held
                .iter()
                .filter(|(n, _)| holds(*n))
                .map(|(n, _)| *n)
                .collect();
            return Err(violation(
                "commit durability",
                format!(
                    "leader {leader} reports index {commit} committed, but only nodes {holding:?} hold it durably, no quorum of {cfg:?} ({held:?})"
                ),
            ));
        }
        Ok(())
    }

    /// Every vote granted is on the voter's disk by the time the candidate can hear of it
    /// (§5.2; Figure 2: `currentTerm` and `votedFor` are persistent state, updated on
    /// stable storage before responding), so no crash lets a node vote twice in a term.
    pub(super) fn check_votes_durable(&self) -> Step {
        let votes = std::mem::take(&mut self.net.lock().unwrap_or_else(|p| p.into_inner()).votes);
        for (voter, candidate, term) in votes {
            if self
                .slots
                .iter()
                .any(|s| s.id == voter && s.flipped.is_some())
            {
                continue;
            }
            let Some(hs) = self.storage.durable_hard_state(voter) else {
                continue;
            };
            if hs.term < term || (hs.term == term && hs.vote != Some(candidate)) {
                return Err(violation(
                    "vote durability",
                    format!(
                        "node {voter} granted node {candidate} its vote in term {term}, but holds term {} vote {:?} durably",
                        hs.term, hs.vote
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every follower's acknowledged index, as the leader records it, is durable on that
    /// follower (an acknowledgement means "on stable storage", §5.3): checked for the
    /// followers that follow this leader in its term.
    pub(super) fn check_acks_durable(
        &self,
        leader: NodeId,
        st: &crate::runtime::NodeStatus,
    ) -> Step {
        for (peer, p) in &st.progress {
            if *peer == leader || p.matched == 0 {
                continue;
            }
            let follows = self
                .slots
                .iter()
                .find(|s| s.id == *peer)
                .and_then(|s| s.node.as_ref())
                .is_some_and(|n| {
                    let ps = n.status();
                    ps.term == st.term && ps.leader == Some(leader)
                });
            if !follows {
                continue;
            }
            let Some(Held::Entry(term)) = self.storage.durable_at(leader, p.matched) else {
                continue;
            };
            match self.storage.durable_at(*peer, p.matched) {
                Some(Held::Entry(t)) if t == term => {}
                Some(Held::Snapshot) | None => {}
                Some(other) => {
                    return Err(violation(
                        "ack durability",
                        format!(
                            "leader {leader} counts node {peer} at index {} (term {term}), but node {peer} holds {other:?} there durably",
                            p.matched
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}
