//! The protocol's view of the log: the entries after the purge point, kept in memory.
//!
//! The runtime's `LogStore` holds the durable copy; the protocol keeps the same entries so
//! it can answer term lookups and build AppendEntries without I/O. Entries carry `Bytes`, so
//! the copy is a reference count, not the payload.

use std::collections::VecDeque;

use crate::types::{Entry, Index, LogId, Term};

/// In-memory log: entries with indexes `offset.index + 1 ..= last_index()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// The entry just before the first kept entry (purged, or covered by a snapshot).
    offset: LogId,
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log that starts right after `offset` with `entries` (which must follow on).
    pub(crate) fn new(offset: LogId, entries: Vec<Entry>) -> Self {
        Self {
            offset,
            entries: entries.into(),
        }
    }

    /// The id before the first kept entry.
    pub(crate) fn offset(&self) -> LogId {
        self.offset
    }

    /// Index of the last entry (or of the offset if empty).
    pub(crate) fn last_index(&self) -> Index {
        self.offset.index + self.entries.len() as u64
    }

    /// Id of the last entry.
    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.back().map_or(self.offset, |e| e.log_id)
    }

    /// Term at `index`, if known (the offset's term is known; purged entries are not).
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset.index {
            return Some(self.offset.term);
        }
        self.get(index).map(|e| e.log_id.term)
    }

    /// The entry at `index`, if kept.
    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset.index {
            return None;
        }
        self.entries.get((index - self.offset.index - 1) as usize)
    }

    /// True if the log holds `id` (or `id` is the offset).
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term(id.index) == Some(id.term)
    }

    /// Entries in `[from, to]`, stopping early once `max_bytes` is exceeded (at least one
    /// entry is returned when the range is non-empty).
    pub(crate) fn slice(&self, from: Index, to: Index, max_bytes: usize) -> Vec<Entry> {
        let first = from.max(self.offset.index + 1);
        let last = to.min(self.last_index());
        if first > last {
            return Vec::new();
        }
        let start = (first - self.offset.index - 1) as usize;
        let end = (last - self.offset.index) as usize;
        let mut out = Vec::with_capacity(end - start);
        let mut bytes = 0;
        for e in self.entries.range(start..end) {
            bytes += e.size_hint();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Appends entries that follow the last one.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        self.entries.extend(entries);
    }

    /// Removes entries with index `>= from`.
    pub(crate) fn truncate(&mut self, from: Index) {
        let keep = from.saturating_sub(self.offset.index + 1) as usize;
        self.entries.truncate(keep);
    }

    /// Drops entries up to and including `up_to.index`; the new offset is `up_to`.
    pub(crate) fn purge(&mut self, up_to: LogId) {
        if up_to.index <= self.offset.index {
            return;
        }
        let n = ((up_to.index - self.offset.index) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.offset = up_to;
    }

    /// Discards everything and restarts after `offset`.
    pub(crate) fn reset(&mut self, offset: LogId) {
        self.entries.clear();
        self.offset = offset;
    }

    /// The last index `<= index` whose term is `<= term`: the fast-backtracking search used
    /// by both sides of a rejected append (thesis §5.3 optimisation, as in etcd-raft).
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> LogId {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t <= term => return LogId::new(t, i),
                Some(_) if i > self.offset.index => i -= 1,
                _ => return self.offset,
            }
        }
    }

    /// Iterates over kept entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn e(term: Term, index: Index) -> Entry {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn log(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| e(*t, i as u64 + 1))
            .collect();
        RaftLog::new(LogId::default(), entries)
    }

    #[test]
    fn term_lookup_and_bounds() {
        let l = log(&[1, 1, 2]);
        assert_eq!(l.last_log_id(), LogId::new(2, 3));
        assert_eq!(l.term(0), Some(0));
        assert_eq!(l.term(3), Some(2));
        assert_eq!(l.term(4), None);
    }

    #[test]
    fn truncate_then_append_replaces_the_suffix() {
        let mut l = log(&[1, 1, 2, 2]);
        l.truncate(3);
        l.append([e(3, 3)]);
        assert_eq!(l.last_log_id(), LogId::new(3, 3));
        assert_eq!(l.term(2), Some(1));
    }

    #[test]
    fn purge_moves_the_offset_and_hides_entries() {
        let mut l = log(&[1, 1, 2, 2]);
        l.purge(LogId::new(1, 2));
        assert_eq!(l.offset(), LogId::new(1, 2));
        assert!(l.get(2).is_none());
        assert_eq!(l.term(2), Some(1));
        assert_eq!(l.term(1), None);
        assert_eq!(l.slice(1, 4, usize::MAX).len(), 2);
    }

    #[test]
    fn slice_respects_byte_limit_but_returns_one_entry() {
        let l = log(&[1, 1, 1]);
        assert_eq!(l.slice(1, 3, 1).len(), 1);
        assert_eq!(l.slice(1, 3, usize::MAX).len(), 3);
    }

    #[test]
    fn find_conflict_by_term_skips_a_whole_term_section_5_3() {
        let l = log(&[1, 1, 4, 4, 4, 5]);
        // Leader probing at index 6 with term 3: the follower's last entry with term <= 3 is 2.
        assert_eq!(l.find_conflict_by_term(6, 3), LogId::new(1, 2));
        assert_eq!(l.find_conflict_by_term(10, 5), LogId::new(5, 6));
        assert_eq!(l.find_conflict_by_term(6, 0), LogId::default());
    }
}
