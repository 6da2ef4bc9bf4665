//! Client sessions for exactly-once application (thesis §6.3): the state machine layer
//! remembers, per client, the last sequence number applied and its result. A retried
//! command (same client id and sequence) is answered from the record instead of being
//! applied again. The table is part of the replicated state: it must be applied
//! deterministically and included in snapshots.
//!
//! The table is bounded ([`SessionLimits`]): by the number of clients and by the bytes of
//! the results it keeps. When a record would pass either bound, the records used least
//! recently (lowest log index of their last command, then lowest client id) are evicted.
//! Eviction happens inside apply and depends only on the applied entries and the limits,
//! so every replica with the same limits evicts the same records and snapshots stay
//! identical. A retry from an evicted client is no longer recognised (thesis §6.3: "a
//! session expires"); clients retry within seconds, so with the default limits a record
//! is evicted only after tens of thousands of other clients wrote since.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{ClientSession, Index};

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

/// Bounds of a [`SessionTable`]. Every replica of a cluster must use the same limits (they
/// decide which records are evicted, which is replicated state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Clients with a record; one more evicts the least recently used.
    pub max_clients: usize,
    /// Bytes of all records (results plus [`SessionLimits::RECORD_OVERHEAD`] each); more
    /// evicts the least recently used.
    pub max_bytes: u64,
    /// Results larger than this are not kept: the record keeps the sequence (so a retry is
    /// still not applied twice) with a "result no longer available" answer instead.
    pub max_result_bytes: usize,
}

impl SessionLimits {
    /// Bytes a record costs besides its result (ids, sequence, index, bookkeeping).
    pub const RECORD_OVERHEAD: u64 = 64;

    /// No bounds (for models and tests).
    pub const UNBOUNDED: Self = Self {
        max_clients: usize::MAX,
        max_bytes: u64::MAX,
        max_result_bytes: usize::MAX,
    };
}

impl Default for SessionLimits {
    /// 100,000 clients, 32 MiB of records, results up to 64 KiB kept.
    fn default() -> Self {
        Self {
            max_clients: 100_000,
            max_bytes: 32 << 20,
            max_result_bytes: 64 << 10,
        }
    }
}

/// One client's record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record<R> {
    sequence: u64,
    result: R,
    /// Log index of the client's last command (the eviction order).
    at: Index,
    /// Bytes this record is charged.
    bytes: u64,
}

/// Last applied sequence and result per client, bounded by [`SessionLimits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable<R> {
    clients: BTreeMap<u64, Record<R>>,
    /// `(at, client)` of every record: the eviction order.
    order: BTreeSet<(Index, u64)>,
    bytes: u64,
    limits: SessionLimits,
}

