//! What a node's start finishes before the protocol sees the recovered state.

use crate::error::StorageError;
use crate::storage::{LogStore, StoredLog};

/// Completes a snapshot installation that a crash interrupted. The log writer records an
/// installed snapshot durably before it fixes the log up (`log_writer::run_batch`); a crash
/// in between leaves a log that does not contain the snapshot's last entry (it ends before
/// it, or holds a conflicting entry there). Such a log is replaced by the snapshot, as the
/// interrupted install would have done. A log that agrees with the snapshot is left as is.
pub(crate) fn complete_install(
    store: &mut dyn LogStore,
    stored: StoredLog,
) -> Result<StoredLog, StorageError> {
    let Some(meta) = stored.snapshot.as_ref() else {
        return Ok(stored);
    };
    let snap = meta.last_log_id;
    if stored.log_offset.index >= snap.index {
        return Ok(stored);
    }
    let at_snapshot = stored
        .entries
        .iter()
        .find(|e| e.log_id.index == snap.index)
        .map(|e| e.log_id);
    if at_snapshot == Some(snap) {
        return Ok(stored);
    }
    tracing::warn!(
        snapshot = %snap,
        log_offset = %stored.log_offset,
        found = ?at_snapshot,
        "completing a snapshot installation interrupted by a crash: the log is replaced by the snapshot"
    );
    store.truncate(stored.log_offset.index + 1)?;
    store.purge(snap)?;
    store.sync()?;
    store.load()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MembershipConfig;
    use crate::storage::MemLogStore;
    use crate::types::{Entry, EntryPayload, LogId, SnapshotMeta};

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn meta(term: u64, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: MembershipConfig::default(),
        }
    }

    #[test]
    fn a_log_that_conflicts_with_the_recorded_snapshot_is_replaced_by_it_7() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2), e(1, 3), e(1, 4)]).unwrap();
        s.save_snapshot_meta(&meta(2, 3)).unwrap();
        s.sync().unwrap();
        let stored = s.load().unwrap();
        let fixed = complete_install(&mut s, stored).unwrap();
        assert_eq!(fixed.log_offset, LogId::new(2, 3));
        assert!(fixed.entries.is_empty());
        assert_eq!(s.crash_copy().load().unwrap(), fixed, "made durable");
    }

    #[test]
    fn a_log_that_ends_before_the_recorded_snapshot_is_replaced_by_it_7() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2)]).unwrap();
        s.save_snapshot_meta(&meta(3, 9)).unwrap();
        let stored = s.load().unwrap();
        let fixed = complete_install(&mut s, stored).unwrap();
        assert_eq!(fixed.log_offset, LogId::new(3, 9));
        assert!(fixed.entries.is_empty());
    }

    #[test]
    fn a_log_that_holds_the_snapshots_last_entry_is_kept() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(2, 2), e(2, 3)]).unwrap();
        s.save_snapshot_meta(&meta(2, 2)).unwrap();
        let stored = s.load().unwrap();
        assert_eq!(complete_install(&mut s, stored.clone()).unwrap(), stored);
    }
}
