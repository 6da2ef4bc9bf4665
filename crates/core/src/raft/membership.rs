//! Membership changes (thesis chapter 4): joint consensus with automatic leave, the
//! single-server shortcut, learners, and the removed leader stepping down.

use super::progress::Progress;
use super::Raft;
use crate::event::{ClientError, Reply};
use crate::membership::{MembershipChange, MembershipConfig};
use crate::types::{Entry, EntryPayload, Index, RequestId, SnapshotMeta};

/// Configurations in the log, newest last. A configuration takes effect as soon as it is
/// appended, committed or not (thesis §4.1), and is undone if its entry is truncated.
#[derive(Clone, Debug, Default)]
pub(crate) struct MembershipLog {
    /// The configuration at or before the log offset (from the snapshot).
    base: (Index, MembershipConfig),
    /// Configurations found in the log after the offset.
    entries: Vec<(Index, MembershipConfig)>,
}

impl MembershipLog {
    pub(crate) fn restore<'a>(
        snapshot: &SnapshotMeta,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> Self {
        let mut log = Self {
            base: (snapshot.last_log_id.index, snapshot.membership.clone()),
            entries: Vec::new(),
        };
        for e in entries {
            if let EntryPayload::Membership(c) = &e.payload {
                if e.log_id.index > log.base.0 {
                    log.push(e.log_id.index, c.clone());
                }
            }
        }
        log
    }

    /// The configuration in force: the latest one in the log.
    pub(crate) fn effective(&self) -> &MembershipConfig {
        self.entries.last().map_or(&self.base.1, |(_, c)| c)
    }

    /// Index of the entry holding the configuration in force.
    pub(crate) fn effective_index(&self) -> Index {
        self.entries.last().map_or(self.base.0, |(i, _)| *i)
    }

    /// The configuration as of `index`.
    pub(crate) fn at(&self, index: Index) -> &MembershipConfig {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base.1, |(_, c)| c)
    }

    /// Every member of the configuration committed at `commit` and of any later one.
    pub(crate) fn members_since(
        &self,
        commit: Index,
    ) -> std::collections::BTreeSet<crate::types::NodeId> {
        let mut all = self.at(commit).members();
        for (_, c) in self.entries.iter().filter(|(i, _)| *i > commit) {
            all.extend(c.members());
        }
        all
    }

    /// True if `id` votes in the configuration committed at `commit` or in any later one.
    pub(crate) fn may_vote(&self, commit: Index, id: crate::types::NodeId) -> bool {
        self.at(commit).is_voter(id)
            || self
                .entries
                .iter()
                .any(|(i, c)| *i > commit && c.is_voter(id))
    }

    pub(crate) fn push(&mut self, index: Index, config: MembershipConfig) {
        self.entries.push((index, config));
    }

    /// Forgets configurations at or after `from` (their entries were truncated).
    pub(crate) fn truncate(&mut self, from: Index) {
        self.entries.retain(|(i, _)| *i < from);
    }

    /// Folds configurations at or before `upto` into the base (their entries were purged).
    pub(crate) fn fold(&mut self, upto: Index) {
        while self.entries.first().is_some_and(|(i, _)| *i <= upto) {
            self.base = self.entries.remove(0);
        }
    }

    /// Restarts from a snapshot, keeping configurations of entries after it.
    pub(crate) fn reset(&mut self, meta: &SnapshotMeta, keep_after: bool) {
        let idx = meta.last_log_id.index;
        self.base = (idx, meta.membership.clone());
        if keep_after {
            self.entries.retain(|(i, _)| *i > idx);
        } else {
            self.entries.clear();
        }
    }
}

