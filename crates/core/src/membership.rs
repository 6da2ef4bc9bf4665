//! Cluster configurations, quorums and membership-change requests (thesis chapter 4).

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Index, NodeId};

/// A cluster configuration. When `outgoing` is non-empty the cluster is in *joint consensus*
/// (thesis §4.3): every decision needs a majority of `voters` **and** a majority of `outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MembershipConfig {
    /// Voters of the (new) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the old configuration while joint; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log (thesis §4.2.1).
    pub learners: BTreeSet<NodeId>,
    /// Where members added at run time are reached ([`MembershipChange::AddLearnerAt`]).
    /// Replicated with the configuration and kept in snapshots, so every node, restarted
    /// or new, learns them from the log; a node's own `[peers]` (the founders) take
    /// precedence. A member's address goes when the member leaves.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub addrs: BTreeMap<NodeId, String>,
}

/// A requested change of membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds a non-voting learner.
    AddLearner(NodeId),
    /// Adds a non-voting learner reached at this address, recorded in the configuration.
    AddLearnerAt(NodeId, String),
    /// Removes a learner.
    RemoveLearner(NodeId),
    /// Makes exactly this set the voters. Learners in the set are promoted; voters not in the
    /// set leave the cluster. Any number of voters may change in one request.
    SetVoters(BTreeSet<NodeId>),
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The new voter set would be empty.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved and cannot be a member")]
    ReservedNodeId,
    /// The node is already a voter.
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    /// The node is not a learner.
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    /// The address recorded for a member is longer than the log stores.
    #[error("the address of node {id} is {len} bytes; at most {max} bytes are accepted")]
    AddressTooLong {
        /// The member.
        id: NodeId,
        /// The address's length.
        len: usize,
        /// The limit ([`crate::codec::MAX_ADDR_BYTES`]).
        max: usize,
    },
}

impl MembershipConfig {
    /// A plain configuration of the given voters and no learners.
    pub fn new_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// True while in joint consensus.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// True if `id` is a voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member: voters of both halves and learners, each once, in order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    /// Number of distinct members.
    pub fn member_count(&self) -> usize {
        self.members().len()
    }

    /// True if the nodes for which `granted` returns true form a quorum: a majority of
    /// `voters`, and while joint also a majority of `outgoing`.
    pub fn is_quorum(&self, granted: impl Fn(NodeId) -> bool) -> bool {
        let majority = |set: &BTreeSet<NodeId>| {
            let yes = set.iter().filter(|id| granted(**id)).count();
            yes * 2 > set.len()
        };
        majority(&self.voters) && (self.outgoing.is_empty() || majority(&self.outgoing))
    }

    /// True if the nodes for which `rejected` returns true make a quorum impossible.
    pub fn is_quorum_impossible(&self, rejected: impl Fn(NodeId) -> bool) -> bool {
        let lost = |set: &BTreeSet<NodeId>| {
            let no = set.iter().filter(|id| rejected(**id)).count();
            !set.is_empty() && no * 2 >= set.len()
        };
        lost(&self.voters) || lost(&self.outgoing)
    }

    /// The highest index that a quorum has reached, given each voter's index (§5.3, §5.4).
    pub fn quorum_index(&self, index_of: impl Fn(NodeId) -> Index) -> Index {
        let half = |set: &BTreeSet<NodeId>| -> Index {
            if set.is_empty() {
                return Index::MAX;
            }
            let mut v: Vec<Index> = set.iter().map(|id| index_of(*id)).collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v[set.len() / 2]
        };
        half(&self.voters).min(half(&self.outgoing))
    }

    /// The configuration after `change`. Returns the *target* configuration (never joint).
    pub fn apply_change(&self, change: &MembershipChange) -> Result<Self, MembershipError> {
        let mut next = Self {
            voters: self.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
            addrs: self.addrs.clone(),
        };
        match change {
            MembershipChange::AddLearner(id) | MembershipChange::AddLearnerAt(id, _) => {
                if *id == 0 {
                    return Err(MembershipError::ReservedNodeId);
                }
                if next.voters.contains(id) {
                    return Err(MembershipError::AlreadyVoter(*id));
                }
                next.learners.insert(*id);
                if let MembershipChange::AddLearnerAt(_, addr) = change {
                    // Longer addresses would be written to the log but refused when it
                    // is read back: the node could not restart.
                    if addr.len() > crate::codec::MAX_ADDR_BYTES {
                        return Err(MembershipError::AddressTooLong {
                            id: *id,
                            len: addr.len(),
                            max: crate::codec::MAX_ADDR_BYTES,
                        });
                    }
                    next.addrs.insert(*id, addr.clone());
                }
            }
            MembershipChange::RemoveLearner(id) => {
                if !next.learners.remove(id) {
                    return Err(MembershipError::NotLearner(*id));
                }
            }
            MembershipChange::SetVoters(voters) => {
                if voters.is_empty() {
                    return Err(MembershipError::NoVoters);
                }
                if voters.contains(&0) {
                    return Err(MembershipError::ReservedNodeId);
                }
                next.learners.retain(|l| !voters.contains(l));
                next.voters = voters.clone();
            }
        }
        next.keep_members_addrs();
        Ok(next)
    }