impl<R> Default for SessionTable<R> {
    /// An empty table with the default limits.
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl<R> SessionTable<R> {
    /// An empty table bounded by `limits`.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            clients: BTreeMap::new(),
            order: BTreeSet::new(),
            bytes: 0,
            limits,
        }
    }

    /// The table's limits.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Number of clients with a record.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True if no client has a record.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Bytes charged for all records.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<R: Clone> SessionTable<R> {
    /// Decides whether a command with `session` must be applied.
    pub fn check(&self, session: &ClientSession) -> SessionCheck<R> {
        match self.clients.get(&session.client_id) {
            Some(r) if session.sequence == r.sequence => SessionCheck::Duplicate(r.result.clone()),
            Some(r) if session.sequence < r.sequence => SessionCheck::Stale { last: r.sequence },
            _ => SessionCheck::Apply,
        }
    }

    /// Records the result of a newly applied command at log index `at`, charged
    /// `result_bytes` (the caller replaces results above
    /// [`SessionLimits::max_result_bytes`] before recording). Evicts the least recently
    /// used records while a limit is exceeded (never the one just recorded); returns how
    /// many were evicted.
    pub fn record(
        &mut self,
        session: &ClientSession,
        result: R,
        at: Index,
        result_bytes: u64,
    ) -> usize {
        let bytes = result_bytes.saturating_add(SessionLimits::RECORD_OVERHEAD);
        let record = Record {
            sequence: session.sequence,
            result,
            at,
            bytes,
        };
        if let Some(old) = self.clients.insert(session.client_id, record) {
            self.order.remove(&(old.at, session.client_id));
            self.bytes -= old.bytes;
        }
        self.order.insert((at, session.client_id));
        self.bytes += bytes;
        let mut evicted = 0;
        while self.clients.len() > self.limits.max_clients.max(1)
            || (self.bytes > self.limits.max_bytes && self.clients.len() > 1)
        {
            let Some(&(oldest_at, oldest)) = self.order.iter().next() else {
                break;
            };
            if oldest == session.client_id {
                // Only the new record is left to evict: it stays, alone over the bound.
                break;
            }
            self.order.remove(&(oldest_at, oldest));
            if let Some(r) = self.clients.remove(&oldest) {
                self.bytes -= r.bytes;
            }
            evicted += 1;
        }
        evicted
    }

    /// Whether `records` more records, each of a result of at most `result_bytes`, could be
    /// recorded without evicting anything. A caller that checks a command while earlier
    /// ones wait to be recorded (a batch) must record them first unless this holds: their
    /// evictions could change the check's answer, and every replica must answer alike.
    pub fn has_room_for(&self, records: usize, result_bytes: u64) -> bool {
        let per = result_bytes.saturating_add(SessionLimits::RECORD_OVERHEAD);
        self.clients.len().saturating_add(records) <= self.limits.max_clients
            && self
                .bytes
                .saturating_add(per.saturating_mul(records as u64))
                <= self.limits.max_bytes
    }

    /// Iterates over `(client id, last sequence, log index of it, result)`, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, Index, &R)> {
        self.clients
            .iter()
            .map(|(c, r)| (*c, r.sequence, r.at, &r.result))
    }

    /// Rebuilds a table from snapshot records `(client, sequence, at, result, result bytes)`
    /// under `limits` (evicting as [`SessionTable::record`] would if they exceed them).
    pub fn from_records(
        limits: SessionLimits,
        records: impl IntoIterator<Item = (u64, u64, Index, R, u64)>,
    ) -> Self {
        let mut t = Self::new(limits);
        let mut all: Vec<_> = records.into_iter().collect();
        all.sort_by_key(|r| (r.2, r.0));
        for (client, sequence, at, result, bytes) in all {
            t.record(
                &ClientSession {
                    client_id: client,
                    sequence,
                },
                result,
                at,
                bytes,
            );
        }
        t
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
        t.record(&s(1, 1), "ok-1", 1, 4);
        assert_eq!(t.check(&s(1, 1)), SessionCheck::Duplicate("ok-1"));
        assert_eq!(t.check(&s(1, 2)), SessionCheck::Apply);
        t.record(&s(1, 2), "ok-2", 2, 4);
        assert_eq!(t.check(&s(1, 1)), SessionCheck::Stale { last: 2 });
        assert_eq!(
            t.check(&s(2, 1)),
            SessionCheck::Apply,
            "sessions are per client"
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.bytes(), 4 + SessionLimits::RECORD_OVERHEAD);
    }

    #[test]
    fn records_round_trip_through_a_snapshot() {
        let mut t = SessionTable::default();
        t.record(&s(3, 9), 42u64, 7, 8);
        t.record(&s(1, 2), 5u64, 9, 8);
        let copy =
            SessionTable::from_records(t.limits(), t.iter().map(|(c, q, at, r)| (c, q, at, *r, 8)));
        assert_eq!(copy, t);
        assert_eq!(copy.len(), 2);
    }

    fn limits(max_clients: usize, max_bytes: u64) -> SessionLimits {
        SessionLimits {
            max_clients,
            max_bytes,
            max_result_bytes: usize::MAX,
        }
    }

    #[test]
    fn the_least_recently_used_client_is_evicted_past_the_client_limit_thesis_6_3() {
        let mut t = SessionTable::new(limits(3, u64::MAX));
        for c in 1..=3 {
            assert_eq!(t.record(&s(c, 1), c, c, 0), 0);
        }
        // Client 1 writes again: client 2 is now the least recently used.
        t.record(&s(1, 2), 10, 4, 0);
        assert_eq!(t.record(&s(4, 1), 4, 5, 0), 1);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.check(&s(2, 1)),
            SessionCheck::Apply,
            "client 2 was evicted"
        );
        assert_eq!(t.check(&s(1, 2)), SessionCheck::Duplicate(10));
        assert_eq!(t.check(&s(3, 1)), SessionCheck::Duplicate(3));
    }

    #[test]
    fn records_are_evicted_past_the_byte_limit_but_never_the_new_one() {
        let o = SessionLimits::RECORD_OVERHEAD;
        let mut t = SessionTable::new(limits(usize::MAX, 3 * (100 + o)));
        for c in 1..=3 {
            t.record(&s(c, 1), c, c, 100);
        }
        assert_eq!(t.len(), 3);
        // A record as large as the whole budget evicts every other one and stays.
        assert_eq!(t.record(&s(9, 1), 9, 10, 3 * (100 + o)), 3);
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(&s(9, 1)), SessionCheck::Duplicate(9));
        assert!(t.bytes() > t.limits().max_bytes);
    }

    #[test]
    fn eviction_is_the_same_whatever_order_the_records_were_restored_in() {
        let mut a = SessionTable::new(limits(4, u64::MAX));
        for (c, at) in [(5, 1), (2, 2), (9, 3), (1, 4)] {
            a.record(&s(c, 1), c, at, 0);
        }
        let mut recs: Vec<_> = a.iter().map(|(c, q, at, r)| (c, q, at, *r, 0)).collect();
        recs.reverse();
        let mut b = SessionTable::from_records(a.limits(), recs);
        a.record(&s(7, 1), 7, 5, 0);
        b.record(&s(7, 1), 7, 5, 0);
        assert_eq!(a, b);
        assert_eq!(
            a.check(&s(5, 1)),
            SessionCheck::Apply,
            "oldest (index 1) evicted"
        );
    }
}
