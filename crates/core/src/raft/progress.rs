//! The leader's view of each follower: match/next indexes and flow control (§5.3).

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader is currently replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ReplicationState {
    /// Not yet known where the logs agree: one message at a time.
    Probe,
    /// Logs agree up to `matched`: entries are pipelined up to the flow-control limits.
    Replicate,
    /// A snapshot ending at this index is being sent.
    Snapshot(Index),
}

/// Per-follower replication progress, visible in the node status.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durable and identical on the follower.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    /// Replication mode.
    pub state: ReplicationState,
    pub(crate) paused: bool,
    pub(crate) inflight: VecDeque<(Index, usize)>,
    pub(crate) inflight_bytes: usize,
    /// Set when the follower answered since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest read round the follower confirmed.
    pub(crate) read_ack: u64,
    /// Heartbeat responses without progress while behind; used to detect lost messages.
    pub(crate) stalled: u32,
    /// Ticks spent in the snapshot state.
    pub(crate) snapshot_ticks: u32,
    /// (Oldest in-flight message, matched) at the previous heartbeat answer.
    pub(crate) stall_marker: Option<(Option<Index>, Index)>,
    /// Highest commit index sent in an AppendEntries.
    pub(crate) commit_sent: Index,
    /// The protocol's clock (in ticks) when the follower last answered.
    pub(crate) last_contact: Option<u64>,
}

impl Progress {
    pub(crate) fn new(next: Index) -> Self {
        Self {
            matched: 0,
            next,
            state: ReplicationState::Probe,
            paused: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            read_ack: 0,
            stalled: 0,
            snapshot_ticks: 0,
            stall_marker: None,
            commit_sent: 0,
            last_contact: None,
        }
    }

    /// The follower answered at tick `now`.
    pub(crate) fn heard_from(&mut self, now: u64) {
        self.recent_active = true;
        self.last_contact = Some(now);
    }

    /// Messages sent to the follower and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes of entries sent to the follower and not yet answered.
    pub fn in_flight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Ticks since the follower last answered, at protocol time `now`; `None` if never.
    pub fn ticks_since_contact(&self, now: u64) -> Option<u64> {
        self.last_contact.map(|t| now.saturating_sub(t))
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next = self.matched + 1;
        self.paused = false;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.paused = false;
    }

    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ReplicationState::Snapshot(index);
        self.snapshot_ticks = 0;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// True if nothing more may be sent now.
    pub(crate) fn is_blocked(&self, max_msgs: usize, max_bytes: usize) -> bool {
        match self.state {
            ReplicationState::Probe => self.paused,
            ReplicationState::Replicate => {
                self.inflight.len() >= max_msgs || self.inflight_bytes >= max_bytes
            }
            ReplicationState::Snapshot(_) => true,
        }
    }

    /// Records a sent message whose last entry is `last` carrying `bytes` of entries.
    pub(crate) fn sent(&mut self, last: Index, bytes: usize) {
        match self.state {
            ReplicationState::Replicate => {
                self.next = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicationState::Probe => self.paused = true,
            ReplicationState::Snapshot(_) => {}
        }
    }

    /// Frees flow-control slots of messages whose last entry is `<= upto`.
    pub(crate) fn free_upto(&mut self, upto: Index) {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > upto {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_message_at_a_time_section_5_3() {
        let mut p = Progress::new(5);
        assert!(!p.is_blocked(4, 100));
        p.sent(7, 10);
        assert!(p.is_blocked(4, 100));
    }

    #[test]
    fn replicate_is_bounded_by_inflight_messages_and_bytes() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.sent(1, 10);
        p.sent(2, 10);
        assert!(p.is_blocked(2, 100));
        p.free_upto(1);
        assert!(!p.is_blocked(2, 100));
        p.sent(3, 200);
        assert!(p.is_blocked(10, 100));
        assert_eq!(p.next, 4);
    }
}