    /// Drops the addresses of nodes that are no longer members.
    pub fn keep_members_addrs(&mut self) {
        let members = self.members();
        self.addrs.retain(|id, _| members.contains(id));
    }

    /// Number of voters that differ between `self` and `other` (symmetric difference).
    pub fn voter_distance(&self, other: &Self) -> usize {
        self.voters.symmetric_difference(&other.voters).count()
    }
}

impl std::fmt::Display for MembershipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "voters {:?}", self.voters)?;
        if self.is_joint() {
            write!(f, " (joint with {:?})", self.outgoing)?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners {:?}", self.learners)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_quorum_needs_more_than_half() {
        let c = MembershipConfig::new_voters([1, 2, 3, 4]);
        assert!(!c.is_quorum(|id| id <= 2));
        assert!(c.is_quorum(|id| id <= 3));
    }

    #[test]
    fn joint_quorum_needs_both_majorities_thesis_4_3() {
        let c = MembershipConfig {
            voters: set(&[3, 4, 5]),
            outgoing: set(&[1, 2, 3]),
            learners: BTreeSet::new(),
            addrs: Default::default(),
        };
        // {1,2} is a majority of the old config only; {4,5} of the new only.
        assert!(!c.is_quorum(|id| id == 1 || id == 2));
        assert!(!c.is_quorum(|id| id == 4 || id == 5));
        assert!(c.is_quorum(|id| id == 1 || id == 3 || id == 4));
    }

    #[test]
    fn quorum_index_takes_the_minimum_of_both_halves() {
        let c = MembershipConfig {
            voters: set(&[3, 4, 5]),
            outgoing: set(&[1, 2, 3]),
            learners: BTreeSet::new(),
            addrs: Default::default(),
        };
        let idx = |id: NodeId| [0, 10, 9, 8, 2, 1][id as usize];
        // old: 10, 9, 8 -> 9; new: 8, 2, 1 -> 2
        assert_eq!(c.quorum_index(idx), 2);
    }

    #[test]
    fn set_voters_promotes_learners_and_drops_removed_voters() {
        let mut c = MembershipConfig::new_voters([1, 2, 3]);
        c.learners.insert(4);
        let n = c
            .apply_change(&MembershipChange::SetVoters(set(&[2, 3, 4])))
            .unwrap();
        assert_eq!(n.voters, set(&[2, 3, 4]));
        assert!(n.learners.is_empty());
        assert_eq!(c.voter_distance(&n), 2);
    }

    #[test]
    fn invalid_changes_are_refused_with_a_reason() {
        let c = MembershipConfig::new_voters([1, 2, 3]);
        assert_eq!(
            c.apply_change(&MembershipChange::SetVoters(BTreeSet::new())),
            Err(MembershipError::NoVoters)
        );
        assert_eq!(
            c.apply_change(&MembershipChange::AddLearner(2)),
            Err(MembershipError::AlreadyVoter(2))
        );
        assert_eq!(
            c.apply_change(&MembershipChange::RemoveLearner(9)),
            Err(MembershipError::NotLearner(9))
        );
    }

    #[test]
    fn an_address_longer_than_the_log_reads_back_is_refused_before_it_is_logged() {
        let c = MembershipConfig::new_voters([1]);
        let long = "h".repeat(crate::codec::MAX_ADDR_BYTES + 1);
        assert_eq!(
            c.apply_change(&MembershipChange::AddLearnerAt(4, long)),
            Err(MembershipError::AddressTooLong {
                id: 4,
                len: crate::codec::MAX_ADDR_BYTES + 1,
                max: crate::codec::MAX_ADDR_BYTES
            })
        );
        let fits = "h".repeat(crate::codec::MAX_ADDR_BYTES);
        assert!(c
            .apply_change(&MembershipChange::AddLearnerAt(4, fits))
            .is_ok());
    }

    #[test]
    fn an_address_added_with_a_learner_stays_while_it_is_a_member_and_goes_with_it() {
        let c = MembershipConfig::new_voters([1, 2, 3]);
        let c = c
            .apply_change(&MembershipChange::AddLearnerAt(4, "h4:7001".into()))
            .unwrap();
        assert_eq!(c.addrs.get(&4).map(String::as_str), Some("h4:7001"));
        let c = c
            .apply_change(&MembershipChange::SetVoters(set(&[1, 2, 3, 4])))
            .unwrap();
        assert!(c.voters.contains(&4));
        assert_eq!(c.addrs.get(&4).map(String::as_str), Some("h4:7001"));
        let c = c
            .apply_change(&MembershipChange::SetVoters(set(&[1, 2, 3])))
            .unwrap();
        assert!(c.addrs.is_empty(), "a removed member's address goes: {c:?}");
    }
}