impl Raft {
    /// Handles a membership change request on the leader.
    pub(crate) fn change_membership(&mut self, id: RequestId, change: MembershipChange) {
        if !self.is_leader() {
            let err = self.not_leader();
            return self.respond(id, Err(err));
        }
        let unsafe_changes = self.unsafe_membership_bug();
        let Some(ls) = &self.leader_state else { return };
        if ls.transfer.is_some() {
            return self.respond(id, Err(ClientError::TransferInProgress));
        }
        let current = self.membership.effective().clone();
        let busy = current.is_joint()
            || self.membership.effective_index() > self.commit
            || ls.membership_waiter.is_some()
            || !self.committed_in_current_term();
        if busy && !unsafe_changes {
            return self.respond(id, Err(ClientError::MembershipChangeInProgress));
        }
        let target = match current.apply_change(&change) {
            Ok(t) => t,
            Err(e) => return self.respond(id, Err(e.into())),
        };
        if target == current {
            return self.respond(id, Ok(Reply::MembershipChanged(current)));
        }
        // Learner-only changes never need joint consensus: learners do not vote.
        let distance = current.voter_distance(&target);
        let direct =
            unsafe_changes || distance == 0 || (self.cfg.single_server_changes && distance <= 1);
        let next = if direct {
            target
        } else {
            // While joint, the outgoing voters keep their addresses.
            let mut addrs = current.addrs.clone();
            addrs.extend(target.addrs);
            MembershipConfig {
                voters: target.voters,
                outgoing: current.voters.clone(),
                learners: target.learners,
                addrs,
            }
        };
        tracing::info!(node = self.id, from = %current, to = %next, "membership change");
        let joint = next.is_joint();
        let index = self.append_as_leader(vec![(EntryPayload::Membership(next), None)]);
        if let Some(ls) = self.leader_state.as_mut() {
            ls.membership_waiter = Some((if joint { 0 } else { index }, id));
        }
    }

    fn unsafe_membership_bug(&self) -> bool {
        #[cfg(any(test, feature = "testing"))]
        return self.cfg.bugs.unsafe_membership_changes;
        #[cfg(not(any(test, feature = "testing")))]
        false
    }

    /// Keeps one `Progress` per member other than the leader: members of the committed
    /// configuration and of every later one, so a removed node still receives the entry
    /// that removes it.
    pub(crate) fn sync_progress_with_membership(&mut self) {
        let members = self.membership.members_since(self.commit);
        let next = self.log.last_index() + 1;
        let me = self.id;
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        ls.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != me {
                ls.progress.entry(id).or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// Leader: after a commit, leave joint consensus automatically (thesis §4.3), answer the
    /// waiting request, and step down if this node is no longer a voter (thesis §4.2.2).
    pub(crate) fn on_membership_committed(&mut self) {
        let idx = self.membership.effective_index();
        if idx > self.commit {
            return;
        }
        let config = self.membership.effective().clone();
        if config.is_joint() {
            let mut next = MembershipConfig {
                voters: config.voters.clone(),
                outgoing: Default::default(),
                learners: config.learners.clone(),
                addrs: config.addrs.clone(),
            };
            next.keep_members_addrs();
            tracing::info!(node = self.id, to = %next, "leaving joint consensus");
            let index = self.append_as_leader(vec![(EntryPayload::Membership(next), None)]);
            if let Some(ls) = self.leader_state.as_mut() {
                if let Some((waiting_at, _)) = ls.membership_waiter.as_mut() {
                    if *waiting_at == 0 {
                        *waiting_at = index;
                    }
                }
            }
            return;
        }
        let waiter = self.leader_state.as_mut().and_then(|ls| {
            let due = ls
                .membership_waiter
                .is_some_and(|(at, _)| at != 0 && at <= idx);
            if due {
                ls.membership_waiter.take()
            } else {
                None
            }
        });
        if let Some((_, id)) = waiter {
            self.respond(id, Ok(Reply::MembershipChanged(config.clone())));
        }
        self.sync_progress_with_membership();
        if !config.is_voter(self.id) {
            tracing::info!(node = self.id, "removed from the voters; stepping down");
            let term = self.term;
            self.become_follower(term, None, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    #[test]
    fn effective_config_is_the_latest_even_if_uncommitted_thesis_4_1() {
        let meta = SnapshotMeta {
            last_log_id: LogId::default(),
            membership: MembershipConfig::new_voters([1, 2, 3]),
        };
        let mut m = MembershipLog::restore(&meta, std::iter::empty());
        m.push(5, MembershipConfig::new_voters([1, 2, 3, 4]));
        assert_eq!(m.effective().voters.len(), 4);
        assert_eq!(m.at(4).voters.len(), 3);
        m.truncate(5);
        assert_eq!(
            m.effective().voters.len(),
            3,
            "a truncated configuration is undone"
        );
    }

    #[test]
    fn fold_keeps_the_latest_purged_config_as_base() {
        let mut m = MembershipLog::default();
        m.push(2, MembershipConfig::new_voters([1]));
        m.push(4, MembershipConfig::new_voters([1, 2]));
        m.fold(3);
        assert_eq!(m.at(3).voters.len(), 1);
        assert_eq!(m.effective().voters.len(), 2);
    }
}
