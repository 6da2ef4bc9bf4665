//! Protocol configuration, validated before a node starts.

use crate::types::NodeId;

/// Tunables of the Raft protocol. Times are in *ticks*; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Minimum election timeout in ticks; the actual timeout is random in
    /// `[election_ticks, 2 * election_ticks)` (§5.2).
    pub election_ticks: u32,
    /// Heartbeat interval in ticks; must be smaller than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// Leaders step down without contact from a quorum for an election timeout, and followers
    /// that heard from a leader recently ignore vote requests (thesis §6.2, §9.6).
    pub check_quorum: bool,
    /// Serve `Lease` reads from the leader's lease (thesis §6.4.1). Needs `check_quorum`.
    pub lease_reads: bool,
    /// Safety margin in ticks subtracted from the lease for clock drift between nodes.
    pub lease_drift_ticks: u32,
    /// Maximum AppendEntries messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Maximum bytes of entries in flight per follower.
    pub max_inflight_bytes: usize,
    /// Maximum entries in one AppendEntries.
    pub max_entries_per_msg: usize,
    /// Maximum bytes of entries in one AppendEntries (at least one entry is always sent).
    pub max_bytes_per_msg: usize,
    /// Allow membership changes of exactly one voter without joint consensus (thesis §4.1).
    pub single_server_changes: bool,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers can still be
    /// served from the log rather than with a snapshot.
    pub purge_keep_entries: u64,
    /// Deliberately broken behaviours, used only to prove the simulator catches them.
    #[cfg(any(test, feature = "testing"))]
    pub bugs: Bugs,
}

/// Protocol bugs that can be switched on in tests to show the simulator's checkers find them.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Commit an entry of an earlier term by counting replicas (violates thesis §3.6.2, Figure 8).
    pub commit_old_term_by_count: bool,
    /// Send a vote before the vote is durable.
    pub vote_before_durable: bool,
    /// Answer ReadIndex without confirming leadership with a heartbeat round.
    pub read_index_without_heartbeat: bool,
    /// Acknowledge appended entries before they are durable.
    pub ack_before_durable: bool,
    /// Allow a new membership change while one is uncommitted, and change any number of
    /// voters directly without joint consensus.
    pub unsafe_membership_changes: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            id: 1,
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_reads: true,
            lease_drift_ticks: 2,
            max_inflight_msgs: 256,
            max_inflight_bytes: 64 << 20,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 1 << 20,
            single_server_changes: true,
            purge_keep_entries: 1024,
            #[cfg(any(test, feature = "testing"))]
            bugs: Bugs::default(),
        }
    }
}

/// A configuration value outside its accepted range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: `{key}` = {value}: {expected}")]
pub struct ConfigError {
    /// The offending field.
    pub key: &'static str,
    /// The value given, rendered.
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

impl RaftConfig {
    /// Checks every field; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, value: String, expected: String| {
            Err(ConfigError {
                key,
                value,
                expected,
            })
        };
        if self.id == 0 {
            return err("id", "0".into(), "a non-zero node id".into());
        }
        if self.heartbeat_ticks == 0 {
            return err("heartbeat_ticks", "0".into(), "at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return err(
                "election_ticks",
                self.election_ticks.to_string(),
                format!("greater than heartbeat_ticks ({})", self.heartbeat_ticks),
            );
        }
        if self.lease_reads && !self.check_quorum {
            return err(
                "lease_reads",
                "true".into(),
                "false unless check_quorum is true (a lease is only safe under check-quorum)"
                    .into(),
            );
        }
        if self.lease_reads && self.lease_drift_ticks == 0 {
            return err(
                "lease_drift_ticks",
                "0".into(),
                "at least 1 when lease_reads is on (a follower's timer may expire up to one tick early)".into(),
            );
        }
        if self.lease_reads && self.lease_drift_ticks >= self.election_ticks {
            return err(
                "lease_drift_ticks",
                self.lease_drift_ticks.to_string(),
                format!("less than election_ticks ({})", self.election_ticks),
            );
        }
        if self.max_inflight_msgs == 0 {
            return err("max_inflight_msgs", "0".into(), "at least 1".into());
        }
        if self.max_entries_per_msg == 0 {
            return err("max_entries_per_msg", "0".into(), "at least 1".into());
        }
        if self.max_bytes_per_msg == 0 || self.max_inflight_bytes == 0 {
            return err(
                "max_bytes_per_msg / max_inflight_bytes",
                "0".into(),
                "at least 1 byte".into(),
            );
        }
        Ok(())
    }

    /// Ticks a lease lasts after the heartbeat round that confirmed it was sent.
    pub(crate) fn lease_ticks(&self) -> u64 {
        u64::from(self.election_ticks.saturating_sub(self.lease_drift_ticks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        RaftConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = RaftConfig {
            election_ticks: 2,
            heartbeat_ticks: 2,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "election_ticks");
        let c = RaftConfig {
            check_quorum: false,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "lease_reads");
        assert!(e.to_string().contains("check_quorum"));
        let c = RaftConfig {
            id: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "id");
        let c = RaftConfig {
            lease_drift_ticks: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "lease_drift_ticks");
    }
}
