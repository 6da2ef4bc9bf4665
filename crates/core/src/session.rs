//! Client sessions for exactly-once application (thesis §6.3): the state machine layer
//! remembers, per client, the last sequence number applied and its result. A retried
//! command (same client id and sequence) is answered from the record instead of being
//! applied again. The table is part of the replicated state: it must be applied
//! deterministically and included in snapshots.

use std::collections::BTreeMap;

use crate::types::ClientSession;

/// What to do with a command carrying a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck<R> {
    /// Not seen before: apply it, then [`SessionTable::record`] the result.
    Apply,
    /// Already applied: answer with the recorded result, do not apply again.
    Duplicate(R),
    /// Older than the last command of this client: its result is gone; do not apply.
    Stale {
        /// The last sequence applied for this client.
        last: u64,
    },
}

/// Last applied sequence and result per client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable<R> {
    clients: BTreeMap<u64, (u64, R)>,
}

impl<R> Default for SessionTable<R> {
    fn default() -> Self {
        Self {
            clients: BTreeMap::new(),
        }
    }
}

impl<R: Clone> SessionTable<R> {
    /// Decides whether a command with `session` must be applied.
    pub fn check(&self, session: &ClientSession) -> SessionCheck<R> {
        match self.clients.get(&session.client_id) {
            Some((seq, ret)) if session.sequence == *seq => SessionCheck::Duplicate(ret.clone()),
            Some((seq, _)) if session.sequence < *seq => SessionCheck::Stale { last: *seq },
            _ => SessionCheck::Apply,
        }
    }

    /// Records the result of a newly applied command.
    pub fn record(&mut self, session: &ClientSession, result: R) {
        self.clients
            .insert(session.client_id, (session.sequence, result));
    }

    /// Number of clients with a record.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True if no client has a record.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Iterates over `(client id, last sequence, result)`, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &R)> {
        self.clients.iter().map(|(c, (s, r))| (*c, *s, r))
    }

    /// Rebuilds a table from snapshot records.
    pub fn from_records(records: impl IntoIterator<Item = (u64, u64, R)>) -> Self {
        Self {
            clients: records.into_iter().map(|(c, s, r)| (c, (s, r))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(client_id: u64, sequence: u64) -> ClientSession {
        ClientSession {
            client_id,
            sequence,
        }
    }

    #[test]
    fn a_retry_is_answered_from_the_record_thesis_6_3() {
        let mut t = SessionTable::default();
        assert_eq!(t.check(&s(1, 1)), SessionCheck::Apply);
        t.record(&s(1, 1), "ok-1");
        assert_eq!(t.check(&s(1, 1)), SessionCheck::Duplicate("ok-1"));
        assert_eq!(t.check(&s(1, 2)), SessionCheck::Apply);
        t.record(&s(1, 2), "ok-2");
        assert_eq!(t.check(&s(1, 1)), SessionCheck::Stale { last: 2 });
        assert_eq!(
            t.check(&s(2, 1)),
            SessionCheck::Apply,
            "sessions are per client"
        );
    }

    #[test]
    fn records_round_trip_through_a_snapshot() {
        let mut t = SessionTable::default();
        t.record(&s(3, 9), 42u64);
        let copy = SessionTable::from_records(t.iter().map(|(c, q, r)| (c, q, *r)));
        assert_eq!(copy, t);
        assert_eq!(copy.len(), 1);
    }
}
